"""GNN vs MLP regionalization on the Delaware River Basin (DRB): does the river topology help?

What it shows: the ablation pair of ``gnnhydro/conf/experiment/`` — ``drb_gnn`` (a GraphSAGE
parameterizer passing messages along the river network) and ``drb_mlp`` (the same inputs, heads,
HBV runoff and Muskingum routing, but no message passing) — trained on the USGS National
Hydrologic Model DRB domain (456 river segments, 1979–1980, daily), and a comparison table of the
median NSE and KGE

* at the **training gauges** in the test year (split ``test``), and
* at **held-out gauges** never seen in training (split ``test_ungauged``: prediction in
  ungauged catchments; 30 % of the gauges, the same ones for both models: ``dataset.holdout``).

Data: pywatershed ``test_data/drb_2yr`` (CC0). By default the files are copied from
``<repo>/../shared/data/drb_2yr`` when that folder exists (``--data`` to change it; passed to the
dataset as ``dataset.source_dir``), otherwise :class:`gnnhydro.datasets.DelawareRiverBasin`
downloads them from GitHub. Without the data and without network the script prints a message
and exits with status 0.

Run it::

    python examples/drb_regionalization.py                        # 40 epochs each (config)
    python examples/drb_regionalization.py trainer.epochs=10      # extra hydra overrides
    python examples/drb_regionalization.py --models drb_gnn drb_mlp --out runs/drb_ablation

Under ``GNNHYDRO_SMOKE=1``: one epoch of one step each, small networks, data under ``<out>/data``.

Outputs in ``--out`` (default ``runs/examples/drb_regionalization``): one run directory per model
(``drb_gnn/``, ``drb_mlp/``: config, checkpoints, metrics.csv, parameters.gpkg, ...) and
``comparison.csv`` (the printed table).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from gnnhydro.config import compose
from gnnhydro.training.run import train

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "drb_2yr").resolve()
SMOKE = os.environ.get("GNNHYDRO_SMOKE", "") not in ("", "0")

SMOKE_OVERRIDES = [
    "trainer.epochs=1",
    "trainer.steps_per_epoch=1",
    "trainer.progress_bar=false",
    "model.runoff.nmul=2",
    "parameterizer.hidden_channels=16",
    "parameterizer.num_layers=2",
    "export.plots=false",
]


def network_available(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers within ``timeout`` seconds (a quick check before downloading)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - fixed https URL
            return True
    except Exception:
        return False


def compare(run_dirs: dict[str, Path]) -> pd.DataFrame:
    """Median NSE/KGE per model at training gauges (``test``) and held-out gauges (``test_ungauged``)."""
    rows = []
    for model, run_dir in run_dirs.items():
        metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"gauge_id": str})
        row: dict[str, object] = {"model": model}
        for split, label in (("test", "gauged"), ("test_ungauged", "ungauged")):
            part = metrics[metrics["split"] == split]
            row[f"{label}_n"] = int(part["gauge_id"].nunique())
            row[f"{label}_nse"] = float(part["nse"].median()) if len(part) else float("nan")
            row[f"{label}_kge"] = float(part["kge"].median()) if len(part) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="local copy of drb_2yr")
    parser.add_argument("--out", type=Path, default=Path("runs/examples/drb_regionalization"))
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="dataset root folder (default: the config's data_root; <out>/data under GNNHYDRO_SMOKE=1)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="never download: skip when the data are not local"
    )
    parser.add_argument("--models", nargs="+", default=["drb_gnn", "drb_mlp"], help="experiments")
    parser.add_argument("overrides", nargs="*", help="hydra overrides for both runs")
    args = parser.parse_args(argv)

    common: list[str] = list(SMOKE_OVERRIDES) if SMOKE else []
    data_root = args.data_root or (args.out / "data" if SMOKE else None)
    if data_root is not None:
        common.append(f"data_root={data_root.resolve()}")
    if args.data.is_dir():
        common.append(f"++dataset.source_dir={args.data.resolve()}")
        print(f"DRB data: copied from {args.data}")
    else:
        from gnnhydro.datasets.drb import PYWATERSHED_URL

        probe = compose([f"experiment={args.models[0]}", *common]).dataset.root
        have_raw = (Path(probe) / "raw" / "drb_2yr_gage_poi_obs.nc").exists()
        if not have_raw and (args.offline or not network_available(PYWATERSHED_URL + "prcp.nc")):
            print(
                f"skipping: DRB data not found at {args.data} nor in {probe}/raw, and "
                f"{'--offline was given' if args.offline else PYWATERSHED_URL + ' cannot be reached'}; "
                "pass --data PATH to a local drb_2yr copy"
            )
            return 0
        print(
            f"DRB data: {'found in ' + probe + '/raw' if have_raw else 'downloading from ' + PYWATERSHED_URL}"
        )

    run_dirs: dict[str, Path] = {}
    for model in args.models:
        cfg = compose([f"experiment={model}", *common, *args.overrides])
        print(f"\n=== {model}: parameterizer {cfg.parameterizer.name}, {cfg.trainer.epochs} epochs")
        try:
            run_dirs[model] = train(cfg, args.out / model)
        except RuntimeError as err:
            if "could not download" in str(err):
                print(f"skipping: {err}")
                return 0
            raise

    table = compare(run_dirs)
    table.to_csv(args.out / "comparison.csv")
    pd.set_option("display.width", 120)
    print(
        "\nmedian NSE / KGE in the test period: training gauges (gauged) vs held-out gauges (ungauged)"
    )
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nwrote {args.out / 'comparison.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
