"""Outputs of a run: the gauge split, metrics per gauge and split, the summary, parameter maps
(one writer for train, export and predict, units from the parameter specs), discharge and plots.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gnnhydro.spec import ParamSpec
from gnnhydro.training.experiment import Experiment

log = logging.getLogger("gnnhydro")

__all__ = [
    "SPLITS",
    "evaluate_model",
    "save_split",
    "summarize_metrics",
    "parameter_recovery",
    "write_parameter_maps",
    "FORMAT_SUFFIX",
]

#: parameter-map formats of ``export.formats`` / ``gnnhydro export format=`` and their suffix
FORMAT_SUFFIX = {"gpkg": "gpkg", "parquet": "parquet", "netcdf": "nc", "csv": "csv"}
_FORMAT_ALIASES = {"nc": "netcdf", "geopackage": "gpkg", "geoparquet": "parquet"}


def parameter_format(fmt: str) -> str:
    """The canonical name of a parameter-map format; raises naming the accepted ones."""
    name = _FORMAT_ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if name not in FORMAT_SUFFIX:
        raise ValueError(
            f"parameter-map format {fmt!r} is not known; choose from {sorted(FORMAT_SUFFIX)}"
        )
    return name


def write_parameter_maps(
    graph: Any,
    params: Mapping[str, Tensor],
    specs: Mapping[str, ParamSpec],
    directory: str | Path,
    formats: Sequence[str] = ("gpkg",),
    *,
    time_axis: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    stem: str = "parameters",
) -> list[Path]:
    """Write the learned parameter maps, one file per format, with units from ``specs``.

    The one writer of parameter maps (training, ``gnnhydro export`` and ``gnnhydro predict``).
    Time-varying parameters ``[N, T, m]`` are mapped as their time mean (netCDF also holds the
    series). A graph without geometry cannot give GeoPackage/GeoParquet: that is an error
    naming the alternatives, not a warning.

    Shapes:
        params[name] ``[N]``, ``[N, m]`` or ``[N, T, m]``; time_axis ``[T]``.
    """
    from gnnhydro import export

    directory = Path(directory)
    values = {name: value.detach().cpu().float() for name, value in params.items()}
    missing = sorted(set(values) - set(specs))
    if missing:
        raise ValueError(f"parameters {missing} have no spec (units): cannot label their maps")
    written = []
    for fmt in dict.fromkeys(parameter_format(f) for f in formats):
        path = directory / f"{stem}.{FORMAT_SUFFIX[fmt]}"
        export.export_parameters(
            graph, values, path, format=fmt, specs=specs, time=time_axis, attrs=attrs
        )
        written.append(path)
    return written


def output_provenance(exp: Experiment, **extra: Any) -> dict[str, Any]:
    """What a file written from a run records: run directory, data root, time written."""
    return {
        "run_dir": str(Path(exp.run_dir).resolve()),
        "data_root": str(exp.cfg.get("data_root", "")),
        "dataset": str(exp.cfg.dataset.get("name", "")),
        "dataset_root": str(exp.cfg.dataset.get("root", "")),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def save_split(exp: Experiment) -> None:
    """``gauges.csv``: every gauge with its role (train / holdout / excluded: downstream of a
    held-out gauge in a downstream-closed fold) and, for held-out gauges, the fraction of their
    upstream area that no training gauge sees; ``gauge_table.csv`` when the parameterizer reads
    the training gauges' context."""
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
    rows += [
        {"gauge_id": exp.gauge_names[i], "node_index": i, "role": "excluded"}
        for i in split.excluded_index.tolist()
    ]
    pd.DataFrame(rows).to_csv(exp.run_dir / "gauges.csv", index=False)
    if exp.gauge_table is not None:
        from gnnhydro.training.gauge_context import save_gauge_table

        save_gauge_table(exp.gauge_table, exp.run_dir)


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
    """Run the model over the whole record; write metrics.csv, parameters, discharge and plots.

    In memory the whole network runs at once and ``discharge.nc`` holds every node (and, with a
    reservoir operator, ``reservoir_storage`` [m³] and ``reservoir_outflow`` [m³/s] of the
    reservoir nodes). With lazy data (``dataset.lazy=true``) the record is streamed
    (:func:`gauge_series_streamed`: memory set by the chunks, not by the network or the record)
    and ``discharge.nc`` holds the gauges.
    """
    from gnnhydro.training.constraints import variable_metrics
    from gnnhydro.training.metrics import compute_metrics

    model.eval()
    gauges_all = exp.graph.gauge_index.long()
    reservoirs = None
    out: dict = {}
    if exp.reader is None:
        record = exp.whole_record()
        with torch.no_grad():
            out = model(record.to(exp.device))
        discharge = out["discharge"].detach().cpu().float()
        simulated, observed = discharge[gauges_all], record.q_obs.float()[gauges_all]
        params = out["params"]
        if "reservoir_storage" in out:
            reservoirs = {k: out[k] for k in RESERVOIR_OUTPUTS}
    else:
        discharge = None
        params, simulated = gauge_series_streamed(exp, model, gauges_all)
        observed = exp.reader.read_discharge(nodes=gauges_all)
    series = GaugeSeries(gauges_all, simulated, observed, discharge)
    rows = []
    for split, (period, role) in SPLITS.items():
        if period not in exp.periods:
            continue
        gauges = exp.split.train_index if role == "train" else exp.split.holdout_index
        if gauges.numel() == 0:
            continue
        p0, p1 = exp.periods[period]
        p0 = max(p0, exp.warmup) if period == "train" else p0
        index = series.rows(gauges)
        obs = observed[index, p0:p1].numpy()
        sim = simulated[index, p0:p1].numpy()
        metrics = compute_metrics(
            observation=obs,
            simulation=sim,
            # neuralhydrology's window: 12 hours, at least 3 steps (3 days for daily data)
            options={"peak_timing": {"window": max(int(43200 // exp.step_seconds), 3)}},
        )
        for k, g in enumerate(gauges.tolist()):
            entry = {
                "gauge_id": exp.gauge_names[g],
                "split": split,
                "node_index": g,
                "n_obs": int(np.isfinite(obs[k]).sum()),
            }
            entry.update({name: float(np.asarray(values)[k]) for name, values in metrics.items()})
            entry["variable"] = "discharge"
            rows.append(entry)
    if out.get("fluxes"):  # observed fluxes/states (obs_<name>), in memory
        rows += variable_metrics(exp, out["fluxes"], SPLITS)
    df = pd.DataFrame(rows)
    _write_outputs(exp, params, series, df, specs=model.param_specs, reservoirs=reservoirs)
    return df


#: reservoir outputs of :class:`~gnnhydro.models.HydroModel` written to ``discharge.nc``
RESERVOIR_OUTPUTS = ("reservoir_index", "reservoir_storage", "reservoir_outflow")


def add_reservoirs_to_discharge(path: Path, graph: Any, reservoirs: Mapping[str, Tensor]) -> None:
    """Add ``reservoir_storage(time, reservoir)`` [m³] (end of each step) and
    ``reservoir_outflow(time, reservoir)`` [m³/s] (release + spill) with ``reservoir_id`` to
    the discharge netCDF at ``path``.

    Shapes:
        reservoir_index ``[R]``; reservoir_storage, reservoir_outflow ``[R, T]``.
    """
    import xarray as xr

    index = reservoirs["reservoir_index"].cpu().long().tolist()
    if not index:
        return
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ids = [graph.node_id[i] for i in index]
    ds = ds.assign_coords(reservoir_id=("reservoir", np.asarray(ids)))
    ds["reservoir_id"].attrs["long_name"] = "node id of the reservoir"
    for name, units, what in (
        ("reservoir_storage", "m3", "reservoir storage at the end of each step"),
        ("reservoir_outflow", "m3 s-1", "reservoir release + spill (the node's discharge)"),
    ):
        values = reservoirs[name].detach().cpu().double().numpy().T  # [T, R]
        ds[name] = (("time", "reservoir"), values, {"units": units, "long_name": what})
    ds.to_netcdf(path)


class GaugeSeries:
    """Simulated and observed discharge ``[G, T]`` m³/s at the gauges ``nodes`` (rows in that
    order), and the whole network's ``[N, T]`` when it was simulated in memory."""

    def __init__(
        self, nodes: Tensor, simulated: Tensor, observed: Tensor, network: Tensor | None
    ) -> None:
        self.nodes, self.simulated, self.observed, self.network = (
            nodes,
            simulated,
            observed,
            network,
        )
        self._row = {int(g): k for k, g in enumerate(nodes.tolist())}

    def rows(self, gauges: Tensor) -> Tensor:
        return torch.tensor([self._row[int(g)] for g in gauges.tolist()], dtype=torch.long)


def gauge_series_streamed(
    exp: Experiment, model: torch.nn.Module, gauges: Tensor
) -> tuple[dict[str, Tensor], Tensor]:
    """The parameters of every node and the simulated discharge ``[G, T]`` m³/s at ``gauges``,
    streamed over the whole record from the experiment's lazy reader."""
    from gnnhydro.models.streaming import stream_discharge

    graph = exp.graph.to(exp.device)
    reader = exp.reader
    simulated = torch.empty(gauges.numel(), len(exp.time))
    index = gauges.to(exp.device)

    def keep(t0: int, q: Tensor) -> None:
        simulated[:, t0 : t0 + q.shape[1]] = q[index].float().cpu()

    params = stream_discharge(
        model,
        graph,
        lambda t0, t1, nodes: reader.read(t0, t1, nodes=nodes),
        reader.forcing_names,
        keep,
        num_steps=len(exp.time),
        time=exp.time,
    )
    return params, simulated


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


def summarize_metrics(
    metrics: pd.DataFrame,
    min_obs: int = 0,
    period_dates: Mapping[str, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Median NSE and KGE per split over the gauges with at least ``min_obs`` valid
    observations in the split's period (``metrics.csv`` keeps every gauge), their count and,
    with ``period_dates`` (split → first, last evaluated date), the dates each split covers."""
    if not len(metrics):
        return pd.DataFrame()
    if "variable" in metrics:  # discharge only (observed fluxes/states have their own rows)
        metrics = metrics[metrics["variable"] == "discharge"]
    kept = metrics[metrics["n_obs"] >= max(int(min_obs), 1)]
    summary = kept.groupby("split")[["nse", "kge"]].median()
    summary["n_gauges"] = kept.groupby("split")["gauge_id"].count()
    if period_dates:
        summary["period_start"] = [period_dates.get(i, ("", ""))[0] for i in summary.index]
        summary["period_end"] = [period_dates.get(i, ("", ""))[1] for i in summary.index]
    return summary


def split_dates(exp: Experiment) -> dict[str, tuple[str, str]]:
    """First and last evaluated date of every split (the training period after the warm-up)."""
    out = {}
    for split, (period, _) in SPLITS.items():
        if period in exp.periods:
            p0, p1 = exp.periods[period]
            p0 = min(max(p0, exp.warmup), p1 - 1) if period == "train" else p0
            out[split] = exp.dates(p0, p1)
    return out


def _write_outputs(
    exp: Experiment,
    params: dict,
    series: GaugeSeries,
    metrics: pd.DataFrame,
    specs: dict,
    reservoirs: Mapping[str, Tensor] | None = None,
) -> None:
    from gnnhydro import export

    run_dir = exp.run_dir
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    summary = summarize_metrics(metrics, min_obs=_min_obs_steps(exp), period_dates=split_dates(exp))
    if len(summary):
        summary.to_csv(run_dir / "metrics_summary.csv")
        print("median metrics per split:\n" + summary.to_string())
    params = dict(params)
    formats = list(exp.cfg.get("export", {}).get("formats", ["gpkg"]) or ["gpkg"])
    if _node_geometry_known(exp.graph):
        formats = ["gpkg", *formats]
    else:
        log.info("the graph has no geometry (neither pos nor geometry): parameter maps as netCDF")
        formats = [f for f in formats if parameter_format(f) not in ("gpkg", "parquet")]
        formats = formats or ["netcdf"]
    formats = list(dict.fromkeys(parameter_format(f) for f in formats))
    log.info("writing parameter maps (%s) and discharge.nc ...", ", ".join(formats))
    provenance = output_provenance(exp)
    write_parameter_maps(
        exp.graph, params, specs, run_dir, formats, time_axis=exp.time, attrs=provenance
    )
    warmup = min(exp.warmup, len(exp.time))
    if series.network is not None:  # every node
        observed = torch.full_like(series.network, float("nan"))
        observed[series.nodes] = series.observed
        export.export_discharge(
            exp.graph,
            series.network,
            exp.time,
            run_dir / "discharge.nc",
            observed=observed,
            warmup_steps=warmup,
            attrs=provenance,
        )
        if reservoirs is not None:
            add_reservoirs_to_discharge(run_dir / "discharge.nc", exp.graph, reservoirs)
    else:  # streamed: the gauges
        export.export_discharge(
            exp.graph.subgraph_nodes(series.nodes),
            series.simulated,
            exp.time,
            run_dir / "discharge.nc",
            observed=series.observed,
            warmup_steps=warmup,
            attrs=provenance,
        )
    out = {"params": params}
    recovery = parameter_recovery(exp, out)
    if recovery is not None:
        recovery.to_csv(run_dir / "parameter_recovery.csv", index=False)
        print("learned vs true parameters (Pearson r):\n" + recovery.to_string(index=False))
    if exp.cfg.get("export", {}).get("plots", True):
        log.info("plotting hydrographs, metric CDFs and parameter maps ...")
        _plots(exp, series, metrics, params, specs)


def _node_geometry_known(graph: Any) -> bool:
    return getattr(graph, "geometry", None) is not None or getattr(graph, "pos", None) is not None


def parameter_recovery(exp: Experiment, out: dict) -> pd.DataFrame | None:
    """Correlation of learned vs true parameter maps (synthetic data), at all nodes and at the
    ungauged nodes (held-out gauges' exclusive areas); a true map that is NaN at some nodes
    (e.g. reservoir parameters, defined at the reservoirs only) is compared where it is known."""
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
        known = ~torch.isnan(t)
        if not known.any():
            continue
        lv, t, free = lv[known], t[known], ungauged[known.to(ungauged.device)].cpu()
        row = {"parameter": name, "r_all": _pearson(lv, t)}
        row["r_ungauged"] = _pearson(lv[free], t[free]) if free.sum() > 2 else math.nan
        row["n_ungauged"] = int(free.sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else math.nan


def _plots(
    exp: Experiment,
    series: GaugeSeries,
    metrics: pd.DataFrame,
    params: dict,
    specs: dict,
) -> None:
    from gnnhydro import plot

    plots = exp.run_dir / "plots"
    plots.mkdir(exist_ok=True)
    if "test" in exp.periods:
        p0, p1 = exp.periods["test"]
        train, held = exp.split.train_index[:6], exp.split.holdout_index[:6]
        gauges = torch.cat([train, held])
        rows = series.rows(gauges)
        plot.plot_hydrographs(
            exp.time[p0:p1],
            series.observed[rows, p0:p1].numpy(),
            series.simulated[rows, p0:p1].numpy(),
            [exp.gauge_names[g] for g in gauges.tolist()],
            plots / "hydrographs_test.png",
            roles=["train"] * train.numel() + ["holdout"] * held.numel(),
        )
    if len(metrics):
        discharge = (
            metrics[metrics["variable"] == "discharge"] if "variable" in metrics else metrics
        )
        plot.plot_metric_cdf(discharge, plots / "nse_cdf.png", metric="nse", by="split")
    if getattr(exp.graph, "pos", None) is not None:
        table = _parameter_table({"params": params})
        for name in list(table)[:20]:
            spec = specs.get(name)
            plot.plot_parameter_map(
                exp.graph,
                table[name],
                name,
                spec.units if spec is not None else "",
                plots / f"map_{name}.png",
                log=spec is not None and plot.spans_decades(spec.low, spec.high),
            )
