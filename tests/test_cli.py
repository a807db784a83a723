"""End-to-end tests of the ``gnnhydro`` command line on a tiny synthetic basin: train, evaluate,
export, predict, resume, invalid input, and data-parallel (DDP, gloo, 2 processes) training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import torch
import xarray as xr

from tests.tiny import gnnhydro, tiny_run

pytestmark = pytest.mark.slow  # subprocess / CLI tests: pytest -m 'not slow' skips them

TINY = tiny_run(30)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = gnnhydro(
        "train",
        f"run_dir={run_dir}",
        f"dataset.root={data_root}/synthetic",
        "trainer.epochs=2",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_train_writes_the_run_directory(trained_run):
    for name in (
        "config.yaml",
        "provenance.json",
        "train_log.csv",
        "gauges.csv",
        "checkpoints/last.pt",
    ):
        assert (trained_run / name).exists(), name
    assert json.loads((trained_run / "provenance.json").read_text())["pet_method"] == "hargreaves"
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert {"gauge_id", "split", "nse", "kge"} <= set(metrics.columns)
    assert {"test", "test_ungauged", "train"} <= set(metrics["split"])
    held = set(pd.read_csv(trained_run / "gauges.csv").query("role == 'holdout'")["gauge_id"])
    assert set(metrics.query("split == 'test_ungauged'")["gauge_id"]) == held
    assert not set(metrics.query("split == 'test'")["gauge_id"]) & held
    log = pd.read_csv(trained_run / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert np.isfinite(log["train_loss"]).all()


def test_parameters_gpkg_one_row_per_node_with_crs(trained_run):
    import geopandas as gpd

    params = gpd.read_file(trained_run / "parameters.gpkg")
    assert len(params) == 30
    assert params.crs is not None
    for name in ("fc", "beta", "k0", "k", "x"):
        assert name in params.columns
    assert params["fc"].between(50, 1000).all()


def test_discharge_nc_is_cf(trained_run):
    ds = xr.open_dataset(trained_run / "discharge.nc")
    assert "time" in ds.dims
    assert ds["discharge"].attrs["units"] == "m3 s-1"
    assert np.isfinite(ds["discharge"].values).all()


def test_evaluate_and_export(trained_run):
    before = pd.read_csv(trained_run / "metrics.csv")
    result = gnnhydro("evaluate", f"run_dir={trained_run}")
    assert result.returncode == 0, result.stderr[-3000:]
    after = pd.read_csv(trained_run / "metrics.csv")
    pd.testing.assert_frame_equal(before, after, check_exact=False, rtol=1e-4)
    gpkg_before = (trained_run / "parameters.gpkg").read_bytes()
    result = gnnhydro("export", f"run_dir={trained_run}", "format=parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    import pyarrow.parquet as pq

    meta = pq.read_schema(trained_run / "exports" / "parameters.parquet").metadata
    units = json.loads(meta[b"gnnhydro:units"])
    assert units["fc"] == "mm" and units["k"] != ""  # units from the specs, not empty
    assert (trained_run / "parameters.gpkg").read_bytes() == gpkg_before  # the training's own
    result = gnnhydro("export", f"run_dir={trained_run}", "format=parquet")
    assert result.returncode == 2 and "overwrite=true" in result.stderr
    out = trained_run / "elsewhere" / "p.nc"
    result = gnnhydro("export", f"run_dir={trained_run}", "format=netcdf", f"out={out}")
    assert result.returncode == 0 and xr.open_dataset(out)["fc"].attrs["units"] == "mm"
    result = gnnhydro("export", f"run_dir={trained_run}", "format=shapefile")
    assert result.returncode == 2 and "format" in result.stderr


def test_predict_on_an_ungauged_basin(trained_run, tmp_path):
    """Predict on a generic-layout basin that has no observations at all."""
    from gnnhydro.datasets.synthetic import generate_synthetic_basin

    g = generate_synthetic_basin(seed=5, num_nodes=20, years=1)
    raw = tmp_path / "ungauged" / "raw"
    raw.mkdir(parents=True)
    ids = g.node_id
    downstream = [""] * g.num_nodes
    for u, v in g.edge_index.t().tolist():
        downstream[u] = ids[v]
    table = pd.DataFrame(
        {"id": ids, "downstream_id": downstream, "lon": g.pos[:, 0], "lat": g.pos[:, 1]}
    )
    for j, name in enumerate(g.x_names):
        table[name] = g.x[:, j].numpy()
    table.to_csv(raw / "nodes.csv", index=False)
    data = {
        name: (("time", "id"), g.forcing[:, :, k].numpy().T, {"units": unit})
        for k, (name, unit) in enumerate(
            zip(g.forcing_names, ["mm/day", "degC", "mm/day"], strict=True)
        )
    }
    data["discharge"] = (
        ("time", "id"),
        np.full((len(g.time), g.num_nodes), np.nan, np.float32),
        {"units": "m3/s"},
    )
    xr.Dataset(data, coords={"time": g.time, "id": ids}).to_netcdf(raw / "timeseries.nc")
    result = gnnhydro(
        "predict",
        f"run_dir={trained_run}",
        "dataset=generic",
        f"dataset.root={tmp_path / 'ungauged'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = trained_run / "predictions" / "generic"
    ds = xr.open_dataset(out / "discharge.nc")
    assert ds["discharge"].shape == (len(g.time), 20)
    assert np.isfinite(ds["discharge"].values).all()
    assert ds.attrs["gnnhydro_run_dir"] == str(trained_run.resolve())
    record = json.loads((out / "provenance.json").read_text())
    assert record["dataset_root"] == str(tmp_path / "ungauged") and record["written"]
    units = json.loads(
        pyogrio.read_info(out / "parameters.gpkg")["layer_metadata"]["gnnhydro_units"]
    )
    assert units["fc"] == "mm"
    # never silently over an earlier prediction; out= writes where the user says
    again = ["predict", f"run_dir={trained_run}", "dataset=generic"]
    again.append(f"dataset.root={tmp_path / 'ungauged'}")
    result = gnnhydro(*again)
    assert result.returncode == 2 and "overwrite=true" in result.stderr
    result = gnnhydro(*again, f"out={tmp_path / 'mine'}")
    assert result.returncode == 0 and (tmp_path / "mine" / "discharge.nc").exists()


def test_resume_continues_from_last_epoch(trained_run, data_root):
    """Resume reads the run's own config.yaml: none of the training overrides is repeated."""
    result = gnnhydro("train", f"run_dir={trained_run}", "trainer.epochs=3", "trainer.resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    log = pd.read_csv(trained_run / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    assert torch.load(trained_run / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 3


def test_invalid_network_exits_nonzero_naming_ids(tmp_path):
    raw = tmp_path / "bad" / "raw"
    raw.mkdir(parents=True)
    pd.DataFrame(
        {
            "id": [1, 2, 3],
            "downstream_id": [2, 3, 1],
            "area_km2": [1.0, 1.0, 1.0],
            "elev": [1.0, 2.0, 3.0],
        }
    ).to_csv(raw / "nodes.csv", index=False)
    time = pd.date_range("2000-01-01", periods=10)
    ones = np.ones((10, 3), np.float32)
    xr.Dataset(
        {
            "precipitation": (("time", "id"), ones, {"units": "mm/day"}),
            "pet": (("time", "id"), ones, {"units": "mm/day"}),
            "temperature": (("time", "id"), ones, {"units": "degC"}),
            "discharge": (("time", "id"), ones, {"units": "m3/s"}),
        },
        coords={"time": time, "id": [1, 2, 3]},
    ).to_netcdf(raw / "timeseries.nc")
    run_dir = tmp_path / "run"
    result = gnnhydro(
        "train", f"run_dir={run_dir}", "dataset=generic", f"dataset.root={tmp_path / 'bad'}"
    )
    assert result.returncode != 0
    assert "cycle" in result.stderr.lower()
    assert "1" in result.stderr and "2" in result.stderr and "3" in result.stderr
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) <= 2
    assert not run_dir.exists()  # nothing written: not even config.yaml or an empty folder


def test_data_parallel_matches_single_process(tmp_path, data_root):
    """torchrun with 2 gloo processes, each with half the windows, matches one process."""
    common = [
        f"dataset.root={data_root}/synthetic",
        "trainer.epochs=1",
        "trainer.scheduler=none",
        *TINY,
    ]
    common = [c for c in common if not c.startswith("parameterizer.")] + [
        "parameterizer.hidden_channels=16",
        "parameterizer.dropout=0.0",
        "parameterizer.norm=null",
    ]
    single = tmp_path / "single"
    result = gnnhydro("train", f"run_dir={single}", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "gnnhydro",
            "train",
            f"run_dir={ddp}",
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a = torch.load(single / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(ddp / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=2e-4, msg=key)


def test_route_nwm_domain_from_files(shared_data, tmp_path):
    domain = shared_data / "lower_colorado_tx"
    out = tmp_path / "q.nc"
    result = gnnhydro(
        "route",
        f"routelink={domain / 'domain' / 'RouteLink.nc'}",
        f"chrtout={domain / 'channel_forcing'}/*.CHRTOUT_DOMAIN1",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ds = xr.open_dataset(out)
    assert ds["discharge"].shape == (28, 11_248)
    assert ds["discharge"].attrs["units"] == "m3 s-1"
    # independent check at the outlet: routed volume ≈ lateral volume entering the network
    # cannot hold over 28 hours (travel times are days), but discharge must be finite and >= 0
    assert np.isfinite(ds["discharge"].values).all()
    result = gnnhydro("route", f"rapid_connect={tmp_path / 'missing.csv'}", f"out={out}")
    assert result.returncode == 2 and "k" in result.stderr


def test_multirun_sweep(tmp_path, data_root):
    """hydra multirun: one run directory per job, each complete."""
    run_dir = tmp_path / "sweep"
    result = gnnhydro(
        "train",
        "-m",
        "parameterizer=sage,mlp",
        f"run_dir={run_dir}",
        f"dataset.root={data_root}/synthetic",
        "trainer.epochs=1",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        metrics = pd.read_csv(tmp_path / "sweep_multirun" / job / "metrics.csv")
        assert {"gauge_id", "split", "nse", "kge"} <= set(metrics.columns)
    from omegaconf import OmegaConf

    names = {
        OmegaConf.load(tmp_path / "sweep_multirun" / job / "config.yaml").parameterizer.name
        for job in ("0", "1")
    }
    assert names == {"sage", "mlp"}
    summary = pd.read_csv(tmp_path / "sweep_multirun" / "summary.csv")
    assert summary["overrides"].str.contains("parameterizer=sage").sum() == 1
    assert summary["overrides"].str.contains("parameterizer=mlp").sum() == 1
    for job in (0, 1):
        own = pd.read_csv(tmp_path / "sweep_multirun" / str(job) / "metrics_summary.csv")
        row = summary.set_index("job").loc[job]
        assert row["test_median_nse"] == pytest.approx(own.set_index("split").loc["test", "nse"])


def test_ensemble_run_trains_evaluates_and_predicts(tmp_path, data_root):
    """``model.ensemble=2``: one run directory, one checkpoint holding both members; evaluate
    and predict rebuild the ensemble from it."""
    run_dir = tmp_path / "ens"
    result = gnnhydro(
        "train",
        f"run_dir={run_dir}",
        f"dataset.root={data_root}/synthetic",
        "trainer.epochs=1",
        "model.ensemble=2",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)["model"]
    assert any(k.startswith("members.1.parameterizer") for k in state)
    first = pd.read_csv(run_dir / "metrics.csv")
    result = gnnhydro("evaluate", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv"), first)
