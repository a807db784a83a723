"""``gnnhydro cv``: options, the summary (medians of gauge scores, bootstrap intervals, paired
differences) against hand computations, and one small cross-validation end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gnnhydro.training.cv import (
    CVOptions,
    _command,
    _runs,
    bootstrap_median,
    run_environment,
    summarize_cv,
)


def test_options_defaults_and_errors():
    options = CVOptions.parse(["folds=3", "seeds=2", "parameterizers=[mlp,global]", "jobs=1"])
    assert options.seeds == (0, 1) and options.parameterizers == ("mlp", "global")
    assert CVOptions.parse(["seeds=[3,7]"]).seeds == (3, 7)
    assert CVOptions.parse(["parameterizers=[regional,regional_proximity]"]).parameterizers == (
        "regional",
        "regional_proximity",
    )  # a parameterizer config (preset) that is a variant of a registered parameterizer
    with pytest.raises(ValueError, match="unknown \\['sage2'\\]"):
        CVOptions.parse(["parameterizers=[mlp,sage2]"])
    with pytest.raises(ValueError, match="unknown cv option"):
        CVOptions.parse(["fold=3"])
    with pytest.raises(ValueError, match="at least 2"):
        CVOptions.parse(["folds=1"])


def test_only_folds_runs_a_part_of_the_same_folds(tmp_path):
    """``cv.only_folds`` picks folds of the same ``cv.folds`` split (their run folders are the
    full cross-validation's, so a later call reuses them); folds outside it are refused."""
    whole = _runs(tmp_path, CVOptions.parse(["folds=5", "seeds=2", "parameterizers=[mlp]"]))
    part = _runs(tmp_path, CVOptions.parse(["folds=5", "seeds=2", "only_folds=[3,1]"]))
    assert [(r.seed, r.fold) for r in part if r.parameterizer == "mlp"] == [
        (0, 3),
        (0, 1),
        (1, 3),
        (1, 1),
    ]
    assert {r.run_dir for r in part if r.parameterizer == "mlp"} < {r.run_dir for r in whole}
    assert "dataset.holdout.k=5" in _command(part[0], [], CVOptions.parse(["folds=5"]))
    assert [r.fold for r in _runs(tmp_path, CVOptions.parse(["only_folds=2"]))][:1] == [2]
    for bad in ("[5]", "[1,1]", "[]", "[-1]"):
        with pytest.raises(ValueError, match="cv.only_folds must name distinct folds of 0..4"):
            CVOptions.parse(["folds=5", f"only_folds={bad}"])


def test_each_run_gets_its_share_of_the_cores():
    options = CVOptions.parse(["threads=1", "jobs=2"])
    env = run_environment(options)
    # torch's threads and the CPU kernels' pool alike: two runs side by side on two cores do
    # not each split their kernels over both
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == "1"
    assert run_environment(CVOptions.parse(["threads=2"]))["NUMBA_NUM_THREADS"] == "2"


def test_runs_skip_their_plots_unless_asked(tmp_path):
    """A fold run draws no plots by default; ``cv.plots=true`` or the user's own
    ``export.plots=`` override keeps them (and the user's value is not overridden)."""
    run = _runs(tmp_path, CVOptions.parse(["folds=2"]))[0]
    assert "export.plots=false" in _command(run, ["trainer.epochs=1"], CVOptions.parse([]))
    assert not any("export.plots" in a for a in _command(run, [], CVOptions.parse(["plots=true"])))
    cmd = _command(run, ["export.plots=true"], CVOptions.parse([]))
    assert [a for a in cmd if "export.plots" in a] == ["export.plots=true"]


def test_summary_medians_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    gauges = [f"g{i}" for i in range(30)]
    base = rng.uniform(0.3, 0.8, 30)
    rows = []
    for seed in (0, 1, 2):
        for k, g in enumerate(gauges):
            rows.append(("mlp", seed, k % 3, g, "test_ungauged", base[k] + 0.01 * seed, 0.5, 365))
            rows.append(
                (
                    "regional",
                    seed,
                    k % 3,
                    g,
                    "test_ungauged",
                    base[k] + 0.05 + 0.01 * seed,
                    0.6,
                    365,
                )
            )
    rows.append(("regional", 0, 0, "short", "test_ungauged", -5.0, -5.0, 10))  # too few days
    metrics = pd.DataFrame(
        rows, columns=["parameterizer", "seed", "fold", "gauge_id", "split", "nse", "kge", "n_obs"]
    )
    summary = summarize_cv(metrics, ("mlp", "regional"), min_obs=300, draws=500).set_index(
        "parameterizer"
    )
    # a gauge's score: its median over seeds (seed 1 here)
    assert summary.loc["mlp", "median_nse"] == pytest.approx(np.median(base + 0.01))
    assert summary.loc["regional", "median_nse"] == pytest.approx(np.median(base + 0.06))
    assert summary.loc["regional", "n_gauges"] == 30
    assert summary.loc["regional", "median_nse_diff"] == pytest.approx(0.05)
    assert summary.loc["regional", "diff_ci_low"] == pytest.approx(0.05)  # every gauge +0.05
    low, high = summary.loc["mlp", ["nse_ci_low", "nse_ci_high"]]
    assert low < np.median(base + 0.01) < high
    assert np.isnan(summary.loc["mlp", "median_nse_diff"])
    # the bootstrap interval of the median narrows with more gauges
    wide = np.subtract(*bootstrap_median(rng.normal(size=20), 1000)[::-1])
    narrow = np.subtract(*bootstrap_median(rng.normal(size=2000), 1000)[::-1])
    assert narrow < 0.4 * wide


def test_cv_refuses_overrides_it_sets_itself(tmp_path):
    from gnnhydro.training.cv import run_cv

    with pytest.raises(ValueError, match="cv sets parameterizer"):
        run_cv(["parameterizer=mlp", f"run_dir={tmp_path}"])
    with pytest.raises(ValueError, match="cv sets dataset.holdout.k"):
        run_cv(["dataset.holdout.k=3", f"run_dir={tmp_path}"])
    with pytest.raises(ValueError, match="run_dir"):
        run_cv(["trainer.epochs=1"])
    # a parameterizer option is the user's, checked against every parameterizer of the cv
    with pytest.raises(ValueError, match="proximity"):
        run_cv(["parameterizer.proximity=true", "cv.parameterizers=[mlp]", f"run_dir={tmp_path}"])


@pytest.mark.slow
def test_cv_command_end_to_end(tmp_path):
    root = tmp_path / "cv"
    argv = [
        sys.executable, "-m", "gnnhydro", "cv",
        f"data_root={tmp_path / 'data'}", "dataset.num_nodes=60", "dataset.years=3",
        "dataset.periods.train=[2000-01-01,2001-06-30]", "dataset.periods.validation=null",
        "dataset.periods.test=[2001-07-01,2002-12-31]", "dataset.warmup_days=60",
        "trainer.epochs=1", "trainer.steps_per_epoch=2", "model.runoff.nmul=1", "export.plots=false",
        "cv.folds=2", "cv.parameterizers=[mlp,regional]", f"run_dir={root}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = pd.read_csv(root / "cv_metrics.csv")
    assert list(metrics.columns[:7]) == [
        "parameterizer",
        "seed",
        "fold",
        "gauge_id",
        "split",
        "nse",
        "kge",
    ]
    summary = pd.read_csv(root / "cv_summary.csv")
    assert {
        "parameterizer",
        "split",
        "median_nse",
        "median_kge",
        "nse_ci_low",
        "nse_ci_high",
        "n_gauges",
    } <= set(summary.columns)
    held = metrics[metrics["split"] == "test_ungauged"]
    # every gauge held out exactly once per parameterizer and seed
    assert (
        held.groupby("parameterizer")["gauge_id"].apply(lambda s: s.is_unique and len(s)).min() > 0
    )
    assert set(held[held.parameterizer == "mlp"]["gauge_id"]) == set(
        held[held.parameterizer == "regional"]["gauge_id"]
    )
    for run in ("mlp/seed0/fold0", "regional/seed0/fold1"):
        assert (root / run / "config.yaml").exists() and (root / run / "metrics.csv").exists()
    assert (root / "regional/seed0/fold0/gauge_table.csv").exists()
    assert (root / "cv_nse_cdf.png").exists()
    # a second call reuses the finished runs
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 done" in again.stdout + again.stderr
