"""Hydra configuration: where the config folder is and how to compose it from Python.

``compose(["dataset=drb", "trainer.epochs=5"])`` gives the same configuration as the command
line ``gnnhydro train dataset=drb trainer.epochs=5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["REPO_ROOT", "CONFIG_DIR", "compose"]

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"

if not OmegaConf.has_resolver("gnnhydro_root"):
    OmegaConf.register_new_resolver("gnnhydro_root", lambda: str(REPO_ROOT))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The main configuration with hydra ``overrides`` applied (no output directory is made)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not (CONFIG_DIR / "config.yaml").exists():
        raise FileNotFoundError(
            f"configuration folder not found at {CONFIG_DIR}; install from a checkout with `pip install -e .`"
        )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return cfg
