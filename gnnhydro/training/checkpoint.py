"""Checkpoints of a run (``checkpoints/last.pt`` every epoch, ``checkpoints/best.pt``), written
atomically: a temporary file in the same folder, then ``os.replace``, so a process killed while
writing keeps the previous good file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gnnhydro.datasets.base import atomic_torch_save as atomic_save

__all__ = ["atomic_save", "save_checkpoint", "load_checkpoint", "load_weights", "best_checkpoint"]


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    """Everything an exact resume needs: weights, optimizer and scheduler state, epoch counters
    and both random number generators."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": state["epoch"],
        "best": state["best"],
        "bad_epochs": state["bad_epochs"],
        "numpy_rng": state["rng"].bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    atomic_save(payload, path)


def _read(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"checkpoint {path} cannot be read ({err}); it is damaged") from err


def load_weights(model: torch.nn.Module, path: Path) -> dict:
    """Load the weights of checkpoint ``path`` into ``model``; returns the checkpoint.

    Raises:
        ValueError: the file is unreadable, or its weights do not fit the model built from the
            config (another architecture or dataset).
    """
    payload = _read(path)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        raise ValueError(
            f"checkpoint {path} does not fit the model built from this configuration ({detail}); "
            "a run is resumed or evaluated with its own config.yaml"
        ) from err
    return payload


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore a run from ``save_checkpoint``'s file; returns the loop state."""
    payload = load_weights(model, path)
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    rng = np.random.default_rng()
    rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(payload["torch_rng"])
    return {
        "epoch": payload["epoch"],
        "best": payload["best"],
        "bad_epochs": payload["bad_epochs"],
        "rng": rng,
    }


def best_checkpoint(run_dir: str | Path) -> Path:
    """``checkpoints/best.pt`` of a run, else ``last.pt``; raises naming the run without one."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ckpt_dir / name).exists():
            return ckpt_dir / name
    raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoints/best.pt or last.pt)")
