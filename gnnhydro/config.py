"""Hydra configuration: where the config folder is, the default data root, how to compose the
configuration from Python, and the check of command-line overrides.

``compose(["dataset=drb", "trainer.epochs=5"])`` gives the same configuration as the command
line ``gnnhydro train dataset=drb trainer.epochs=5``.

The configuration ships inside the package (``gnnhydro/conf``), so an installed wheel has it.
The default data root is never inside the package or a checkout: ``$GNNHYDRO_DATA_ROOT`` when
set, else the platform's user data directory (``~/.local/share/gnnhydro`` on Linux,
``~/Library/Application Support/gnnhydro`` on macOS, ``%LOCALAPPDATA%\\gnnhydro`` on Windows).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "CONFIG_DIR",
    "GROUPS",
    "compose",
    "default_data_root",
    "check_overrides",
    "suggest",
    "group_options",
]

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
#: hydra config groups of the main configuration
GROUPS = ("dataset", "model", "parameterizer", "trainer", "experiment")
#: sections whose keys are fixed: ``+key=value`` there is a typo, not an extension
CLOSED_SECTIONS = ("trainer", "export", "")


def default_data_root() -> Path:
    """``$GNNHYDRO_DATA_ROOT``, else the platform's user data directory for gnnhydro."""
    env = os.environ.get("GNNHYDRO_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("gnnhydro", appauthor=False))


if not OmegaConf.has_resolver("gnnhydro_data_root"):
    OmegaConf.register_new_resolver("gnnhydro_data_root", lambda: str(default_data_root()))


def _check_config_dir() -> None:
    if not (CONFIG_DIR / "config.yaml").exists():
        raise FileNotFoundError(
            f"configuration folder not found at {CONFIG_DIR}: the gnnhydro installation is "
            "incomplete; reinstall it (pip install gnnhydro, or pip install -e . in a checkout)"
        )


#: config-group choices a dataset implies unless the command line makes them: your own data
#: (``dataset=generic``) gets the gauge-informed ``regional`` parameterizer
DATASET_DEFAULTS: dict[str, tuple[str, ...]] = {"generic": ("parameterizer=regional",)}


def with_dataset_defaults(overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus the choices :data:`DATASET_DEFAULTS` names for the chosen dataset,
    where neither the overrides nor an ``experiment=`` preset choose that group already."""
    out = list(overrides)
    keys = {o.lstrip("+~").split("=", 1)[0] for o in out if "=" in o}
    chosen = [o.split("=", 1)[1] for o in out if o.split("=", 1)[0] == "dataset"]
    if not chosen or "experiment" in keys:
        return out
    implied = [o for o in DATASET_DEFAULTS.get(chosen[-1], ()) if o.split("=", 1)[0] not in keys]
    return implied + out  # first: flags such as --cfg job stay where they are


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The main configuration with hydra ``overrides`` applied (no output directory is made).

    Raises:
        ValueError: an override names an unknown key or config-group option (with a suggestion).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    _check_config_dir()
    overrides = with_dataset_defaults(overrides)
    check_overrides(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return cfg


def suggest(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``candidates`` to ``name`` (or ``""``)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def group_options(group: str) -> list[str]:
    """The options of a config group (``dataset`` → ``["camels_us", "drb", ...]``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _parse(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise ValueError(f"cannot parse override: {str(err).splitlines()[0]}") from err


def _first_value(override) -> str | None:
    """The (first, for a sweep) choice of a group override as a string."""
    if override.is_sweep_override():
        values = list(override.sweep_string_iterator())
        return values[0] if values else None
    value = override.value()
    return None if value is None else str(value)


def check_overrides(overrides: Sequence[str]) -> None:
    """Check command-line overrides before hydra runs: every config group option exists,
    every key exists in the composed configuration (``+key`` adds a key only outside the fixed
    sections ``trainer``, ``export`` and the top level). Sweeps (``a=1,2``) are checked by their
    first value's configuration.

    Raises:
        ValueError: one line naming the bad override, with the closest valid name.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    parsed = _parse(overrides)
    choices = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.package:
            continue
        if key in GROUPS:
            options = group_options(key)
            values = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [_first_value(override)]
            )
            for value in values:
                if value not in options and not (key == "experiment" and value in (None, "null")):
                    raise ValueError(
                        f"{override.input_line}: no {key} config named {value!r}"
                        + suggest(value, options)
                        + f" (choose from {options})"
                    )
            if values[0] not in (None, "null"):
                choices.append(f"{key}={values[0]}")
    _check_config_dir()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            base = hydra_compose(config_name="config", overrides=choices)
    except HydraException as err:
        raise ValueError(str(err).splitlines()[0]) from err
    finally:
        GlobalHydra.instance().clear()
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or key in GROUPS or override.package:
            continue
        exists = OmegaConf.select(base, key, default="__missing__") != "__missing__"
        section, _, leaf = key.rpartition(".")
        if exists or override.is_delete():
            continue
        parent = OmegaConf.select(base, section) if section else base
        siblings = list(parent.keys()) if isinstance(parent, DictConfig) else []
        top = key.split(".", 1)[0] if "." in key else ""
        if override.is_add() or override.is_force_add():
            if top not in CLOSED_SECTIONS and isinstance(parent, DictConfig):
                continue  # an extension key (e.g. +model.runoff.options.betaet=true)
        prefix = f"{section}." if section else ""
        raise ValueError(
            f"{override.input_line}: unknown key {key!r}"
            + suggest(leaf, siblings, prefix=prefix)
            + (f" ({section or 'top level'} keys: {sorted(siblings)})" if siblings else "")
        )
