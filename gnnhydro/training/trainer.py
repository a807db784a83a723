"""The training loop: random windows of the training period, NaN-masked losses at the training
gauges, validation, early stopping, checkpoints (exact resume) and data-parallel training.

A run directory holds: ``config.yaml`` (resolved), ``provenance.json`` (package version, git
commit, torch version, the full command, data root, assumptions), ``train.log``,
``checkpoints/`` (``last.pt`` every epoch, ``best.pt``), ``train_log.csv``, ``gauges.csv``,
``metrics.csv`` (one row per gauge and split), ``metrics_summary.csv``, ``parameters.gpkg``,
``discharge.nc`` and ``plots/``. Nothing is written before the data, the config and the run
directory have passed validation (see :mod:`gnnhydro.training.rundir`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gnnhydro.models.ensemble import HydroEnsemble
from gnnhydro.training.checkpoint import (
    atomic_save,
    best_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from gnnhydro.training.constraints import build_constraints, check_constraints, constraint_loss
from gnnhydro.training.experiment import Experiment, provenance, resolve_device, seed_everything
from gnnhydro.training.model import ModelInputs, _plain
from gnnhydro.training.rundir import check_run_dir, clear_run_dir

log = logging.getLogger("gnnhydro")

__all__ = ["Trainer", "train", "distributed_context"]


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


def _masked_loss(
    loss_fn, out: dict, batch: Any, warmup: int, mask_name: str, constraints: list = ()
) -> Tensor:
    """Loss at the gauges of ``mask_name`` (plus the weighted losses of the observed
    ``constraints``, :mod:`gnnhydro.training.constraints`); for an ensemble the mean of the
    members' own losses (each member is trained on its own error, not on the error of the mean)."""
    losses = []
    for member in HydroEnsemble.member_outputs(out):
        graph = member.get("graph", batch)  # the basins of a gauge-basin sample (no halo)
        mask = getattr(graph, mask_name)
        sim = member["discharge"][mask]
        obs = graph.q_obs[mask].to(sim.dtype)
        loss = loss_fn(simulation=sim, observation=obs, warmup_steps=warmup)
        extra = constraint_loss(list(constraints), member, graph, warmup)
        losses.append(loss if extra is None else loss + extra)
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def _gathered_loss(
    loss_fn, out: dict, batch: Any, warmup: int, mask_name: str, *, stand_in: bool = False
) -> Tensor:
    """The loss of the whole global batch under data parallelism, the same value on every rank.

    Each rank has simulated its share of the batch; the series at the gauges of ``mask_name``
    (and their observations) of all ranks are gathered, and the loss of :func:`_masked_loss`
    is taken over all of them, this rank's own series live (with their gradient), the other
    ranks' as constants. Summed over the ranks these partial gradients are the gradient of the
    one-process loss of the global batch for any loss (a mean over gauges or steps, NaN-masked,
    combined, ensemble); DDP averages, so the caller backpropagates ``world`` × this loss.
    A ``stand_in`` rank contributes no series (its forward output stays in the autograd graph,
    so its backward runs, with zero gradient).
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    members = HydroEnsemble.member_outputs(out)
    graph = members[0].get("graph", batch)
    mask = getattr(graph, mask_name)
    sims = torch.stack([m["discharge"][getattr(m.get("graph", batch), mask_name)] for m in members])
    obs = graph.q_obs[mask].to(sims.dtype)
    if stand_in:
        sims, obs = sims[:, :0], obs[:0]
    count = torch.tensor([obs.shape[0]], device=obs.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    local = sims.new_zeros((sims.shape[0] + 1, max(sizes), sims.shape[-1]))
    local[:-1, : sizes[rank]] = sims.detach()
    local[-1, : sizes[rank]] = obs
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    sim_all = torch.cat(
        [sims if r == rank else part[:-1, :n] for r, (part, n) in enumerate(zip(parts, sizes))],
        dim=1,
    )
    obs_all = torch.cat([part[-1, :n] for part, n in zip(parts, sizes)])
    losses = [loss_fn(simulation=s, observation=obs_all, warmup_steps=warmup) for s in sim_all]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


def _clip_gradients(module: torch.nn.Module, max_norm: float) -> None:
    """Clip the gradient norm of every ensemble member separately (of the model if single)."""
    for part in getattr(module, "members", [module]):
        torch.nn.utils.clip_grad_norm_(part.parameters(), max_norm)


def _forward_period(exp: Experiment, model: torch.nn.Module, period: str) -> tuple[dict, Any, int]:
    """Run the model over a whole period, with the warm-up taken from the record before it."""
    p0, p1 = exp.periods[period]
    w0 = max(0, p0 - exp.warmup)
    g = exp.window(w0, p1)
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


def _log_to_file(run_dir: Path) -> logging.Handler:
    """Copy the ``gnnhydro`` log to ``run_dir/train.log`` (appended on resume)."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def _tensorboard(run_dir: Path):
    """A TensorBoard writer, or ``None`` (said once) when the ``tensorboard`` package is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info(
            "TensorBoard logging is off (the tensorboard package is not installed: "
            "pip install 'gnnhydro[tensorboard]'); losses are in train_log.csv"
        )
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    command: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Train a regionalization model; write checkpoints, logs, metrics and exports to ``run_dir``.

    The data, the model config and the run directory are validated first (a non-empty
    ``run_dir`` needs ``trainer.resume=true`` or ``overwrite=true``); only then is anything
    written. ``command`` (default: ``sys.argv``) and the job's ``overrides`` are recorded in
    ``provenance.json``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel (DDP) and rank 0 alone
    writes checkpoints, logs and outputs. ``sampler=windows``: every rank draws the same random
    windows and takes its share (``windows[rank::world]``, ``trainer.batch_size`` a multiple of
    the world size), gradients are averaged. ``sampler=gauge_basins``: every rank draws the
    same samples and forms the same node-budget batches as one process (``trainer.batch_size``
    basins at most, at least the world size), and takes its share of each batch, balanced by
    nodes; the loss is that of the whole global batch (the ranks' simulated gauge series are
    gathered), so the updates, and the logged training loss, are those of one process.
    """
    run_dir = Path(run_dir)
    tcfg = cfg.trainer
    resume = bool(tcfg.get("resume"))
    rank, world = distributed_context()
    is_main = rank == 0
    if is_main:
        check_run_dir(run_dir, resume=resume, overwrite=bool(cfg.get("overwrite", False)))
    resolve_device(cfg.get("device", "auto"))  # a device that is not there fails before the data
    seed_everything(int(cfg.seed), bool(cfg.get("deterministic", False)))
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    log.info("preparing the data (%s) ...", cfg.dataset.get("name", "dataset"))
    exp = Experiment(cfg, run_dir)  # validates the data before anything is written
    if world > 1 and torch.cuda.is_available():
        exp.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    _check_batch_size(tcfg, world)
    model = exp.build_model()
    trainer = Trainer(exp, model, rank=rank, world=world)
    ckpt_dir = run_dir / "checkpoints"
    if resume and (ckpt_dir / "last.pt").exists():  # raises if it does not fit the model
        trainer.resume(ckpt_dir / "last.pt")
    state = trainer.state
    # ---- validation passed: from here on the run directory is written
    handler = None
    if is_main:
        if not resume and bool(cfg.get("overwrite", False)) and run_dir.exists():
            clear_run_dir(run_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        handler = _log_to_file(run_dir)
        assumptions = exp.assumptions()
        for name, meaning in assumptions.items():
            log.warning("the dataset has no %s: %s", name, meaning)
        log.info(exp.describe())
        if resume:
            log.info("resuming %s from epoch %d", run_dir, state["epoch"])
        else:
            OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
            record = provenance(
                command,
                data_root=str(cfg.get("data_root", "")),
                dataset_root=str(cfg.dataset.get("root", "")),
                assumptions={f"no {k}": v for k, v in assumptions.items()},
                periods=exp.period_dates(),
                overrides=list(overrides or []),
                # how the dataset computed PET (None: PET read from its files)
                pet_method=getattr(exp.dataset, "pet_method", None),
            )
            (run_dir / "provenance.json").write_text(json.dumps(record, indent=2))
            ModelInputs.from_graph(exp.graph, exp.split).save(run_dir / "model_inputs.json")
            from gnnhydro.training.outputs import save_split

            save_split(exp)
    try:
        trainer.fit()
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
            if not is_main:
                return run_dir
        from gnnhydro.training.outputs import evaluate_model

        best = best_checkpoint(run_dir)
        load_weights(model, best)
        log.info("evaluating the %s checkpoint over the whole record ...", best.name)
        evaluate_model(exp, model)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
    return run_dir


def _check_batch_size(tcfg: DictConfig, world: int) -> None:
    """``trainer.batch_size`` against the number of processes: windows are shared out equally
    (a multiple); gauge-basin batches of ``batch_size`` basins at most are shared out by nodes
    (at least one basin per process, else a process would only ever run stand-ins)."""
    batch = int(tcfg.batch_size)
    if str(tcfg.get("sampler", "windows")) == "gauge_basins":
        if batch < world:
            raise ValueError(
                f"trainer.batch_size={batch} (the most basins of a step, shared out among the "
                f"processes) is below the {world} processes: raise it to {world} or more"
            )
    elif batch % world:
        raise ValueError(f"trainer.batch_size={batch} is not a multiple of the {world} processes")


class Trainer:
    """The training loop of one run, as hooks a subclass can override (the shape of
    neuralhydrology's ``BaseTrainer``):

    - :meth:`_get_optimizer` / :meth:`_get_scheduler`: ``trainer.optimizer`` and
      ``trainer.scheduler`` are a name (``adam``, ``adamw``, ``sgd``; ``none``, ``cosine``,
      ``step``) or a hydra config with ``_target_`` and ``_partial_: true``, e.g.
      ``trainer.optimizer={_target_: torch.optim.RAdam, _partial_: true, lr: 0.003}``;
    - :meth:`_get_loss`: the NaN-masked loss of ``trainer.loss``;
    - :meth:`_get_data_loader`: the epoch's samples — random windows of the training period with
      their warm-up (:class:`~gnnhydro.datasets.windows.WindowSamples`), or gauge basins in
      node-budget batches (``trainer.sampler=gauge_basins``, :meth:`_gauge_basin_samples`) —
      through PyG's ``DataLoader`` (``trainer.num_workers`` worker processes);
    - :meth:`_train_epoch`, :meth:`_train_step`, :meth:`_validate`: one epoch, one step, the
      validation loss (``None`` without a validation period).

    :meth:`fit` runs the epochs from ``state["epoch"]`` with early stopping, checkpoints
    (exact resume: the window generator is part of the checkpoint) and the loss log.
    """

    def __init__(
        self, exp: Experiment, model: torch.nn.Module, *, rank: int = 0, world: int = 1
    ) -> None:
        self.exp = exp
        self.cfg = exp.cfg
        self.tcfg = exp.cfg.trainer
        self.module = model  # the bare model (the DDP wrapper shares its parameters)
        self.model = model
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        sampler = str(self.tcfg.get("sampler", "windows"))
        if sampler not in ("windows", "gauge_basins"):
            raise ValueError(
                f"trainer.sampler must be 'windows' or 'gauge_basins', got {sampler!r}"
            )
        member = getattr(model, "members", [model])[0]
        if sampler == "gauge_basins" and getattr(member.parameterizer, "crosses_basins", False):
            raise ValueError(
                f"parameterizer {exp.cfg.parameterizer.name!r} passes messages across basins "
                "(spatial neighbour edges), which gauge-basin samples would cut: use "
                "trainer.sampler=windows"
            )
        # gauge-basin batches are shared out by nodes; the loss is that of the global batch
        self.shares_basins = sampler == "gauge_basins" and world > 1
        self.optimizer = self._get_optimizer()
        self.scheduler = self._get_scheduler(self.optimizer)
        self.loss_fn = self._get_loss()
        #: observed fluxes/states besides discharge (trainer.constraints)
        self.constraints = build_constraints(_plain(self.tcfg.get("constraints")) or None)
        check_constraints(self.constraints, exp.graph, exp.cfg)
        if self.constraints and self.shares_basins:
            raise ValueError("trainer.constraints need trainer.sampler=windows")
        self.state = {
            "epoch": 0,
            "best": math.inf,
            "bad_epochs": 0,
            "rng": np.random.default_rng(int(self.cfg.seed)),
        }

    # ------------------------------------------------------------------ hooks
    def _get_optimizer(self) -> torch.optim.Optimizer:
        spec = self.tcfg.optimizer
        lr, decay = float(self.tcfg.lr), float(self.tcfg.weight_decay)
        names = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        if isinstance(spec, str):
            if spec.lower() not in names:
                raise ValueError(
                    f"trainer.optimizer must be one of {sorted(names)} or a config with "
                    f"_target_, got {spec!r}"
                )
            return names[spec.lower()](self.module.parameters(), lr=lr, weight_decay=decay)
        factory = _partial(spec, "trainer.optimizer")
        keywords = getattr(factory, "keywords", {}) or {}
        defaults = {k: v for k, v in {"lr": lr, "weight_decay": decay}.items() if k not in keywords}
        return factory(self.module.parameters(), **defaults)

    def _get_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        spec = self.tcfg.scheduler
        epochs = int(self.tcfg.epochs)
        if spec is None or isinstance(spec, str):
            name = "none" if spec is None else spec.lower()
            names = {
                "none": lambda: None,
                "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(
                    optimizer, max(epochs, 1)
                ),
                "step": lambda: torch.optim.lr_scheduler.StepLR(
                    optimizer, step_size=max(epochs // 3, 1), gamma=0.3
                ),
            }
            if name not in names:
                raise ValueError(
                    f"trainer.scheduler must be one of {sorted(names)} or a config with "
                    f"_target_, got {spec!r}"
                )
            return names[name]()
        return _partial(spec, "trainer.scheduler")(optimizer)

    def _get_loss(self):
        return _loss_fn(self.cfg)

    def _epoch_windows(self) -> list[tuple[int, int, int]]:
        """This rank's windows of one epoch: ``steps_per_epoch`` blocks of ``batch_size``
        random windows (drawn in order from the run's generator), each block shared out as
        ``block[rank::world]``."""
        batch = int(self.tcfg.batch_size)
        out: list[tuple[int, int, int]] = []
        for _ in range(int(self.tcfg.steps_per_epoch)):
            out += _windows(self.exp, self.state["rng"], batch)[self.rank :: self.world]
        return out

    def _halo_hops(self) -> int:
        """Rounds of message passing of the parameterizer (the halo a basin sample needs)."""
        member = getattr(self.module, "members", [self.module])[0]
        parameterizer = member.parameterizer
        if not getattr(parameterizer, "uses_topology", True):
            return 0
        return int(getattr(parameterizer, "num_layers", 0))

    def _gauge_basins(self) -> Any:
        from gnnhydro.datasets.basins import GaugeBasins

        if getattr(self, "_basins", None) is None:
            self._basins = GaugeBasins(
                self.exp.graph, self.exp.split.train_index, halo_hops=self._halo_hops()
            )
        return self._basins

    def _gauge_basin_samples(self) -> tuple[Any, Any]:
        """The samples of one epoch: every training gauge's basin once, in random order, each
        with a random window; and their node-budget batches (at most ``trainer.batch_size``
        basins). Under data parallelism every rank draws the same samples and forms the same
        batches — those of one process — and takes its share of each batch
        (:class:`~gnnhydro.datasets.basins.RankShares`, balanced by nodes: as many steps on
        every rank); a rank reads only the samples of its shares."""
        from gnnhydro.datasets.basins import (
            GaugeBasinSamples,
            NodeBudgetBatches,
            RankShares,
            StandInSamples,
        )

        basins = self._gauge_basins()
        rng = self.state["rng"]
        order = rng.permutation(len(basins)).tolist()
        windows = _windows(self.exp, rng, len(order))
        samples = [(b, *w) for b, w in zip(order, windows, strict=True)]
        dataset = GaugeBasinSamples(self.exp.graph, basins, samples, reader=self.exp.reader)
        sizes = [dataset.size(i) for i in range(len(dataset))]
        budget = self.tcfg.get("max_nodes_per_batch")
        batches = NodeBudgetBatches(
            sizes, int(budget) if budget else None, max_samples=int(self.tcfg.batch_size)
        )
        big = batches.oversized()
        if big and self.is_main and not getattr(self, "_said_oversized", False):
            big_sizes = sorted({sizes[i] for i in big})
            log.info(
                "%d gauge basin(s) exceed trainer.max_nodes_per_batch=%s (%s nodes with halo): "
                "each is trained alone in its own batch",
                len(big),
                budget,
                ", ".join(map(str, big_sizes[-5:])),
            )
            self._said_oversized = True
        if self.world == 1:
            return dataset, batches
        return StandInSamples(dataset), RankShares(batches, sizes, self.rank, self.world)

    def _get_data_loader(self) -> Any:
        from torch_geometric.loader import DataLoader

        from gnnhydro.datasets.windows import WindowSamples

        workers = int(self.tcfg.get("num_workers", 0) or 0)
        # its own generator: the loader's worker seed never draws from the global torch
        # generator that dropout and the model use (resume and old runs stay exact)
        generator = torch.Generator().manual_seed(int(self.cfg.seed) + self.state["epoch"])
        sampler = str(self.tcfg.get("sampler", "windows"))
        if sampler == "gauge_basins":
            dataset, batches = self._gauge_basin_samples()
            return DataLoader(
                dataset, batch_sampler=batches, num_workers=workers, generator=generator
            )
        samples = WindowSamples(self.exp.graph, self._epoch_windows(), reader=self.exp.reader)
        return DataLoader(
            samples,
            batch_size=int(self.tcfg.batch_size) // self.world,
            shuffle=False,  # the windows are random already; their order is part of resume
            num_workers=workers,
            generator=generator,
        )

    def _train_step(self, batch: Any) -> float:
        batch = batch.to(self.exp.device)
        warm = _warmup_of(batch)
        # without gradient through the warm-up, the runoff model's adjoint covers the loss period
        detach = 0 if self.tcfg.get("warmup_gradient", True) else warm
        out = self.model(batch, detach_steps=detach) if detach else self.model(batch)
        scale = 1.0
        if self.shares_basins:  # this rank's share of a global batch: the global batch's loss
            stand_in = bool(torch.as_tensor(batch.stand_in).any())
            loss = _gathered_loss(
                self.loss_fn, out, batch, warm, "train_gauge_mask", stand_in=stand_in
            )
            scale = float(self.world)  # DDP averages the ranks' partial gradients
        else:
            loss = _masked_loss(
                self.loss_fn, out, batch, warm, "train_gauge_mask", self.constraints
            )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at epoch {self.state['epoch'] + 1}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (loss * scale if scale != 1.0 else loss).backward()
        if self.tcfg.get("clip_grad_norm"):
            _clip_gradients(self.module, float(self.tcfg.clip_grad_norm))
        self.optimizer.step()
        return loss.item()

    def _train_epoch(self, epoch: int) -> float:
        from tqdm.auto import tqdm

        self.model.train()
        losses = []
        bar = tqdm(
            self._get_data_loader(),
            desc=f"epoch {epoch + 1}/{int(self.tcfg.epochs)}",
            disable=not self.tcfg.get("progress_bar", True) or not self.is_main,
            leave=False,
        )
        for batch in bar:
            losses.append(self._train_step(batch))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            _stop_if_interrupted()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(np.mean(losses)) if losses else math.nan

    def _validate(self) -> float | None:
        if "validation" not in self.exp.periods or self.exp.split.train_index.numel() == 0:
            return None
        self.model.eval()
        if str(self.tcfg.get("sampler", "windows")) == "gauge_basins":
            return self._validate_basins()
        with torch.no_grad():
            out, g, warm = _forward_period(self.exp, self.module, "validation")
            loss = _masked_loss(self.loss_fn, out, g, warm, "train_gauge_mask", self.constraints)
            return loss.item()

    def _validate_basins(self) -> float:
        """The validation loss from gauge-basin samples in node-budget batches: each training
        gauge's own series, gathered over the batches, then one loss over all of them — the
        same value as over the whole network, with the memory of a batch."""
        from torch_geometric.data import Batch

        from gnnhydro.datasets.basins import GaugeBasinSamples, NodeBudgetBatches

        exp = self.exp
        p0, p1 = exp.periods["validation"]
        w0 = max(0, p0 - exp.warmup)
        basins = self._gauge_basins()
        dataset = GaugeBasinSamples(
            exp.graph, basins, [(i, w0, p1, p0 - w0) for i in range(len(basins))], reader=exp.reader
        )
        budget = self.tcfg.get("max_nodes_per_batch")
        batches = NodeBudgetBatches(
            [dataset.size(i) for i in range(len(dataset))],
            int(budget) if budget else None,
            max_samples=int(self.tcfg.batch_size),
        )
        sims: list[list[Tensor]] = []
        observed: list[Tensor] = []
        with torch.no_grad():
            for indices in batches:
                batch = Batch.from_data_list([dataset[i] for i in indices]).to(exp.device)
                out = self.module(batch)
                members = HydroEnsemble.member_outputs(out)
                offsets = np.cumsum([0] + [basins.basin_size(i) for i in indices[:-1]])
                outlets = torch.as_tensor(
                    [o + basins.gauge_position(i) for o, i in zip(offsets, indices, strict=True)],
                    device=exp.device,
                )
                if not sims:
                    sims = [[] for _ in members]
                for k, member in enumerate(members):
                    sims[k].append(member["discharge"][outlets])
                observed.append(members[0]["graph"].q_obs[outlets])
        obs = torch.cat(observed)
        losses = [
            self.loss_fn(
                simulation=torch.cat(s), observation=obs.to(s[0].dtype), warmup_steps=p0 - w0
            )
            for s in sims
        ]
        return float(torch.stack(losses).mean())

    # ------------------------------------------------------------------ loop
    def resume(self, path: Path) -> None:
        """Restore weights, optimizer, scheduler, counters and generators from ``path``."""
        self.state = load_checkpoint(path, self.module, self.optimizer, self.scheduler)

    def fit(self) -> None:
        """The epochs from ``state["epoch"]`` to ``trainer.epochs``."""
        exp, tcfg, state = self.exp, self.tcfg, self.state
        run_dir = exp.run_dir
        ckpt_dir = run_dir / "checkpoints"
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.module, device_ids=[exp.device.index] if exp.device.type == "cuda" else None
            )
        epochs = int(tcfg.epochs)
        writer = _tensorboard(run_dir) if self.is_main else None
        log_path = run_dir / "train_log.csv"
        if self.is_main and (state["epoch"] == 0 or not log_path.exists()):
            with open(log_path, "w", newline="") as f:
                csv.writer(f).writerow(["epoch", "train_loss", "validation_loss", "lr", "seconds"])
        if self.is_main and "validation" not in exp.periods:
            log.info("no validation period: the best checkpoint is the one of lowest training loss")
        with _interrupt_flag():
            self._epochs(epochs, writer, log_path, ckpt_dir)

    def _epochs(self, epochs: int, writer: Any, log_path: Path, ckpt_dir: Path) -> None:
        """The epoch loop of :meth:`fit`: train, validate, checkpoint and log each epoch."""
        tcfg, state = self.tcfg, self.state
        for epoch in range(state["epoch"], epochs):
            if state["bad_epochs"] >= int(tcfg.early_stopping_patience) > 0:
                log.info("early stopping at epoch %d", epoch)
                break
            t_start = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            val_loss = self._validate()
            monitored = val_loss if val_loss is not None and math.isfinite(val_loss) else train_loss
            if monitored < state["best"]:
                state["best"], state["bad_epochs"] = monitored, 0
                if self.is_main:
                    atomic_save(
                        {"model": self.module.state_dict(), "epoch": epoch + 1},
                        ckpt_dir / "best.pt",
                    )
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            seconds = time.perf_counter() - t_start
            lr = self.optimizer.param_groups[0]["lr"]
            if not self.is_main:
                continue
            save_checkpoint(
                ckpt_dir / "last.pt", self.module, self.optimizer, self.scheduler, state
            )
            with open(log_path, "a", newline="") as f:
                row = [epoch + 1, train_loss, "" if val_loss is None else val_loss, lr]
                csv.writer(f).writerow([*row, round(seconds, 3)])
            if writer is not None:
                writer.add_scalar("loss/train", train_loss, epoch + 1)
                if val_loss is not None:
                    writer.add_scalar("loss/validation", val_loss, epoch + 1)
            val_text = "" if val_loss is None else f" validation_loss {val_loss:.4f}"
            log.info(
                "epoch %d/%d train_loss %.4f%s (%.1f s)",
                epoch + 1,
                epochs,
                train_loss,
                val_text,
                seconds,
            )
            _stop_if_interrupted()
        if writer is not None:
            writer.close()


def _partial(spec: Any, key: str) -> Any:
    """A ``functools.partial`` from a hydra config with ``_target_`` (``_partial_`` implied)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    plain = _plain(spec)
    if not isinstance(plain, dict) or "_target_" not in plain:
        raise ValueError(f"{key} must be a name or a config with _target_, got {plain!r}")
    plain["_partial_"] = True
    try:
        return instantiate(plain)
    except InstantiationException as err:
        raise ValueError(f"{key}: {str(err).splitlines()[0]}") from err


#: set by :func:`_interrupt_flag`'s SIGINT handler
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _interrupt_flag():
    """Ctrl-C (SIGINT) while training: raise ``KeyboardInterrupt`` where the signal lands, as
    Python does, and also set a flag that the training loop checks after every step.  Python
    swallows (reports as unraisable) an interrupt that lands in a finaliser — a ``__del__``,
    such as a data file's close — and training would go on; the flag stops it at the end of
    that step.  Only in the main thread and over Python's own handler (a caller's is kept)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _INTERRUPTED.clear()


def _stop_if_interrupted() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def _warmup_of(batch: Any) -> int:
    """The warm-up steps of a batch of windows (all windows of a batch share one)."""
    warm = batch.warmup_steps
    if isinstance(warm, Tensor):
        values = warm.unique()
        if values.numel() != 1:
            raise ValueError(f"windows of one batch have different warm-ups {values.tolist()}")
        return int(values.item())
    return int(warm)
