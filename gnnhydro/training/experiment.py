"""The experiment: the one place that reads the dataset, period and split configuration and
builds the data and the model from it.

:class:`Experiment` holds the resolved config, the graph (one graph for the whole dataset), the
periods as time indices, the gauge split (training vs held-out gauges) and builds the
:class:`~gnnhydro.models.HydroModel` (or ensemble) that the trainer, evaluation and prediction use.
"""

from __future__ import annotations

import inspect
import logging
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import gnnhydro
from gnnhydro.datasets.base import attribute_statistics
from gnnhydro.datasets.splits import GaugeSplit, cv_folds, spatial_holdout, split_from_gauges
from gnnhydro.training.gauge_context import attach_gauge_context, gauge_table, needs_gauge_context
from gnnhydro.training.model import (  # noqa: F401 - re-exported
    ModelInputs,
    _forcing_names,
    _plain,
    build_model,
)

log = logging.getLogger("gnnhydro")

__all__ = [
    "Experiment",
    "ModelInputs",
    "build_dataset",
    "build_model",
    "make_gauge_split",
    "as_single_graph",
    "provenance",
    "seed_everything",
    "resolve_device",
]

NON_CONSTRUCTOR_KEYS = {"name", "periods", "warmup_days", "holdout", "min_obs_days"}


# ============================================================================ setup helpers
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally switch torch to deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def provenance(command: str | None = None, **extra: Any) -> dict[str, Any]:
    """Package version, git commit (when run from a checkout), versions, the full command line
    and the start time; ``extra`` entries (data root, assumptions made, ...) are added as given."""
    root = Path(gnnhydro.__file__).resolve().parents[1]
    commit = None
    if (root / ".git").exists():
        try:
            commit = (
                subprocess.run(
                    ["git", "-C", str(root), "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                or None
            )
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {
        "gnnhydro_version": gnnhydro.__version__,
        "git_commit": commit,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "command": command if command is not None else shlex.join(sys.argv),
        "working_directory": str(Path.cwd()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def build_dataset(dataset_cfg: DictConfig) -> Any:
    """Instantiate the dataset named by ``dataset_cfg._target_`` with its constructor keys.

    Errors of the dataset itself (bad files, bad ids) reach the caller as they are, not wrapped
    in hydra's "Error in call to target"; an unknown constructor key is a ``ValueError`` naming it.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import get_class

    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(dataset_cfg, resolve=True).items()
        if k not in NON_CONSTRUCTOR_KEYS
    }
    target = kwargs.pop("_target_", None)
    if not target:
        raise ValueError("dataset config has no _target_ (the dataset class to build)")
    try:
        cls = get_class(target)
    except (ImportError, InstantiationException, ValueError) as err:
        raise ValueError(f"dataset._target_={target!r} is not an importable class") from err
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            from gnnhydro.config import suggest

            raise ValueError(
                f"unknown key(s) {['dataset.' + k for k in unknown]} for {cls.__name__}"
                + suggest(unknown[0], [*accepted, *NON_CONSTRUCTOR_KEYS], prefix="dataset.")
            )
    return cls(**kwargs)


def as_single_graph(dataset: Any) -> Any:
    """One graph for the whole dataset: the item itself, or a disjoint union (lumped basins)."""
    from torch_geometric.data import Batch

    if len(dataset) == 1:
        return dataset[0]
    items = [dataset[i] for i in range(len(dataset))]
    batch = Batch.from_data_list(items)
    # carry the shared metadata of the first item
    for key in ("time", "forcing_names", "forcing_units", "x_names", "x_units", "step_seconds"):
        value = getattr(items[0], key, None)
        if value is not None:
            batch[key] = value
    batch.gauge_id = [g for it in items for g in getattr(it, "gauge_id", [])]
    batch.node_id = [n for it in items for n in it.node_id]
    return batch


def _time_index(time_axis: np.ndarray, period: Any, *, name: str) -> tuple[int, int]:
    """``[start, stop)`` indices of a ``[start_date, end_date]`` period on the time axis (an end
    given as a date includes the whole day)."""
    t = pd.DatetimeIndex(time_axis)
    start, end = pd.Timestamp(period[0]), pd.Timestamp(period[1])
    if start > t[-1] or end < t[0]:
        raise ValueError(
            f"period {name} {period[0]}..{period[1]} lies outside the data ({t[0].date()}..{t[-1].date()})"
        )
    i0 = int(t.searchsorted(start, side="left"))
    if len(str(period[1]).strip()) <= 10:  # a date: the whole day (hourly data included)
        end = end + pd.Timedelta(days=1) - pd.Timedelta(nanoseconds=1)
    i1 = int(t.searchsorted(end, side="right"))
    if i1 <= i0:
        raise ValueError(f"period {name} {period[0]}..{period[1]} contains no time steps")
    return i0, i1


# ============================================================================ splits
def make_gauge_split(graph: Any, holdout_cfg: DictConfig | dict) -> GaugeSplit:
    """Training vs held-out (ungauged) gauges, from the ``dataset.holdout`` config:

    - ``gauge_ids``: explicit ids, or ``from_dataset`` to use the dataset's own suggestion
      (``graph.holdout_gauge_ids``) when it has one;
    - ``k`` and ``fold``: k-fold cross-validation over gauges (run ``fold=0..k-1``, e.g. with
      ``gnnhydro cv``): ``strategy`` ``random`` or ``regional`` (spatially clustered folds),
      ``downstream_closed`` (gauges downstream of a held-out gauge are left out of training in
      that fold; see :func:`~gnnhydro.datasets.splits.cv_folds`);
    - otherwise ``fraction`` of the gauges at random (``seed``; ``downstream_closed`` to hold out
      each chosen gauge with all gauges downstream of it); 0 holds out none.

    See :mod:`gnnhydro.datasets.splits` for the node sets (held-out gauges' exclusive areas).
    """
    gauge_index, gauge_ids = graph.gauge_index.long(), [str(g) for g in graph.gauge_id]
    if gauge_index.numel() == 0:
        raise ValueError("the dataset has no gauges (no observed discharge): nothing to train on")
    chosen = holdout_cfg.get("gauge_ids")
    if chosen == "from_dataset":
        chosen = getattr(graph, "holdout_gauge_ids", None)
    if chosen:
        chosen = [str(c) for c in chosen]
        unknown = sorted(set(chosen) - set(gauge_ids))
        if unknown:
            raise ValueError(f"held-out gauge ids not among the dataset's gauges: {unknown}")
        positions = torch.tensor(
            [k for k, g in enumerate(gauge_ids) if g in set(chosen)], dtype=torch.long
        )
        split = split_from_gauges(graph, positions)
    elif holdout_cfg.get("k"):
        folds = cv_folds(
            graph,
            int(holdout_cfg["k"]),
            int(holdout_cfg.get("seed", 0)),
            strategy=str(holdout_cfg.get("strategy", "random") or "random"),
            downstream_closed=bool(holdout_cfg.get("downstream_closed", False)),
        )
        fold = int(holdout_cfg.get("fold", 0))
        if not 0 <= fold < len(folds):
            raise ValueError(f"holdout.fold must be in 0..{len(folds) - 1}, got {fold}")
        split = folds[fold]
    elif float(holdout_cfg.get("fraction", 0.0) or 0.0) > 0 and gauge_index.numel() > 1:
        split = spatial_holdout(
            graph,
            float(holdout_cfg["fraction"]),
            int(holdout_cfg.get("seed", 0)),
            downstream_closed=bool(holdout_cfg.get("downstream_closed", False)),
        )
    else:
        split = split_from_gauges(graph, torch.zeros(0, dtype=torch.long))
    if split.train_index.numel() == 0:
        raise ValueError("every gauge is held out: lower dataset.holdout.fraction")
    return split


# ============================================================================ experiment
class Experiment:
    """Everything a run needs: config, run directory, graph, periods, gauge split, model."""

    def __init__(self, cfg: DictConfig, run_dir: Path, *, graph: Any | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.get("device", "auto"))
        self.dataset = build_dataset(cfg.dataset) if graph is None else None
        self.graph = graph if graph is not None else as_single_graph(self.dataset)
        #: lazy forcing (e.g. ``GenericRiverDataset(lazy=True)``): read per window from the files
        self.reader = None
        if getattr(self.graph, "forcing", None) is None and self.dataset is not None:
            if getattr(self.dataset, "lazy", False) and len(self.dataset) == 1:
                self.reader = self.dataset.reader
        self._check_graph()
        self.time = np.asarray(self.graph.time)
        self.step_seconds = float(getattr(self.graph, "step_seconds", 86400.0))
        self.warmup = int(
            round(float(cfg.dataset.get("warmup_days", 0)) * 86400.0 / self.step_seconds)
        )
        self.periods = self._periods()
        self.split = make_gauge_split(self.graph, cfg.dataset.get("holdout") or {})
        n = self.graph.num_nodes
        self.graph.train_gauge_mask = torch.zeros(n, dtype=torch.bool)
        self.graph.train_gauge_mask[self.split.train_index] = True
        self.graph.holdout_gauge_mask = torch.zeros(n, dtype=torch.bool)
        self.graph.holdout_gauge_mask[self.split.holdout_index] = True
        # observed fluxes/states outside the held-out gauges' areas may train the model
        self.graph.constraint_train_mask = ~self.split.holdout_exclusive.cpu()
        self.gauge_names = dict(
            zip(self.graph.gauge_index.tolist(), [str(g) for g in self.graph.gauge_id], strict=True)
        )
        #: the training gauges' signatures (parameterizers that read them), training period only
        self.gauge_table = None
        if needs_gauge_context(str(cfg.parameterizer.name)):
            self.gauge_table = self._gauge_table()
            attach_gauge_context(
                self.graph, self.gauge_table, donors=int(cfg.parameterizer.get("donors", 4))
            )

    def _gauge_table(self) -> Any:
        """Signatures of the training gauges from their observations in the training period."""
        t0, t1 = self.periods["train"]
        gauges = self.split.train_index
        if self.reader is not None:
            discharge = self.reader.read_discharge(t0, t1, nodes=gauges)
            precipitation = (
                self.reader.read_variable("precipitation", t0, t1)
                if "precipitation" in self.reader.forcing_names
                else None
            )
        else:
            discharge = self.graph.q_obs[gauges, t0:t1]
            names = _forcing_names(self.graph)
            forcing = getattr(self.graph, "forcing", None)
            precipitation = (
                forcing[:, t0:t1, names.index("precipitation")]
                if forcing is not None and "precipitation" in names
                else None
            )
        return gauge_table(
            self.graph,
            gauges,
            discharge,
            self.time[t0:t1],
            precipitation,
            min_days=min(180, max((t1 - t0) // 2, 2)),
        )

    def _check_graph(self) -> None:
        g = self.graph
        needed = (
            ("x", "gauge_index", "time") if self.reader else ("x", "q_obs", "gauge_index", "time")
        )
        for key in needed:
            if getattr(g, key, None) is None:
                raise ValueError(f"dataset item lacks {key!r}: it cannot be used for training")
        if self.reader is not None:
            return  # forcing and observations are checked as the lazy reader is opened
        if self.cfg.model.mode in ("full", "runoff") and getattr(g, "forcing", None) is None:
            raise ValueError(
                f"model mode {self.cfg.model.mode!r} needs forcing; the dataset has none (use model=routing_only)"
            )
        if self.cfg.model.mode == "routing" and getattr(g, "lateral_inflow", None) is None:
            raise ValueError("model mode 'routing' needs lateral_inflow; the dataset has none")
        if not torch.isfinite(g.x).all():
            bad = (~torch.isfinite(g.x)).nonzero()
            names = list(getattr(g, "x_names", []) or [])
            cols = sorted({names[j] if j < len(names) else str(j) for j in bad[:, 1].tolist()})
            nodes = sorted({str(g.node_id[i]) for i in bad[:, 0].tolist()})[:20]
            raise ValueError(f"static attributes {cols} are NaN/inf at ids {nodes}")
        if getattr(g, "forcing", None) is not None and not torch.isfinite(g.forcing).all():
            bad = (~torch.isfinite(g.forcing)).nonzero()
            names = _forcing_names(g)
            var = names[int(bad[0, 2])] if names else int(bad[0, 2])
            raise ValueError(
                f"forcing {var!r} is NaN/inf at ids {sorted({str(g.node_id[i]) for i in bad[:, 0].tolist()})[:20]}, "
                f"first at time index {int(bad[:, 1].min())}"
            )

    def _periods(self) -> dict[str, tuple[int, int]]:
        pcfg = self.cfg.dataset.get("periods") or {}
        T = len(self.time)
        out: dict[str, tuple[int, int]] = {}
        for name in ("train", "validation", "test"):
            period = pcfg.get(name) if pcfg else None
            if period:
                out[name] = _time_index(self.time, period, name=name)
        self.automatic_periods = "train" not in out
        if self.automatic_periods:  # no dates: 60 % / 15 % / 25 % of the record after warm-up
            a = self.warmup + int(0.6 * (T - self.warmup))
            b = a + int(0.15 * (T - self.warmup))
            out = {"train": (0, a), "validation": (a, b), "test": (b, T)}
            out = {k: v for k, v in out.items() if v[1] > v[0]}
        return out

    def window(self, start: int, stop: int) -> Any:
        """The graph over time steps ``[start, stop)`` with its forcing and observations (read
        from the files for that span only when the data are lazy)."""
        from gnnhydro.datasets.windows import slice_time

        out = slice_time(self.graph, start, stop)
        if self.reader is not None:
            out = self.reader.fill(out, int(out.time_offset), int(out.time_offset) + stop - start)
        return out

    def whole_record(self) -> Any:
        """The graph over the whole record, forcing and observations included."""
        if self.reader is None:
            return self.graph
        return self.window(0, len(self.time))

    def attribute_stats(self) -> tuple[Tensor, Tensor]:
        """Normalisation statistics over training nodes (cached with the processed data)."""
        train_nodes = ~self.split.holdout_exclusive
        if self.dataset is not None and hasattr(self.dataset, "attribute_stats"):
            return self.dataset.attribute_stats(train_nodes)
        return attribute_statistics(self.graph.x[train_nodes])

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.cfg, self.graph, self.split, self.attribute_stats())
        return model.to(self.device)

    def assumptions(self) -> dict[str, str]:
        """Forcing the runoff model runs without, and what that means (e.g. no temperature: no
        snow), from the model config and the dataset's forcing names."""
        if not self.cfg.model.get("runoff") or self.cfg.model.mode == "routing":
            return {}
        from gnnhydro.runoff import get_runoff_model

        optional = getattr(get_runoff_model(self.cfg.model.runoff.name), "optional_forcing", {})
        have = set(_forcing_names(self.graph))
        return {name: meaning for name, (_, meaning) in optional.items() if name not in have}

    def dates(self, start: int, stop: int) -> tuple[str, str]:
        """The first and last time step of ``[start, stop)`` as ISO dates (``YYYY-MM-DD``, or
        with the hour for sub-daily data)."""
        fmt = "%Y-%m-%d" if self.step_seconds >= 86400 else "%Y-%m-%d %H:%M"
        t = pd.DatetimeIndex(self.time)
        return t[start].strftime(fmt), t[stop - 1].strftime(fmt)

    def period_dates(self) -> dict[str, tuple[str, str]]:
        """Each period's first and last time step as ISO dates."""
        return {name: self.dates(i0, i1) for name, (i0, i1) in self.periods.items()}

    def describe(self) -> str:
        """What the run is about to do, for the start of ``train``: nodes, gauges, periods,
        device and threads, run directory."""
        g = self.graph
        dates = self.period_dates()
        how = " (automatic split: 60/15/25 % of the record after the warm-up)" * bool(
            self.automatic_periods
        )
        lines = [
            f"data: {g.num_nodes} nodes, {g.edge_index.size(1)} edges, "
            f"{g.gauge_index.numel()} gauges ({self.split.train_index.numel()} trained, "
            f"{self.split.holdout_index.numel()} held out as ungauged), "
            f"{len(self.time)} time steps of {self.step_seconds / 3600:g} h",
            "periods"
            + how
            + ": "
            + ", ".join(f"{k} {a}..{b}" for k, (a, b) in dates.items())
            + f"; warm-up {self.warmup} steps",
            f"device: {self.device}, torch threads: {torch.get_num_threads()}",
            f"run directory: {self.run_dir}",
        ]
        lines += [f"assumption: no {k}: {v}" for k, v in self.assumptions().items()]
        return "\n".join(lines)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a device that
    is not there or not known raises a ``ValueError`` saying so."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name}: no CUDA device is available (torch {torch.__version__}); "
                "use device=cpu or device=auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return device
    raise ValueError(f"device={name!r} is not known; choose auto, cpu, cuda or cuda:N")
