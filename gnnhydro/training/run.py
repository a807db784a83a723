"""Training, evaluation, prediction and export of regionalization runs (the CLI's main jobs).

A run directory holds: ``config.yaml`` (resolved), ``provenance.json`` (package version, git
commit, torch version, command), ``checkpoints/`` (``last.pt`` every epoch, ``best.pt``),
``train_log.csv``, ``metrics.csv`` (one row per gauge and split), ``parameters.gpkg``,
``discharge.nc`` and ``plots/``.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

import gnnhydro
from gnnhydro.datasets.base import attribute_statistics
from gnnhydro.datasets.splits import GaugeSplit, k_fold_gauges, spatial_holdout, split_from_gauges
from gnnhydro.datasets.windows import slice_time
from gnnhydro.models.ensemble import HydroEnsemble

log = logging.getLogger("gnnhydro")

__all__ = ["train", "evaluate", "predict", "export_run", "load_run", "Experiment"]

NON_CONSTRUCTOR_KEYS = {"name", "periods", "warmup_days", "holdout", "min_obs_days"}


# ============================================================================ setup helpers
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally switch torch to deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def provenance() -> dict[str, Any]:
    """Package version, git commit (when run from a checkout), versions and the command line."""
    root = Path(gnnhydro.__file__).resolve().parents[1]
    commit = None
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
    except Exception:
        commit = None
    return {
        "gnnhydro_version": gnnhydro.__version__,
        "git_commit": commit,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def build_dataset(dataset_cfg: DictConfig) -> Any:
    """Instantiate the dataset named by ``dataset_cfg._target_`` with its constructor keys."""
    from hydra.utils import instantiate

    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(dataset_cfg, resolve=True).items()
        if k not in NON_CONSTRUCTOR_KEYS
    }
    return instantiate(kwargs)


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
    - ``k`` and ``fold``: k-fold cross-validation over gauges (run ``fold=0..k-1``, e.g. as a
      multirun sweep);
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
        folds = k_fold_gauges(graph, int(holdout_cfg["k"]), int(holdout_cfg.get("seed", 0)))
        fold = int(holdout_cfg.get("fold", 0))
        if not 0 <= fold < len(folds):
            raise ValueError(f"holdout.fold must be in 0..{len(folds) - 1}, got {fold}")
        split = folds[fold]
    elif float(holdout_cfg.get("fraction", 0.0) or 0.0) > 0 and gauge_index.numel() > 1:
        split = spatial_holdout(
            graph, float(holdout_cfg["fraction"]), int(holdout_cfg.get("seed", 0))
        )
    else:
        split = split_from_gauges(graph, torch.zeros(0, dtype=torch.long))
    if split.train_index.numel() == 0:
        raise ValueError("every gauge is held out: lower dataset.holdout.fraction")
    return split


# ============================================================================ model
def build_model(
    cfg: DictConfig,
    graph: Any,
    split: GaugeSplit,
    attribute_stats: tuple[Tensor, Tensor] | None = None,
) -> torch.nn.Module:
    """Runoff model, IRF and parameterizer from the config; attribute normalisation fitted on
    training nodes only (every node outside the held-out gauges' exclusive areas), taken from
    the dataset's cached ``attribute_stats`` when a dataset is given."""
    from gnnhydro.models import HydroModel
    from gnnhydro.nn import build_parameterizer, get_parameterizer

    model_cfg = cfg.model
    mode = model_cfg.mode
    runoff = None
    runoff_specs: dict = {}
    nmul = None
    dynamic: list[str] = []
    if model_cfg.get("runoff"):
        from gnnhydro.runoff import get_runoff_model

        rcfg = model_cfg.runoff
        options = _plain(rcfg.get("options") or {})
        nmul = int(rcfg.get("nmul", 1))
        dynamic = list(rcfg.get("dynamic") or [])
        runoff_cls = get_runoff_model(rcfg.name)
        if dynamic:
            if "dynamic" not in inspect.signature(runoff_cls).parameters:
                raise ValueError(
                    f"model.runoff.dynamic={dynamic}: runoff model {rcfg.name!r} has no "
                    "time-varying parameters"
                )
            options["dynamic"] = dynamic
        runoff = runoff_cls(nmul=nmul, **options)
        if rcfg.get("gradient"):
            runoff.gradient = rcfg.gradient
        runoff_specs = dict(runoff.param_spec)
    forcing_correction = None
    if model_cfg.get("forcing_correction"):
        from gnnhydro.models import ForcingCorrection

        if runoff is None:
            raise ValueError(
                "model.forcing_correction needs a runoff model (model.runoff is not set)"
            )
        forcing_correction = ForcingCorrection(_plain(model_cfg.forcing_correction))
        missing = sorted(set(forcing_correction.variables) - set(runoff.forcing_names))
        if missing:
            raise ValueError(
                f"model.forcing_correction: {missing} is not a forcing of runoff model "
                f"{model_cfg.runoff.name!r} (it reads {list(runoff.forcing_names)})"
            )
    irf = model_cfg.routing.irf if model_cfg.get("routing") else None
    routing_specs = HydroModel.routing_specs(irf) if mode != "runoff" else {}
    x = graph.x.float()
    mean, std = (
        attribute_stats
        if attribute_stats is not None
        else attribute_statistics(x[~split.holdout_exclusive])
    )
    pcfg = OmegaConf.to_container(cfg.parameterizer, resolve=True)
    name = pcfg.pop("name")
    specs = {}
    if runoff_specs:  # one group per shape: per component [N, nmul] and per node [N]
        per_node = {k: v for k, v in runoff_specs.items() if runoff.values_per_node(k) is None}
        per_component = {k: v for k, v in runoff_specs.items() if k not in per_node}
        if per_component:
            specs["runoff"] = (per_component, nmul)
        if per_node:
            specs["runoff_node"] = (per_node, None)
    if forcing_correction is not None:
        specs["forcing"] = (dict(forcing_correction.param_spec), None)
    if routing_specs:
        specs["routing"] = (routing_specs, None)
    size = int(model_cfg.get("ensemble", 1) or 1)
    if size < 1:
        raise ValueError(f"model.ensemble must be at least 1, got {size}")
    members = []
    for _ in range(size):  # the global RNG advances: every member starts from its own weights
        parameterizer = build_parameterizer(
            name,
            in_channels=x.size(1),
            specs=specs,
            dynamic=set(dynamic),
            dynamic_channels=len(_forcing_names(graph)) if dynamic else None,
            edge_dim=_edge_dim(graph) if get_parameterizer(name).supports_edge_attr else None,
            **pcfg,
        )
        members.append(
            _hydro_model(
                model_cfg,
                graph,
                parameterizer,
                runoff,
                irf,
                mean,
                std,
                bool(dynamic),
                forcing_correction,
            )
        )
    return members[0] if size == 1 else HydroEnsemble(members)


def _hydro_model(
    model_cfg: DictConfig,
    graph: Any,
    parameterizer: torch.nn.Module,
    runoff: torch.nn.Module | None,
    irf: str | None,
    mean: Tensor,
    std: Tensor,
    dynamic: bool,
    forcing_correction: torch.nn.Module | None = None,
) -> torch.nn.Module:
    from gnnhydro.models import HydroModel

    mode = model_cfg.mode
    return HydroModel(
        parameterizer,
        runoff,
        irf,
        mode=mode,
        substeps=int(model_cfg.routing.get("substeps", 1)) if model_cfg.get("routing") else 1,
        x_mean=mean,
        x_std=std,
        x_names=list(graph.x_names) if getattr(graph, "x_names", None) else None,
        dynamic_names=_forcing_names(graph) if dynamic else (),
        initial_discharge_from=(
            model_cfg.routing.get("initial_discharge_from") if model_cfg.get("routing") else None
        ),
        spinup_cycles=int(model_cfg.get("spinup_cycles", 1) or 1),
        forcing_correction=forcing_correction,
        spinup_steps=int(
            round(
                float(model_cfg.get("spinup_days", 0) or 0)
                * 86400.0
                / float(getattr(graph, "step_seconds", 86400.0))
            )
        ),
    )


def _plain(value: Any) -> Any:
    """A plain python container from a config node (or the value itself)."""
    return (
        OmegaConf.to_container(value, resolve=True)
        if isinstance(value, DictConfig | ListConfig)
        else value
    )


def _forcing_names(graph: Any) -> list[str]:
    names = getattr(graph, "forcing_names", None) or []
    return list(names[0] if names and isinstance(names[0], list) else names)


def _edge_dim(graph: Any) -> int | None:
    n = int(getattr(graph, "length_m", None) is not None) + int(
        getattr(graph, "slope", None) is not None
    )
    return n or None


# ============================================================================ experiment
class Experiment:
    """Everything a run needs: config, run directory, graph, periods, gauge split, model."""

    def __init__(self, cfg: DictConfig, run_dir: Path, *, graph: Any | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = _device(cfg.get("device", "auto"))
        self.dataset = build_dataset(cfg.dataset) if graph is None else None
        self.graph = graph if graph is not None else as_single_graph(self.dataset)
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
        self.gauge_names = dict(
            zip(self.graph.gauge_index.tolist(), [str(g) for g in self.graph.gauge_id], strict=True)
        )

    def _check_graph(self) -> None:
        g = self.graph
        for key in ("x", "q_obs", "gauge_index", "time"):
            if getattr(g, key, None) is None:
                raise ValueError(f"dataset item lacks {key!r}: it cannot be used for training")
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
        if "train" not in out:  # no dates given: 60 % / 15 % / 25 % of the record, after warm-up
            a = self.warmup + int(0.6 * (T - self.warmup))
            b = a + int(0.15 * (T - self.warmup))
            out = {"train": (0, a), "validation": (a, b), "test": (b, T)}
            out = {k: v for k, v in out.items() if v[1] > v[0]}
        return out

    def attribute_stats(self) -> tuple[Tensor, Tensor]:
        """Normalisation statistics over training nodes (cached with the processed data)."""
        train_nodes = ~self.split.holdout_exclusive
        if self.dataset is not None and hasattr(self.dataset, "attribute_stats"):
            return self.dataset.attribute_stats(train_nodes)
        return attribute_statistics(self.graph.x[train_nodes])

    def build_model(self) -> torch.nn.Module:
        return build_model(self.cfg, self.graph, self.split, self.attribute_stats()).to(self.device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ============================================================================ training loop
def _loss_fn(cfg: DictConfig):
    from gnnhydro.training.losses import build_loss

    return build_loss(_plain(cfg.trainer.loss))


def _windows(
    exp: Experiment, rng: np.random.Generator, batch_size: int
) -> list[tuple[int, int, int]]:
    """Random training windows ``(start, stop, warmup)`` inside the training period. The warm-up
    may reach back before the period's start (forcing only; losses skip it) but never before the
    record's start, so every window has the same warm-up length."""
    t0, t1 = exp.periods["train"]
    window = int(round(float(exp.cfg.trainer.window_days) * 86400.0 / exp.step_seconds))
    first = max(t0, exp.warmup)
    window = max(1, min(window, t1 - first))
    if t1 - first < 1:
        raise ValueError(
            f"training period ({t1 - t0} steps) leaves no step after the {exp.warmup}-step warm-up at the "
            "start of the record: lengthen it or lower dataset.warmup_days"
        )
    out = []
    for _ in range(batch_size):
        start = int(rng.integers(first, t1 - window + 1))
        out.append((start - exp.warmup, start + window, exp.warmup))
    return out


def _batch(exp: Experiment, windows: list[tuple[int, int, int]]) -> tuple[Any, int]:
    """Disjoint union of window copies; windows share one warm-up length (the shortest)."""
    from torch_geometric.data import Batch

    warm = min(w for _, _, w in windows)
    length = min(stop - start - (w - warm) for start, stop, w in windows)
    items = [
        slice_time(exp.graph, start + (w - warm), start + (w - warm) + length)
        for start, _, w in windows
    ]
    if len(items) == 1:
        return items[0], warm
    return Batch.from_data_list(items), warm


def _masked_loss(loss_fn, out: dict, batch: Any, warmup: int, mask_name: str) -> Tensor:
    """Loss at the gauges of ``mask_name``; for an ensemble the mean of the members' own
    losses (each member is trained on its own error, not on the error of the mean)."""
    mask = getattr(batch, mask_name)
    losses = []
    for member in HydroEnsemble.member_outputs(out):
        sim = member["discharge"][mask]
        obs = batch.q_obs[mask].to(sim.dtype)
        losses.append(loss_fn(simulation=sim, observation=obs, warmup_steps=warmup))
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def _clip_gradients(module: torch.nn.Module, max_norm: float) -> None:
    """Clip the gradient norm of every ensemble member separately (of the model if single)."""
    for part in getattr(module, "members", [module]):
        torch.nn.utils.clip_grad_norm_(part.parameters(), max_norm)


def _forward_period(exp: Experiment, model: torch.nn.Module, period: str) -> tuple[dict, Any, int]:
    """Run the model over a whole period, with the warm-up taken from the record before it."""
    p0, p1 = exp.periods[period]
    w0 = max(0, p0 - exp.warmup)
    g = slice_time(exp.graph, w0, p1)
    return model(g.to(exp.device)), g, p0 - w0


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; initialises ``torch.distributed`` from the ``torchrun`` environment
    (``WORLD_SIZE`` > 1) with NCCL on CUDA and gloo on CPU."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def train(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Train a regionalization model; write checkpoints, logs, metrics and exports to ``run_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel (DDP): every rank draws the
    same random windows and takes its share (``windows[rank::world]``), gradients are averaged,
    and rank 0 alone writes checkpoints, logs and outputs — the same updates as one process with
    the whole batch when ``trainer.batch_size`` is a multiple of the world size.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank, world = distributed_context()
    seed_everything(int(cfg.seed), bool(cfg.get("deterministic", False)))
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    exp = Experiment(cfg, run_dir)  # validates the data before anything is written
    if world > 1 and torch.cuda.is_available():
        exp.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    if int(cfg.trainer.batch_size) % world:
        raise ValueError(
            f"trainer.batch_size={cfg.trainer.batch_size} is not a multiple of the {world} processes"
        )
    is_main = rank == 0
    if is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        (run_dir / "provenance.json").write_text(json.dumps(provenance(), indent=2))
        _save_split(exp)
    model = exp.build_model()
    module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[exp.device.index] if exp.device.type == "cuda" else None
        )
    tcfg = cfg.trainer
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if tcfg.optimizer not in opt_cls:
        raise ValueError(
            f"trainer.optimizer must be one of {sorted(opt_cls)}, got {tcfg.optimizer!r}"
        )
    optimizer = opt_cls[tcfg.optimizer](
        model.parameters(), lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay)
    )
    epochs = int(tcfg.epochs)
    scheduler = None
    if tcfg.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    elif tcfg.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(epochs // 3, 1), gamma=0.3
        )
    loss_fn = _loss_fn(cfg)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    state = {
        "epoch": 0,
        "best": math.inf,
        "bad_epochs": 0,
        "rng": np.random.default_rng(int(cfg.seed)),
    }
    if tcfg.get("resume") and (ckpt_dir / "last.pt").exists():
        state = _load_checkpoint(ckpt_dir / "last.pt", module, optimizer, scheduler)
        log.info("resumed from epoch %d", state["epoch"])
    writer = _tensorboard(run_dir) if is_main else None
    log_path = run_dir / "train_log.csv"
    if is_main and (state["epoch"] == 0 or not log_path.exists()):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["epoch", "train_loss", "validation_loss", "lr", "seconds"])
    from tqdm.auto import tqdm

    has_val = "validation" in exp.periods
    for epoch in range(state["epoch"], epochs):
        if state["bad_epochs"] >= int(tcfg.early_stopping_patience) > 0:
            log.info("early stopping at epoch %d", epoch)
            break
        model.train()
        t_start = time.perf_counter()
        losses = []
        bar = tqdm(
            range(int(tcfg.steps_per_epoch)),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not tcfg.get("progress_bar", True) or not is_main,
            leave=False,
        )
        for _ in bar:
            windows = _windows(exp, state["rng"], int(tcfg.batch_size))[rank::world]
            batch, warm = _batch(exp, windows)
            out = model(batch.to(exp.device))
            loss = _masked_loss(loss_fn, out, batch, warm, "train_gauge_mask")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.get("clip_grad_norm"):
                _clip_gradients(module, float(tcfg.clip_grad_norm))
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if scheduler is not None:
            scheduler.step()
        train_loss = float(np.mean(losses)) if losses else math.nan
        val_loss = math.nan
        if has_val:
            model.eval()
            with torch.no_grad():
                out, g, warm = _forward_period(exp, module, "validation")
                val_loss = _masked_loss(loss_fn, out, g, warm, "train_gauge_mask").item()
        monitored = val_loss if has_val else train_loss
        improved = monitored < state["best"]
        if improved:
            state["best"], state["bad_epochs"] = monitored, 0
            if is_main:
                torch.save({"model": module.state_dict(), "epoch": epoch + 1}, ckpt_dir / "best.pt")
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if is_main:
            _save_checkpoint(ckpt_dir / "last.pt", module, optimizer, scheduler, state)
        seconds = time.perf_counter() - t_start
        lr = optimizer.param_groups[0]["lr"]
        if is_main:
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([epoch + 1, train_loss, val_loss, lr, round(seconds, 3)])
        if writer is not None:
            writer.add_scalar("loss/train", train_loss, epoch + 1)
            writer.add_scalar("loss/validation", val_loss, epoch + 1)
        log.info(
            "epoch %d/%d train_loss %.4f validation_loss %.4f (%.1f s)",
            epoch + 1,
            epochs,
            train_loss,
            val_loss,
            seconds,
        )
    if writer is not None:
        writer.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if not is_main:
            return run_dir
    if (ckpt_dir / "best.pt").exists():
        module.load_state_dict(torch.load(ckpt_dir / "best.pt", weights_only=False)["model"])
    evaluate_model(exp, module)
    return run_dir


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    try:
        return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    except Exception:
        return None


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
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
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    payload = torch.load(path, weights_only=False)
    model.load_state_dict(payload["model"])
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


def _save_split(exp: Experiment) -> None:
    split = exp.split
    rows = [
        {"gauge_id": exp.gauge_names[i], "node_index": i, "role": "train"}
        for i in split.train_index.tolist()
    ]
    rows += [
        {
            "gauge_id": exp.gauge_names[i],
            "node_index": i,
            "role": "holdout",
            "exclusive_fraction": float(f),
        }
        for i, f in zip(
            split.holdout_index.tolist(), split.exclusive_fraction.tolist(), strict=True
        )
    ]
    pd.DataFrame(rows).to_csv(exp.run_dir / "gauges.csv", index=False)


# ============================================================================ evaluation
SPLITS = {
    # split name: (period, gauge role)
    "train": ("train", "train"),
    "validation": ("validation", "train"),
    "test": ("test", "train"),
    "train_ungauged": ("train", "holdout"),
    "test_ungauged": ("test", "holdout"),
}


def evaluate_model(exp: Experiment, model: torch.nn.Module) -> pd.DataFrame:
    """Run the model over the whole record; write metrics.csv, parameters, discharge and plots."""
    from gnnhydro.training.metrics import compute_metrics

    model.eval()
    with torch.no_grad():
        out = model(exp.graph.to(exp.device))
    discharge = out["discharge"].detach().cpu().float()
    q_obs = exp.graph.q_obs.float()
    rows = []
    for split, (period, role) in SPLITS.items():
        if period not in exp.periods:
            continue
        gauges = exp.split.train_index if role == "train" else exp.split.holdout_index
        if gauges.numel() == 0:
            continue
        p0, p1 = exp.periods[period]
        p0 = max(p0, exp.warmup) if period == "train" else p0
        obs = q_obs[gauges, p0:p1].numpy()
        sim = discharge[gauges, p0:p1].numpy()
        metrics = compute_metrics(observation=obs, simulation=sim)
        for k, g in enumerate(gauges.tolist()):
            row = {
                "gauge_id": exp.gauge_names[g],
                "split": split,
                "node_index": g,
                "n_obs": int(np.isfinite(obs[k]).sum()),
            }
            row.update({name: float(np.asarray(values)[k]) for name, values in metrics.items()})
            rows.append(row)
    df = pd.DataFrame(rows)
    _write_outputs(exp, out, discharge, df, specs=model.param_specs)
    return df


def _parameter_table(out: dict) -> dict[str, np.ndarray]:
    table: dict[str, np.ndarray] = {}
    for name, value in out["params"].items():
        v = value.detach().cpu().float()
        if v.dim() == 3:  # [N, T, m] dynamic: time mean
            v = v.mean(1)
        if v.dim() == 2:
            table[name] = v.mean(1).numpy()
        else:
            table[name] = v.numpy()
    return table


def _min_obs_steps(exp: Experiment) -> int:
    """``dataset.min_obs_days`` in time steps (0: every gauge with an observation counts)."""
    days = float(exp.cfg.dataset.get("min_obs_days", 0) or 0)
    return int(math.ceil(days * 86400.0 / exp.step_seconds))


def summarize_metrics(metrics: pd.DataFrame, min_obs: int = 0) -> pd.DataFrame:
    """Median NSE and KGE per split over the gauges with at least ``min_obs`` valid
    observations in the split's period (``metrics.csv`` keeps every gauge), and their count."""
    if not len(metrics):
        return pd.DataFrame()
    kept = metrics[metrics["n_obs"] >= max(int(min_obs), 1)]
    summary = kept.groupby("split")[["nse", "kge"]].median()
    summary["n_gauges"] = kept.groupby("split")["gauge_id"].count()
    return summary


def _write_outputs(
    exp: Experiment, out: dict, discharge: Tensor, metrics: pd.DataFrame, specs: dict | None = None
) -> None:
    from gnnhydro import export

    run_dir = exp.run_dir
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    summary = summarize_metrics(metrics, min_obs=_min_obs_steps(exp))
    if len(summary):
        summary.to_csv(run_dir / "metrics_summary.csv")
        print("median metrics per split:\n" + summary.to_string())
    params = {name: value for name, value in out["params"].items()}
    formats = list(exp.cfg.get("export", {}).get("formats", ["gpkg"]) or ["gpkg"])
    if "gpkg" not in formats:
        formats.append("gpkg")
    for fmt in formats:
        try:
            export.export_parameters(
                exp.graph, params, run_dir / f"parameters.{_suffix(fmt)}", specs=specs
            )
        except Exception as err:  # no geometry: say so, keep the other outputs
            log.warning("parameter export to %s failed: %s", fmt, err)
    export.export_discharge(
        exp.graph,
        discharge,
        exp.time,
        run_dir / "discharge.nc",
        observed=exp.graph.q_obs.float(),
    )
    recovery = parameter_recovery(exp, out)
    if recovery is not None:
        recovery.to_csv(run_dir / "parameter_recovery.csv", index=False)
        print("learned vs true parameters (Pearson r):\n" + recovery.to_string(index=False))
    if exp.cfg.get("export", {}).get("plots", True):
        _plots(exp, discharge, metrics, params)


def _suffix(fmt: str) -> str:
    return {"gpkg": "gpkg", "parquet": "parquet", "netcdf": "nc", "nc": "nc", "csv": "csv"}.get(
        fmt, fmt
    )


def parameter_recovery(exp: Experiment, out: dict) -> pd.DataFrame | None:
    """Correlation of learned vs true parameter maps (synthetic data), at all nodes and at the
    ungauged nodes (held-out gauges' exclusive areas)."""
    true = getattr(exp.graph, "true_params", None)
    if not true:
        return None
    learned = _parameter_table(out)
    ungauged = exp.split.holdout_exclusive
    rows = []
    for name, t in true.items():
        if name not in learned:
            continue
        t = torch.as_tensor(t).float()
        t = t.mean(-1) if t.dim() == 2 else t
        lv = torch.as_tensor(learned[name])
        row = {"parameter": name, "r_all": _pearson(lv, t)}
        row["r_ungauged"] = _pearson(lv[ungauged], t[ungauged]) if ungauged.sum() > 2 else math.nan
        row["n_ungauged"] = int(ungauged.sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else math.nan


def _plots(exp: Experiment, discharge: Tensor, metrics: pd.DataFrame, params: dict) -> None:
    from gnnhydro import plot

    plots = exp.run_dir / "plots"
    plots.mkdir(exist_ok=True)
    try:
        if "test" in exp.periods:
            p0, p1 = exp.periods["test"]
            gauges = torch.cat([exp.split.train_index[:6], exp.split.holdout_index[:6]])
            plot.plot_hydrographs(
                exp.time[p0:p1],
                exp.graph.q_obs[gauges, p0:p1].numpy(),
                discharge[gauges, p0:p1].numpy(),
                [exp.gauge_names[g] for g in gauges.tolist()],
                plots / "hydrographs_test.png",
            )
        if len(metrics):
            plot.plot_metric_cdf(metrics, plots / "nse_cdf.png", metric="nse", by="split")
        if getattr(exp.graph, "pos", None) is not None:
            table = _parameter_table({"params": params})
            for name in list(table)[:20]:
                plot.plot_parameter_map(exp.graph, table[name], name, "", plots / f"map_{name}.png")
    except Exception as err:  # plots are a convenience: never lose a run over one
        log.warning("plotting failed: %s", err)


# ============================================================================ run directories
def load_run(
    run_dir: str | Path, *, dataset_cfg: DictConfig | None = None
) -> tuple[Experiment, torch.nn.Module]:
    """Rebuild the experiment and trained model of ``run_dir`` (optionally on another dataset)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a gnnhydro run directory (no config.yaml)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoints/best.pt or last.pt)")
    train_exp = Experiment(cfg, run_dir)
    model = train_exp.build_model()
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    if dataset_cfg is None:
        return train_exp, model
    cfg2 = OmegaConf.merge(cfg, {"dataset": dataset_cfg})
    return Experiment(cfg2, run_dir), model


def evaluate(run_dir: str | Path) -> pd.DataFrame:
    """Re-evaluate a trained run: rewrite metrics.csv and exports from its best checkpoint."""
    exp, model = load_run(run_dir)
    return evaluate_model(exp, model)


def predict(
    run_dir: str | Path, dataset_cfg: DictConfig, out_dir: str | Path | None = None
) -> Path:
    """Predict parameters and discharge on a dataset (no observations needed: ungauged basins).

    Writes ``predictions/<dataset>/parameters.gpkg`` and ``discharge.nc`` under the run dir."""
    from gnnhydro import export

    run_dir = Path(run_dir)
    _, model = load_run(run_dir)  # the training run's architecture, weights and normalisation
    dataset = build_dataset(dataset_cfg)
    graph = as_single_graph(dataset)
    graph.x = attributes_by_name(graph, model.x_names)
    model.eval()
    with torch.no_grad():
        out = model(graph)
    target = (
        Path(out_dir)
        if out_dir
        else run_dir / "predictions" / str(dataset_cfg.get("name", "dataset"))
    )
    target.mkdir(parents=True, exist_ok=True)
    export.export_parameters(graph, out["params"], target / "parameters.gpkg")
    export.export_discharge(
        graph, out["discharge"].float(), np.asarray(graph.time), target / "discharge.nc"
    )
    return target


def attributes_by_name(graph: Any, names: list[str] | None) -> Tensor:
    """``[N, F]`` static attributes in the order ``names`` (the model's training attributes),
    looked up by NAME in ``graph.x_names`` and, failing that, among the graph's per-node
    attributes (``area_km2``, ``length_m``, ``slope``, ...). Raises naming missing attributes."""
    if names is None:
        return graph.x.float()
    have = list(getattr(graph, "x_names", None) or [])
    columns, missing = [], []
    for name in names:
        if name in have:
            columns.append(graph.x[:, have.index(name)].float())
        elif isinstance(getattr(graph, name, None), Tensor) and graph[name].shape == (
            graph.num_nodes,
        ):
            columns.append(graph[name].float())
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"the dataset lacks static attributes {missing} that the model was trained on; it has {have}"
        )
    return torch.stack(columns, dim=1)


def export_run(run_dir: str | Path, fmt: str = "gpkg") -> Path:
    """Export a trained run's parameter maps to ``gpkg``, ``parquet``, ``netcdf`` or ``csv``."""
    from gnnhydro import export

    if fmt not in ("gpkg", "parquet", "netcdf", "nc", "csv"):
        raise ValueError(f"format must be one of gpkg, parquet, netcdf, csv; got {fmt!r}")
    exp, model = load_run(run_dir)
    model.eval()
    with torch.no_grad():
        out = model(exp.graph.to(exp.device))
    path = Path(run_dir) / f"parameters.{_suffix(fmt)}"
    export.export_parameters(exp.graph, out["params"], path)
    return path
