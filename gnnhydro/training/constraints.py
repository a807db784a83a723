r"""Multi-variable constraints: losses on simulated fluxes and states besides discharge.

A dataset may carry observations of any flux or state the runoff model simulates — actual
evapotranspiration, snow water equivalent, soil moisture — as node attributes
``obs_<name>`` ``[N, T]`` in the model's units (mm per time step for fluxes, mm for states;
NaN where not observed), ``<name>`` being the model's output name (HBV: ``evapotranspiration``,
``snowpack``, ``soil_moisture``, …). ``trainer.constraints`` adds a weighted, NaN-masked loss
per variable to the discharge loss, as H2CM constrains its hybrid model with several observed
variables::

    trainer.constraints: {evapotranspiration: 0.5, snowpack: {weight: 0.2, loss: kge}}

.. math::
    \mathcal{L} = \mathcal{L}_Q + \sum_v w_v\, \mathcal{L}_v(\hat y_v, y_v)

Each variable's loss (default ``nse``: NSE* with each node's own spread) is taken over the
training nodes that have observations — every node outside the held-out gauges' exclusive
areas, so an ungauged basin's observations never train the model — in the training period
only (the windows), with the warm-up dropped like discharge's. Metrics per variable are rows of
``metrics.csv`` (``variable`` column; discharge rows are ``discharge``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gnnhydro.training.losses import HydroLoss, build_loss

__all__ = [
    "OBS_PREFIX",
    "Constraint",
    "build_constraints",
    "check_constraints",
    "constraint_loss",
    "observed_variables",
    "variable_metrics",
]

#: node attributes ``obs_<name>`` hold observations of the model output ``<name>``
OBS_PREFIX = "obs_"
#: node mask of the nodes whose observations may train the model (set by the experiment)
TRAIN_NODES = "constraint_train_mask"


@dataclass
class Constraint:
    """One observed variable: the model output it constrains, its weight and its loss."""

    variable: str
    weight: float
    loss: HydroLoss

    @property
    def observation(self) -> str:
        return OBS_PREFIX + self.variable


def build_constraints(spec: Mapping[str, Any] | None) -> list[Constraint]:
    """``{name: weight}`` or ``{name: {weight: w, loss: <loss spec>}}`` → constraints (empty for
    ``None``/``{}``); raises ``ValueError`` naming a bad entry."""
    out = []
    for name, value in (spec or {}).items():
        if isinstance(value, Mapping):
            options = dict(value)
            unknown = sorted(set(options) - {"weight", "loss"})
            if unknown:
                raise ValueError(
                    f"trainer.constraints.{name}: unknown key(s) {unknown}; use weight and loss"
                )
            weight, loss = options.get("weight", 1.0), options.get("loss", "nse")
        else:
            weight, loss = value, "nse"
        weight = float(weight)
        if not weight >= 0:
            raise ValueError(f"trainer.constraints.{name}: weight must be >= 0, got {weight}")
        out.append(Constraint(str(name), weight, build_loss(loss)))
    return out


def observed_variables(graph: Any) -> list[str]:
    """Names ``<name>`` of the graph's ``obs_<name>`` attributes."""
    keys = graph.keys() if callable(getattr(graph, "keys", None)) else []
    return sorted(k[len(OBS_PREFIX) :] for k in keys if k.startswith(OBS_PREFIX))


def check_constraints(constraints: list[Constraint], graph: Any, cfg: Any) -> None:
    """One-line ``ValueError`` naming what is missing: the data's ``obs_<name>``, a runoff
    model (routing-only runs simulate no fluxes), or a sampler/setting that does not pass the
    fluxes to the loss."""
    if not constraints:
        return
    names = [c.variable for c in constraints]
    if cfg.model.get("mode") == "routing" or not cfg.model.get("runoff"):
        raise ValueError(
            f"trainer.constraints {names}: a routing-only model simulates no fluxes or states"
        )
    missing = [c.observation for c in constraints if getattr(graph, c.observation, None) is None]
    if missing:
        raise ValueError(
            f"trainer.constraints: the data have no {missing}; observed variables: "
            f"{[OBS_PREFIX + v for v in observed_variables(graph)] or 'none'}"
        )
    if str(cfg.trainer.get("sampler", "windows")) != "windows":
        raise ValueError("trainer.constraints need trainer.sampler=windows")
    if cfg.model.get("runoff", {}).get("checkpoint_nodes"):
        raise ValueError(
            "trainer.constraints need the runoff fluxes: unset model.runoff.checkpoint_nodes"
        )


def constraint_loss(
    constraints: list[Constraint], member: Mapping[str, Any], graph: Any, warmup: int
) -> Tensor | None:
    """``Σ_v w_v L_v`` over the training nodes with observations of ``graph`` for one model
    output ``member`` (None without constraints).

    Shapes: ``member["fluxes"][name]`` and ``graph.obs_<name>`` ``[N, T]``.
    """
    if not constraints:
        return None
    fluxes = member.get("fluxes") or {}
    nodes = getattr(graph, TRAIN_NODES, None)
    total = None
    for c in constraints:
        if c.variable not in fluxes:
            raise ValueError(
                f"trainer.constraints: the runoff model outputs no {c.variable!r}; it has "
                f"{sorted(fluxes)}"
            )
        obs = getattr(graph, c.observation)
        sim = fluxes[c.variable]
        keep = torch.isfinite(obs).any(-1)
        if nodes is not None:
            keep = keep & nodes.to(keep.device)
        term = c.weight * c.loss(
            simulation=sim[keep], observation=obs[keep].to(sim.dtype), warmup_steps=warmup
        )
        total = term if total is None else total + term
    return total


def variable_metrics(
    exp: Any, fluxes: Mapping[str, Tensor], splits: Mapping[str, tuple[str, str]]
) -> list[dict]:
    """``metrics.csv`` rows of every observed variable the model simulates: one per node with
    observations and split (``train*`` periods as for discharge; role ``train``: nodes outside
    the held-out gauges' exclusive areas, ``holdout``: inside them), ``variable`` = its name,
    ``gauge_id`` = the node id.

    Shapes: ``fluxes[name]`` and ``exp.graph.obs_<name>`` ``[N, T]``.
    """
    from gnnhydro.training.metrics import compute_metrics

    graph, rows = exp.graph, []
    node_id = [str(i) for i in graph.node_id]
    held = exp.split.holdout_exclusive.cpu()
    for name in observed_variables(graph):
        if name not in fluxes:
            continue
        obs_all = getattr(graph, OBS_PREFIX + name).detach().cpu().double()
        sim_all = fluxes[name].detach().cpu().double()
        has = torch.isfinite(obs_all).any(-1)
        for split, (period, role) in splits.items():
            if period not in exp.periods:
                continue
            nodes = torch.nonzero(has & (held if role == "holdout" else ~held)).flatten()
            if nodes.numel() == 0:
                continue
            p0, p1 = exp.periods[period]
            p0 = max(p0, exp.warmup) if period == "train" else p0
            obs, sim = obs_all[nodes, p0:p1].numpy(), sim_all[nodes, p0:p1].numpy()
            metrics = compute_metrics(observation=obs, simulation=sim, metrics=["nse", "kge"])
            for k, i in enumerate(nodes.tolist()):
                entry = {"gauge_id": node_id[i], "split": split, "node_index": i}
                entry["n_obs"] = int(torch.isfinite(obs_all[i, p0:p1]).sum())
                entry.update({m: float(v[k]) for m, v in metrics.items()})
                entry["variable"] = name
                rows.append(entry)
    return rows
