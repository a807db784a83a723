"""Smoke tests of the runnable scripts in ``examples/``.

Each script runs in a subprocess with ``GNNHYDRO_SMOKE=1`` (tiny sizes, one epoch), writes into
a temporary ``--out`` folder, must exit with status 0 and produce its key output. The DRB and
NWM examples need the real data in ``<repo>/../shared/data`` and are skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # subprocess / CLI tests: pytest -m 'not slow' skips them

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

#: script -> (shared data sub-folder it needs or None, text its stdout must contain,
#:            files (relative to --out) it must write)
CASES: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "quickstart_synthetic.py": (
        None,
        "median NSE / KGE per split",
        ("metrics.csv", "parameter_recovery.csv", "checkpoints/last.pt"),
    ),
    "drb_regionalization.py": (
        "drb_2yr",
        "median NSE / KGE in the test period",
        ("comparison.csv", "drb_gnn/metrics.csv", "drb_mlp/metrics.csv"),
    ),
    "route_nwm_lower_colorado.py": (
        "lower_colorado_tx",
        "gnnhydro Muskingum vs NWM streamflow",
        ("hydrographs.png", "comparison.csv", "discharge.csv"),
    ),
    "custom_irf.py": (
        None,
        "gradcheck (float64) on the outlet hydrograph: passed",
        ("custom_irf.png", "checks.txt"),
    ),
    "export_parameter_maps.py": (
        None,
        "wrote parameters.gpkg",
        (
            "parameters.gpkg",
            "parameters.parquet",
            "parameters.nc",
            "parameters.csv",
            "parameters.units.json",
            "discharge_gauges.nc",
            "plots/hydrographs.png",
            "plots/nse_cdf.png",
        ),
    ),
}


def run_example(
    script: str, out: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GNNHYDRO_SMOKE": "1",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=out.parent,  # anything written relative to the working directory stays in tmp
    )


def test_every_example_is_smoke_tested_and_listed():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(CASES), "add new examples to CASES in tests/test_examples.py"
    readme = (EXAMPLES / "README.md").read_text()
    for name in scripts:
        assert name in readme, f"{name} is not listed in examples/README.md"
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""'), f"{name} has no module docstring"
        assert 'if __name__ == "__main__":' in text, f"{name} has no main guard"


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script: str, tmp_path: Path):
    data, expected_text, expected_files = CASES[script]
    if data is not None and not (SHARED_DATA / data).is_dir():
        pytest.skip(
            f"{script} needs the real data {SHARED_DATA / data} (../shared/data next to the repository)"
        )
    out = tmp_path / "out"
    result = run_example(script, out)
    log = f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    assert result.returncode == 0, log
    assert expected_text in result.stdout, log
    for name in expected_files:
        assert (out / name).is_file(), f"{script} did not write {name}\n{log}"
    CHECKS.get(script, lambda out: None)(out)


def _check_drb(out: Path) -> None:
    """Both models in the table, evaluated on the same held-out gauges."""
    table = pd.read_csv(out / "comparison.csv", index_col="model")
    assert list(table.index) == ["drb_gnn", "drb_mlp"]
    assert (table["ungauged_n"] > 0).all() and (table["gauged_n"] > 0).all()
    held = [
        set(
            pd.read_csv(out / m / "gauges.csv", dtype={"gauge_id": str}).query("role == 'holdout'")[
                "gauge_id"
            ]
        )
        for m in ("drb_gnn", "drb_mlp")
    ]
    assert held[0] == held[1] and held[0]


def _check_quickstart(out: Path) -> None:
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"test", "test_ungauged"} <= set(metrics["split"])
    recovery = pd.read_csv(out / "parameter_recovery.csv")
    assert {"k", "x", "fc"} <= set(recovery["parameter"])


def _check_export(out: Path) -> None:
    import geopandas as gpd
    import xarray as xr

    gpkg = gpd.read_file(out / "parameters.gpkg", layer="parameters")
    csv = pd.read_csv(out / "parameters.csv", dtype={"id": str})
    assert len(gpkg) == len(csv) == 30  # the smoke run's 30 reaches, one row each
    assert gpkg.crs is not None
    with xr.open_dataset(out / "parameters.nc") as ds:
        assert ds["fc"].attrs["units"] == "mm"
    with xr.open_dataset(out / "discharge_gauges.nc") as ds:
        assert ds["discharge"].attrs["units"] == "m3 s-1"


def _check_nwm(out: Path) -> None:
    table = pd.read_csv(out / "comparison.csv")
    assert table.loc[0, "role"] == "outlet"
    wet = table[table["nwm_mean_m3s"] >= 10.0]
    # the large gauges follow NWM's streamflow (same lateral inflow, warm-started state)
    assert len(wet) >= 5 and wet["volume_diff_pct"].abs().median() < 25.0


CHECKS = {
    "drb_regionalization.py": _check_drb,
    "quickstart_synthetic.py": _check_quickstart,
    "export_parameter_maps.py": _check_export,
    "route_nwm_lower_colorado.py": _check_nwm,
}


def test_drb_skips_cleanly_without_data(tmp_path: Path):
    """No local copy, nothing in the dataset root and no download allowed: exit 0, a message."""
    out = tmp_path / "out"
    result = run_example(
        "drb_regionalization.py", out, "--data", str(tmp_path / "missing"), "--offline"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "skipping" in result.stdout
    assert not (out / "drb_gnn").exists()


def test_nwm_skips_cleanly_without_data(tmp_path: Path):
    out = tmp_path / "out"
    result = run_example("route_nwm_lower_colorado.py", out, "--data", str(tmp_path / "missing"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "skipping" in result.stdout
