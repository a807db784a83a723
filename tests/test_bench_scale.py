"""``gnnhydro bench scale``: the public contract (flags, JSON keys) for prediction and training on
a small synthetic continent; the figures themselves are the bench's job, not a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocesses


def _bench(*args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gnnhydro", "bench", "scale", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )


def test_bench_scale_predict_and_train_write_the_contract_json(tmp_path):
    out = tmp_path / "predict.json"
    done = _bench(
        "--nodes", "1500", "--years", "2", "--nmul", "2", "--gauges", "12", "--json", str(out),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "predict" and figures["nodes"] == 1500 and figures["steps"] == 731
    assert figures["reach_steps_per_s"] == pytest.approx(1500 * 731 / figures["seconds"], rel=0.02)
    assert 0 < figures["peak_rss_gb"] < 24
    assert "reach-steps/s" in done.stdout and "target" in done.stdout

    out = tmp_path / "train.json"
    done = _bench(
        "--train", "--nodes", "1500", "--gauges", "12", "--years", "2", "--nmul", "2",
        "--json", str(out), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "train" and figures["nodes"] == 1500 and figures["gauges"] == 12
    assert figures["steps"] == 730 and figures["seconds_per_epoch"] == figures["seconds"] > 0
    assert set(figures) >= {"mode", "nodes", "steps", "seconds", "peak_rss_gb"}

    done = _bench("--train", "--nodes", "1500", "--years", "1", tmp_path=tmp_path)
    assert done.returncode == 2 and "--years >= 2" in done.stdout
    done = _bench("--nodes", "50", "--years", "1", tmp_path=tmp_path)
    assert done.returncode == 2 and "num_nodes >= 100" in done.stderr
    assert "Traceback" not in done.stderr
