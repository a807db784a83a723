"""Export the learned parameter maps and discharge of a trained run, and plot them.

What it shows: after training, a run's model predicts a physical parameter for every reach (by
NAME, in the units of its :class:`~gnnhydro.spec.ParamSpec`) — also for reaches far from any
gauge. This script

1. rebuilds the trained experiment and model from a run directory
   (:func:`gnnhydro.training.run.load_run`) and runs it over the whole record;
2. writes the parameter map with :func:`gnnhydro.export.export_parameters` in every format:
   GeoPackage (``.gpkg``), GeoParquet (``.parquet``), netCDF (``.nc``) and CSV (``.csv`` +
   ``.units.json``) — one row per reach, HBV's parallel stores as ``name_0..`` plus the mean
   ``name``, units in the file metadata — and reads each one back;
3. writes the discharge at the gauges as CF-1.8 netCDF (:func:`gnnhydro.export.export_discharge`);
4. draws parameter maps, test-period hydrographs and the NSE distribution with
   :mod:`gnnhydro.plot`.

The command-line equivalents are ``gnnhydro export run_dir=PATH format=gpkg|parquet|netcdf|csv``
(written into the run directory) and ``gnnhydro evaluate run_dir=PATH``.

Run it::

    python examples/export_parameter_maps.py --run-dir runs/examples/quickstart_synthetic
    python examples/export_parameter_maps.py            # trains a small synthetic run first

Without ``--run-dir`` a small synthetic run is trained into ``<out>/run`` (tiny and one epoch
under ``GNNHYDRO_SMOKE=1``). Outputs in ``--out`` (default ``runs/examples/export_parameter_maps``):
``parameters.{gpkg,parquet,nc,csv}``, ``parameters.units.json``, ``discharge_gauges.nc`` and
``plots/`` (``map_<name>.png``, ``hydrographs.png``, ``nse_cdf.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gnnhydro import export, plot
from gnnhydro.config import compose
from gnnhydro.training.run import load_run, train

SMOKE = os.environ.get("GNNHYDRO_SMOKE", "") not in ("", "0")

#: a small synthetic run (``++`` adds the key when the dataset config does not list it).
SMALL_RUN = [
    "++dataset.num_nodes=30" if SMOKE else "++dataset.num_nodes=120",
    "++dataset.years=3",
    "dataset.periods.train=[2000-01-01,2001-06-30]",
    "dataset.periods.validation=[2001-07-01,2001-12-31]",
    "dataset.periods.test=[2002-01-01,2002-12-31]",
    "dataset.warmup_days=60",
    f"trainer.epochs={1 if SMOKE else 5}",
    "trainer.window_days=120",
    f"trainer.steps_per_epoch={2 if SMOKE else 10}",
    "trainer.batch_size=2",
    "trainer.progress_bar=false",
    "model.runoff.nmul=2",
    "parameterizer.hidden_channels=16",
    "parameterizer.num_layers=2",
    "export.plots=false",
]


def read_back(path: Path) -> pd.DataFrame:
    """Read a parameter map written by :func:`gnnhydro.export.export_parameters`."""
    suffix = path.suffix
    if suffix == ".gpkg":
        import geopandas as gpd

        return gpd.read_file(path, layer="parameters")
    if suffix == ".parquet":
        import geopandas as gpd

        return gpd.read_parquet(path)
    if suffix == ".nc":
        import xarray as xr

        with xr.open_dataset(path) as ds:
            return ds.to_dataframe().reset_index()
    return pd.read_csv(path, dtype={"id": str})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="a trained gnnhydro run")
    parser.add_argument("--out", type=Path, default=Path("runs/examples/export_parameter_maps"))
    parser.add_argument("--maps", type=int, default=4, help="number of parameter maps to draw")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    run_dir = args.run_dir
    if run_dir is None:
        run_dir = args.out / "run"
        print(f"no --run-dir given: training a small synthetic run into {run_dir}")
        cfg = compose([*SMALL_RUN, f"data_root={(args.out / 'data').resolve()}"])
        train(cfg, run_dir)

    exp, model = load_run(run_dir)
    model.eval()
    with torch.no_grad():
        out = model(exp.graph.to(exp.device))
    graph = exp.graph.cpu()
    params = {name: value.detach().cpu() for name, value in out["params"].items()}
    specs = model.param_specs
    discharge = out["discharge"].detach().cpu().float()
    print(
        f"run {run_dir}: {graph.num_nodes} reaches, {len(params)} parameters "
        f"({', '.join(f'{k} [{specs[k].units}]' if k in specs else k for k in params)})"
    )

    # --- parameter maps in every format, read back
    for suffix in ("gpkg", "parquet", "nc", "csv"):
        path = export.export_parameters(
            graph, params, args.out / f"parameters.{suffix}", specs=specs
        )
        table = read_back(path)
        print(f"wrote {path.name:20s} {len(table):5d} rows, {table.shape[1]:3d} columns")
    units = json.loads(export.units_path(args.out / "parameters.csv").read_text())
    print("units (from parameters.units.json):", {k: units[k] for k in list(units)[:6]}, "...")

    # --- discharge at the gauges, CF-1.8 netCDF
    q_path = export.export_discharge(
        graph,
        discharge,
        exp.time,
        args.out / "discharge_gauges.nc",
        observed=graph.q_obs.float(),
        node_subset=graph.gauge_index,
    )
    print(
        f"wrote {q_path.name}: {int(graph.gauge_index.numel())} gauges x {discharge.shape[1]} steps"
    )

    # --- plots: parameter maps, test-period hydrographs, NSE distribution
    plots = args.out / "plots"
    columns, column_units = export.parameter_table(graph, params, specs=specs)
    preferred = ["fc", "beta", "k", "x", "k1", "perc"]  # soil storage, shape, routing, baseflow
    names = [n for n in preferred if n in columns] + [n for n in params if n in columns]
    names = list(dict.fromkeys(names))[: args.maps]
    for name in names:
        plot.plot_parameter_map(
            graph, columns[name], name, column_units[name], plots / f"map_{name}.png"
        )
    period = "test" if "test" in exp.periods else "train"
    p0, p1 = exp.periods[period]
    gauges = torch.cat([exp.split.train_index[:4], exp.split.holdout_index[:2]])
    labels = [
        f"{exp.gauge_names[g]} ({'held out' if g in set(exp.split.holdout_index.tolist()) else 'training'})"
        for g in gauges.tolist()
    ]
    plot.plot_hydrographs(
        exp.time[p0:p1],
        graph.q_obs[gauges, p0:p1].numpy(),
        discharge[gauges, p0:p1].numpy(),
        labels,
        plots / "hydrographs.png",
    )
    metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"gauge_id": str})
    plot.plot_metric_cdf(metrics, plots / "nse_cdf.png", metric="nse", by="split")
    written = sorted(p.name for p in plots.glob("*.png"))
    print(f"wrote {len(written)} plots to {plots}: {written}")
    finite = {n: float(np.nanmean(columns[n])) for n in names}
    print("basin-mean values:", {k: round(v, 4) for k, v in finite.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
