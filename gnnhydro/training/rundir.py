"""Run-directory rules: a new run never lands on top of an old one, a resumed run keeps its own
configuration, and nothing is written before the data and the config have passed validation.

- A new run into a non-empty ``run_dir`` is refused unless ``trainer.resume=true`` (continue it)
  or ``overwrite=true`` (replace it: the old run's files are removed once validation passed).
- ``trainer.resume=true`` reads the run's own ``config.yaml``; overrides on the command line
  apply on top of it (e.g. ``trainer.epochs=30`` to train longer), config-group choices that
  differ from the run's (``dataset=drb`` on a synthetic run) are refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gnnhydro.config import GROUPS

__all__ = ["check_run_dir", "clear_run_dir", "resume_config", "is_run_dir"]

#: how each group's choice is recorded in a saved config
_CHOICE_KEYS = {"dataset": "name", "parameterizer": "name"}


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a gnnhydro run (its ``config.yaml``)."""
    return (Path(path) / "config.yaml").is_file()


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def check_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a run directory that would mix runs; writes nothing.

    Raises:
        ValueError: ``run_dir`` is a file; it is not empty and neither ``resume`` nor
            ``overwrite`` is set; ``overwrite`` is set but it holds files that are not a run's;
            ``resume`` is set and there is no run to resume.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir={run_dir} is a file, not a directory")
    entries = _entries(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise ValueError(
                f"trainer.resume=true: {run_dir} holds no run to resume (no config.yaml)"
            )
        return
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(
            f"run_dir={run_dir} is not empty ({shown}): choose a new run_dir, continue that run "
            "with trainer.resume=true, or replace it with overwrite=true"
        )
    if not is_run_dir(run_dir):
        raise ValueError(
            f"overwrite=true: {run_dir} holds files but no gnnhydro run (no config.yaml); "
            "nothing was removed — choose another run_dir"
        )


def clear_run_dir(run_dir: str | Path) -> None:
    """Remove an old run's files from ``run_dir`` (after :func:`check_run_dir` allowed it)."""
    run_dir = Path(run_dir)
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def resume_config(
    run_dir: str | Path, composed: DictConfig, overrides: Sequence[str]
) -> DictConfig:
    """The configuration of a resumed run: its own ``config.yaml``, with the values of the
    command-line ``overrides`` (as ``composed`` resolved them) set on top.

    Args:
        run_dir: the run to resume.
        composed: the configuration hydra composed from the defaults and ``overrides``.
        overrides: the command-line overrides (``key=value``, ``+key=value``, ``group=choice``).

    Raises:
        ValueError: no run in ``run_dir``, or an override picks another config group choice than
            the run was trained with, or names a key the run's configuration does not have.
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise ValueError(f"trainer.resume=true: {run_dir} holds no run to resume (no config.yaml)")
    saved = OmegaConf.load(run_dir / "config.yaml")
    OmegaConf.set_struct(saved, False)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in ("run_dir", "trainer.resume", "hydra") or key.startswith("hydra."):
            continue
        if key in GROUPS:
            choice = override.split("=", 1)[1]
            recorded = _CHOICE_KEYS.get(key)
            if recorded is None or OmegaConf.select(saved, f"{key}.{recorded}") != choice:
                raise ValueError(
                    f"{override}: a resumed run keeps the configuration it was trained with "
                    f"({run_dir / 'config.yaml'}); override single keys (e.g. trainer.epochs=30) "
                    "or start a new run"
                )
            continue
        if OmegaConf.select(saved, key, default="__missing__") == "__missing__":
            raise ValueError(f"{override}: the run's config.yaml has no key {key!r}")
        OmegaConf.update(saved, key, OmegaConf.select(composed, key), force_add=False)
    saved.trainer.resume = True
    return saved
