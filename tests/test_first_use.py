"""A new user's first runs through the command line: their own catchments without temperature,
failures that leave nothing behind, safe run directories, Ctrl-C and resume, help and keys,
CAMELS-US from its own files, and the package installed from a wheel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.test_cli import gnnhydro

pytestmark = pytest.mark.slow  # subprocess / CLI tests

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "trainer.epochs=1",
    "trainer.steps_per_epoch=2",
    "trainer.batch_size=2",
    "trainer.window_days=150",
    "trainer.progress_bar=false",
    "dataset.warmup_days=60",
    "model.runoff.nmul=2",
    "parameterizer.hidden_channels=8",
    "export.plots=false",
]


def write_catchments(root: Path, *, isolated: bool, n: int = 6, years: int = 3) -> Path:
    """A user's own data in the generic layout: precipitation, PET and discharge, no
    temperature; a chain of catchments, or isolated ones (each its own outlet)."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(n)]
    downstream = ["" if isolated or i == n - 1 else ids[i + 1] for i in range(n)]
    area = rng.uniform(50, 200, n)
    pd.DataFrame(
        {
            "id": ids,
            "downstream_id": downstream,
            "area_km2": area,
            "elevation": rng.uniform(100, 900, n),
            "forest": rng.uniform(0, 1, n),
            "lat": 45 + rng.uniform(0, 1, n),
            "lon": 5 + rng.uniform(0, 1, n),
        }
    ).to_csv(raw / "nodes.csv", index=False)
    time_axis = pd.date_range("2000-01-01", periods=365 * years)
    season = np.sin(2 * np.pi * (time_axis.day_of_year.values - 80) / 365)
    precip = rng.gamma(0.6, 6.0, (len(time_axis), n)).astype("float32")
    pet = np.repeat((2 + 1.5 * season)[:, None], n, axis=1).astype("float32")
    kernel = np.exp(-np.arange(30) / 8) / 8
    q = np.stack(
        [
            np.convolve(np.maximum(precip[:, j] - pet[:, j], 0) * 0.4, kernel)[: len(time_axis)]
            * area[j]
            / 86.4
            for j in range(n)
        ],
        axis=1,
    ).astype("float32")
    xr.Dataset(
        {
            "precipitation": (("time", "id"), precip, {"units": "mm/day"}),
            "pet": (("time", "id"), pet, {"units": "mm/day"}),
            "discharge": (("time", "id"), q, {"units": "m3/s"}),
        },
        coords={"time": time_axis, "id": ids},
    ).to_netcdf(raw / "timeseries.nc")
    return root


@pytest.mark.parametrize("layout", ["network", "isolated"])
def test_own_catchments_without_temperature_train(tmp_path, layout):
    data = write_catchments(tmp_path / "mine", isolated=layout == "isolated")
    run_dir = tmp_path / "run"
    result = gnnhydro(
        "train", f"run_dir={run_dir}", "dataset=generic", f"dataset.root={data}", *SMALL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "provenance.json").read_text())
    assert "no temperature" in record["assumptions"]
    assert "all precipitation is liquid" in record["assumptions"]["no temperature"]
    assert "no temperature" in (run_dir / "train.log").read_text()
    assert record["command"].startswith("gnnhydro train run_dir=")
    assert record["data_root"] and record["periods"]["train"][0] == "2000-01-01"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["nse"].notna().all()
    # the automatic split is said as dates
    assert "automatic split" in (run_dir / "train.log").read_text()


def test_failed_runs_leave_nothing_and_old_runs_are_kept(tmp_path):
    data = write_catchments(tmp_path / "mine", isolated=True)
    common = ["dataset=generic", f"dataset.root={data}", *SMALL]
    run_dir = tmp_path / "run"
    result = gnnhydro("train", f"run_dir={run_dir}", "device=cuda", *common)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("gnnhydro train: error: device=cuda")
    assert not run_dir.exists()
    result = gnnhydro("train", f"run_dir={run_dir}", "device=gpu", *common)
    assert result.returncode == 2 and "'gpu' is not known" in result.stderr
    assert not run_dir.exists()
    # a finished run; a new run into it is refused and changes nothing
    assert gnnhydro("train", f"run_dir={run_dir}", *common).returncode == 0
    (run_dir / "predictions").mkdir()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = gnnhydro("train", f"run_dir={run_dir}", *common)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    # explicitly overwriting replaces the old run: its leftovers are gone
    result = gnnhydro("train", f"run_dir={run_dir}", "overwrite=true", "seed=3", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / "predictions").exists()
    record = json.loads((run_dir / "provenance.json").read_text())
    assert "seed=3" in record["command"]


def test_ctrl_c_says_how_to_resume_and_resume_finishes(tmp_path):
    data = write_catchments(tmp_path / "mine", isolated=True)
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "gnnhydro", "train", f"run_dir={run_dir}", "dataset=generic"]
    args += [f"dataset.root={data}", *SMALL, "trainer.epochs=400", "trainer.steps_per_epoch=1"]
    args += ["trainer.early_stopping_patience=0"]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        # as from a terminal: a shell's background job (CI started with `&`) ignores SIGINT, and
        # a child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = run_dir / "train_log.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert "trainer.resume=true" in last and str(run_dir) in last
    assert "Traceback" not in stderr
    done = len(pd.read_csv(log))
    result = gnnhydro(
        "train", f"run_dir={run_dir}", "trainer.resume=true", f"trainer.epochs={done + 1}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_csv(log)["epoch"].tolist() == list(range(1, done + 2))


def test_every_command_answers_help_and_rejects_unknown_keys(tmp_path):
    for command in ("train", "evaluate", "predict", "export", "route"):
        result = gnnhydro(command, "--help")
        assert result.returncode == 0 and f"gnnhydro {command}" in result.stdout, command
    top = gnnhydro("--help")
    assert top.returncode == 0 and "evaluate" in top.stdout and ".. code-block" not in top.stdout
    version = gnnhydro("--version")
    import gnnhydro as package

    assert version.returncode == 0 and version.stdout.strip() == f"gnnhydro {package.__version__}"
    cases = {
        ("export", "run_dir=x", "formt=csv"): "did you mean 'format'",
        ("route", "foo=1", "out=q.nc"): "unknown key 'foo'",
        ("evaluate", "run_dir=x", "out=y"): "unknown key 'out'",
        ("train", f"run_dir={tmp_path / 'r'}", "+trainer.epoch=2"): "did you mean 'trainer.epochs'",
        ("predict", "run_dir=x", "dataset=generic", "trainer.epochs=1"): "unknown key",
    }
    for args, message in cases.items():
        result = gnnhydro(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    missing = gnnhydro("evaluate", f"run_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and str(tmp_path / "nothing") in missing.stderr


def test_camels_us_on_its_own_files(shared_data, tmp_path):
    run_dir = tmp_path / "run"
    result = gnnhydro(
        "train",
        f"run_dir={run_dir}",
        "dataset=camels_us",
        f"dataset.root={tmp_path / 'camels'}",
        f"dataset.source_dir={shared_data / 'camels_us'}",
        "model=hbv_lumped",
        "parameterizer=mlp",
        *[a for a in SMALL if not a.startswith("model.")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"gauge_id": str})
    assert metrics["gauge_id"].nunique() >= 2


def test_wheel_installs_and_trains_from_an_unrelated_directory(tmp_path):
    """``pip wheel`` → a fresh venv (dependencies from the test environment, the package only
    from the wheel) → ``gnnhydro train trainer.epochs=1`` in an empty folder."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w"]
        + [str(wheels), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("gnnhydro-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "gnnhydro/conf/config.yaml" in names and "gnnhydro/conf/trainer/default.yaml" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies of this test environment, without its (editable) gnnhydro
    here = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "deps.pth").write_text("\n".join(here) + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"GNNHYDRO_DATA_ROOT": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"})
    where = subprocess.run(
        [str(python), "-c", "import gnnhydro; print(gnnhydro.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert where.stdout.startswith(site), where.stdout + where.stderr  # the wheel's copy
    train = subprocess.run(
        [str(venv / "bin" / "gnnhydro"), "train", "trainer.epochs=1", "trainer.steps_per_epoch=2"]
        + ["dataset.num_nodes=20", "dataset.years=2", "trainer.progress_bar=false"]
        + ["dataset.periods.train=[2000-01-01,2000-12-31]", "dataset.periods.validation=null"]
        + ["dataset.periods.test=[2001-01-01,2001-12-31]", "dataset.warmup_days=60"]
        + ["export.plots=false", "trainer.window_days=120"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    (run,) = (work / "runs").iterdir()
    assert (run / "metrics.csv").exists() and (run / "parameters.gpkg").exists()
    assert (tmp_path / "data" / "synthetic").is_dir()  # the data root outside any checkout
    # ... and on the user's own catchments without temperature
    mine = write_catchments(tmp_path / "mine", isolated=True)
    own = subprocess.run(
        [str(venv / "bin" / "gnnhydro"), "train", "dataset=generic", f"dataset.root={mine}"]
        + ["run_dir=own", *SMALL],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=900,
    )
    assert own.returncode == 0, own.stderr[-3000:]
    record = json.loads((work / "own" / "provenance.json").read_text())
    assert "no temperature" in record["assumptions"]
