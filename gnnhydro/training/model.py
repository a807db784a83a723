"""Building the model of a run from its config: :class:`ModelInputs` (what a model knows of its
data, saved as ``model_inputs.json``) and :func:`build_model` (runoff model, impulse response,
parameterizer, normalisation, ensembles)."""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from gnnhydro.datasets.base import attribute_statistics
from gnnhydro.datasets.splits import GaugeSplit
from gnnhydro.models.ensemble import HydroEnsemble

__all__ = ["ModelInputs", "build_model", "resolve_reservoir", "RESERVOIR_CHOICES"]

#: values of ``model.routing.reservoir``: ``auto`` is ``learned`` where the data mark reservoir
#: nodes (``reservoir_mask``), ``none`` otherwise; the others name a reservoir operator
#: (:mod:`gnnhydro.routing.reservoirs`) or ``none`` (reservoir nodes route as plain reaches)
RESERVOIR_CHOICES = ("auto", "none", "learned", "level_pool", "observed")


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs to know of its data to be built: the static attributes (count and
    names, in order), the forcing names, the per-edge attributes, the time step. Saved in the
    run directory (``model_inputs.json``) so that ``predict`` rebuilds a trained model without
    the training dataset."""

    in_channels: int
    x_names: tuple[str, ...] | None
    forcing_names: tuple[str, ...]
    edge_dim: int | None
    step_seconds: float
    #: training gauges of the run (the donors of ``parameterizer=donor``)
    num_train_gauges: int | None = None
    #: reservoir nodes the data mark (``reservoir_mask``): ``model.routing.reservoir=auto``
    #: resolves from it
    num_reservoirs: int = 0

    @classmethod
    def from_graph(cls, graph: Any, split: GaugeSplit | None = None) -> ModelInputs:
        names = getattr(graph, "x_names", None)
        return cls(
            in_channels=int(graph.x.size(1)),
            x_names=tuple(str(n) for n in names) if names else None,
            forcing_names=tuple(_forcing_names(graph)),
            edge_dim=_edge_dim(graph),
            step_seconds=float(getattr(graph, "step_seconds", 86400.0)),
            num_train_gauges=None if split is None else int(split.train_index.numel()),
            num_reservoirs=_num_reservoirs(graph),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ModelInputs:
        data = json.loads(Path(path).read_text())
        data["x_names"] = tuple(data["x_names"]) if data["x_names"] else None
        data["forcing_names"] = tuple(data["forcing_names"])
        return cls(**data)

    def check(self, graph: Any, what: str) -> None:
        """Raise naming what ``graph`` lacks that the model was built on (edge attributes, the
        time step); static attributes are aligned by name elsewhere."""
        other = ModelInputs.from_graph(graph)
        if other.edge_dim != self.edge_dim:
            raise ValueError(
                f"{what}: the model uses {self.edge_dim or 0} edge attributes (length_m, slope) "
                f"but the graph gives {other.edge_dim or 0}"
            )
        if other.step_seconds != self.step_seconds:
            raise ValueError(
                f"{what}: time step {other.step_seconds:g} s, the model was trained on "
                f"{self.step_seconds:g} s"
            )


def build_model(
    cfg: DictConfig,
    graph: Any,
    split: GaugeSplit | None = None,
    attribute_stats: tuple[Tensor, Tensor] | None = None,
) -> torch.nn.Module:
    """Runoff model, IRF and parameterizer from the config, for ``graph`` (a graph, or the
    :class:`ModelInputs` of one); attribute normalisation fitted on training nodes only (every
    node outside the held-out gauges' exclusive areas), taken from the dataset's cached
    ``attribute_stats`` when a dataset is given (with :class:`ModelInputs`, stats are needed or
    placeholders that a checkpoint then fills)."""
    inputs = graph if isinstance(graph, ModelInputs) else ModelInputs.from_graph(graph, split)
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
    reservoir = resolve_reservoir(model_cfg, graph)
    reservoir_specs = HydroModel.reservoir_specs(reservoir)
    if attribute_stats is not None:
        mean, std = attribute_stats
    elif isinstance(graph, ModelInputs):  # placeholders: the checkpoint holds the real ones
        mean, std = torch.zeros(inputs.in_channels), torch.ones(inputs.in_channels)
    else:
        mean, std = attribute_statistics(graph.x.float()[~split.holdout_exclusive])
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
    if reservoir_specs:  # predicted at every node, used at the reservoir nodes
        specs["reservoir"] = (reservoir_specs, None)
    if name == "donor" or pcfg.get("donor_residual"):  # a table row per training gauge
        if not inputs.num_train_gauges:
            raise ValueError(f"parameterizer {name!r} needs the number of training gauges")
        pcfg["num_donors"] = inputs.num_train_gauges
    size = int(model_cfg.get("ensemble", 1) or 1)
    if size < 1:
        raise ValueError(f"model.ensemble must be at least 1, got {size}")
    members = []
    for _ in range(size):  # the global RNG advances: every member starts from its own weights
        parameterizer = build_parameterizer(
            name,
            in_channels=inputs.in_channels,
            specs=specs,
            dynamic=set(dynamic),
            dynamic_channels=len(inputs.forcing_names) if dynamic else None,
            edge_dim=inputs.edge_dim if get_parameterizer(name).supports_edge_attr else None,
            **pcfg,
        )
        members.append(
            _hydro_model(
                model_cfg,
                inputs,
                parameterizer,
                runoff,
                irf,
                mean,
                std,
                bool(dynamic),
                forcing_correction,
                reservoir,
            )
        )
    return members[0] if size == 1 else HydroEnsemble(members)


def _hydro_model(
    model_cfg: DictConfig,
    inputs: ModelInputs,
    parameterizer: torch.nn.Module,
    runoff: torch.nn.Module | None,
    irf: str | None,
    mean: Tensor,
    std: Tensor,
    dynamic: bool,
    forcing_correction: torch.nn.Module | None = None,
    reservoir: str | None = None,
) -> torch.nn.Module:
    from gnnhydro.models import HydroModel
    from gnnhydro.routing.lti import parse_substeps

    mode = model_cfg.mode
    return HydroModel(
        parameterizer,
        runoff,
        irf,
        mode=mode,
        substeps=(
            parse_substeps(model_cfg.routing.get("substeps", 1)) if model_cfg.get("routing") else 1
        ),
        x_mean=mean,
        x_std=std,
        x_names=list(inputs.x_names) if inputs.x_names else None,
        dynamic_names=list(inputs.forcing_names) if dynamic else (),
        initial_discharge_from=(
            model_cfg.routing.get("initial_discharge_from") if model_cfg.get("routing") else None
        ),
        reference_fraction=float(
            (model_cfg.routing.get("reference_fraction") if model_cfg.get("routing") else None)
            or 1.0
        ),
        spinup_cycles=int(model_cfg.get("spinup_cycles", 1) or 1),
        forcing_correction=forcing_correction,
        checkpoint_nodes=(
            model_cfg.runoff.get("checkpoint_nodes") if model_cfg.get("runoff") else None
        ),
        spinup_steps=int(
            round(float(model_cfg.get("spinup_days", 0) or 0) * 86400.0 / inputs.step_seconds)
        ),
        reservoir=reservoir,
    )


def resolve_reservoir(model_cfg: DictConfig, graph: Any) -> str | None:
    """The reservoir operator of ``model.routing.reservoir`` for ``graph`` (a graph, or the
    :class:`ModelInputs` of one): ``auto`` (default) → ``"learned"`` where the data mark
    reservoir nodes, else None; ``none`` → None; an operator name as given.

    With a graph, raises a one-line ``ValueError`` naming what the data lack for an explicitly
    chosen operator: reservoir nodes (``reservoir_mask``), its physical properties (e.g.
    ``reservoir_capacity_m3`` for ``learned``, NaN or missing at reservoir nodes) or series
    (``reservoir_release`` for ``observed``).
    """
    from gnnhydro.routing.reservoirs import available_reservoirs, get_reservoir

    routing = model_cfg.get("routing")
    if not routing or model_cfg.get("mode") == "runoff":  # no network routing: no reservoirs
        return None
    choice = str(routing.get("reservoir", "auto") or "none").lower()
    known = list(dict.fromkeys([*RESERVOIR_CHOICES, *available_reservoirs()]))
    if choice not in known:
        raise ValueError(f"model.routing.reservoir={choice!r} is not known; choose from {known}")
    count = graph.num_reservoirs if isinstance(graph, ModelInputs) else _num_reservoirs(graph)
    what = f"model.routing.reservoir={choice}"
    if choice == "auto":
        choice = "learned" if count > 0 else "none"
        what = f"model.routing.reservoir=auto ({choice})"
    if choice == "none":
        return None
    if isinstance(graph, ModelInputs):  # the data were checked when the run was trained
        return choice
    if count == 0:
        raise ValueError(
            f"{what}: the data mark no reservoir (no reservoir_mask node; nodes.csv column "
            "'reservoir' = 1); use model.routing.reservoir=none"
        )
    operator = get_reservoir(choice)
    mask = torch.as_tensor(graph.reservoir_mask).bool()
    ids = list(getattr(graph, "node_id", None) or range(int(mask.numel())))
    needed = (*operator.data_spec, *operator.series)
    missing = [name for name in needed if getattr(graph, name, None) is None]
    if missing:
        raise ValueError(
            f"{what}: the data lack {missing} (per node, at the reservoirs); "
            "use model.routing.reservoir=none"
        )
    for name in needed:
        value = torch.as_tensor(getattr(graph, name))
        bad = torch.isnan(value[mask].reshape(int(mask.sum()), -1).double()).any(-1)
        if bad.any():
            bad_ids = [ids[int(i)] for i in mask.nonzero().flatten()[bad][:20]]
            raise ValueError(f"{what}: {name!r} is missing (NaN) at reservoir ids {bad_ids}")
    return choice


def _num_reservoirs(graph: Any) -> int:
    mask = getattr(graph, "reservoir_mask", None)
    return 0 if mask is None else int(torch.as_tensor(mask).bool().sum())


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
