"""``gnnhydro cv``: k-fold spatial cross-validation over gauges, several parameterizers and
seeds in one command, with bootstrap confidence intervals.

Every (parameterizer, seed, fold) is an ordinary training run (``gnnhydro train`` in a process
of its own, ``<run_dir>/<parameterizer>/seed<S>/fold<F>``) that trains on its fold's training
gauges only; runs go in parallel up to ``cv.jobs`` processes of ``cv.threads`` torch threads.
On Linux each parallel slot is a warm worker that imports gnnhydro once and forks every run
(:mod:`gnnhydro.training.workers`), so runs skip the ~8 s of imports a new process pays.
A finished run (its ``metrics.csv`` exists) is reused, so an interrupted cross-validation
continues where it stopped. The folds are the same for every parameterizer and seed
(``cv.fold_seed``), so parameterizers are compared gauge by gauge. ``cv.only_folds=[0,1]`` runs
and summarises only those folds of the ``cv.folds``: a long cross-validation in parts, which a
last call without it (every run then reused) summarises whole.

Outputs in ``run_dir``:

* ``cv_metrics.csv``: one row per parameterizer × seed × fold × gauge × split
  (``parameterizer, seed, fold, gauge_id, split, nse, kge, n_obs``); the held-out split is
  ``test_ungauged`` (held-out gauges in the test period), as in a run's ``metrics.csv``;
* ``cv_summary.csv``: per parameterizer and split, over the gauges with at least the dataset's
  ``min_obs_days`` of observations: ``median_nse, median_kge`` of the gauges' scores (a gauge's
  score: its median over seeds and folds), the bootstrap 90 % interval of the median NSE
  (``nse_ci_low, nse_ci_high``; gauges resampled), ``n_gauges``, and the paired median
  difference of NSE to the first parameterizer, gauge by gauge, with its bootstrap 90 % interval
  (``median_nse_diff, diff_ci_low, diff_ci_high``);
* ``cv_nse_cdf.png``: the CDF of held-out NSE per parameterizer;
* ``cv_parameter_recovery.csv`` where the dataset knows its true parameters (synthetic twins):
  each run's Pearson r of learned against true parameter maps, at all nodes and at the nodes of
  that fold's held-out basins (``r_ungauged``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

__all__ = ["CVOptions", "run_cv", "summarize_cv", "bootstrap_median"]

#: the keys of ``cv.*`` and their defaults
CV_DEFAULTS: dict[str, Any] = {
    "folds": 5,
    "only_folds": None,
    "seeds": 1,
    "parameterizers": ["mlp", "regional"],
    "strategy": "random",
    "downstream_closed": True,
    "fold_seed": 0,
    "jobs": "auto",
    "threads": 1,
    "bootstrap": 2000,
    "plots": False,
}
#: overrides that ``cv`` sets for every run itself (``parameterizer.<option>`` stays the user's:
#: it applies to every parameterizer of the cross-validation)
_OWN_KEYS = ("parameterizer", "seed", "run_dir", "torch_threads", "overwrite")
_OWN_PREFIXES = ("dataset.holdout",)


def _is_own(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key in _OWN_KEYS or any(key == p or key.startswith(p + ".") for p in _OWN_PREFIXES)


@dataclass(frozen=True)
class CVOptions:
    """The ``cv.*`` options (see :data:`CV_DEFAULTS`)."""

    folds: int
    seeds: tuple[int, ...]
    parameterizers: tuple[str, ...]
    strategy: str
    downstream_closed: bool
    fold_seed: int
    jobs: int
    threads: int
    bootstrap: int
    plots: bool = False
    #: the folds to run and summarise (all ``range(folds)`` by default): a long cross-validation
    #: split into parts (over sessions or machines); one call without it then summarises all
    only_folds: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, dotlist: list[str]) -> CVOptions:
        given = OmegaConf.to_container(OmegaConf.from_dotlist(dotlist)) if dotlist else {}
        unknown = sorted(set(given) - set(CV_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown cv option(s) {unknown}; options: {sorted(CV_DEFAULTS)}")
        values = {**CV_DEFAULTS, **given}
        seeds = values["seeds"]
        seeds = tuple(range(int(seeds))) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
        names = values["parameterizers"]
        names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
        from gnnhydro.config import group_options

        presets = group_options("parameterizer")  # each run takes parameterizer=<name>
        bad = sorted(set(names) - set(presets))
        if bad:
            raise ValueError(f"cv.parameterizers: unknown {bad}; parameterizer configs: {presets}")
        if len(set(names)) != len(names) or not names:
            raise ValueError(
                f"cv.parameterizers must name distinct parameterizers, got {list(names)}"
            )
        if not seeds:
            raise ValueError("cv.seeds: give a number of seeds (≥ 1) or a list of seeds")
        if int(values["folds"]) < 2:
            raise ValueError(f"cv.folds must be at least 2, got {values['folds']}")
        only = values["only_folds"]
        if only is not None:
            only = (only,) if isinstance(only, int) else tuple(int(f) for f in only)
            outside = sorted(set(only) - set(range(int(values["folds"]))))
            if outside or not only or len(set(only)) != len(only):
                raise ValueError(
                    f"cv.only_folds must name distinct folds of 0..{int(values['folds']) - 1}, "
                    f"got {list(only)}"
                )
        if values["strategy"] not in ("random", "regional"):
            raise ValueError(f"cv.strategy must be random or regional, got {values['strategy']!r}")
        threads = int(values["threads"])
        if threads < 1:
            raise ValueError(f"cv.threads must be at least 1, got {threads}")
        jobs = values["jobs"]
        jobs = max(1, (os.cpu_count() or 1) // threads) if jobs == "auto" else int(jobs)
        if jobs < 1:
            raise ValueError(f"cv.jobs must be at least 1 or auto, got {values['jobs']}")
        return cls(
            folds=int(values["folds"]),
            seeds=seeds,
            parameterizers=names,
            strategy=str(values["strategy"]),
            downstream_closed=bool(values["downstream_closed"]),
            fold_seed=int(values["fold_seed"]),
            jobs=jobs,
            threads=threads,
            bootstrap=int(values["bootstrap"]),
            plots=bool(values["plots"]),
            only_folds=only,
        )


@dataclass(frozen=True)
class _Run:
    parameterizer: str
    seed: int
    fold: int
    run_dir: Path

    @property
    def done(self) -> bool:
        return (self.run_dir / "metrics.csv").exists()


def _runs(root: Path, options: CVOptions) -> list[_Run]:
    return [
        _Run(p, s, f, root / p / f"seed{s}" / f"fold{f}")
        for p in options.parameterizers
        for s in options.seeds
        for f in (options.only_folds or range(options.folds))
    ]


def _given(overrides: list[str], key: str) -> bool:
    """Whether the train overrides set ``key`` themselves."""
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


def _command(run: _Run, overrides: list[str], options: CVOptions) -> list[str]:
    holdout = {
        "k": options.folds,
        "fold": run.fold,
        "seed": options.fold_seed,
        "strategy": options.strategy,
        "downstream_closed": str(options.downstream_closed).lower(),
        "gauge_ids": "null",
    }
    # each run's own plots (hydrographs, maps: ~15 s per run on 2 cores) only when asked for;
    # the cross-validation draws its own CDF plot, and a run's plots can be drawn later
    plots = [] if options.plots or _given(overrides, "export.plots") else ["export.plots=false"]
    return [
        "train",
        *overrides,
        *plots,
        f"parameterizer={run.parameterizer}",
        f"seed={run.seed}",
        *(f"dataset.holdout.{k}={v}" for k, v in holdout.items()),
        f"run_dir={run.run_dir}",
        f"torch_threads={options.threads}",
        "overwrite=true",
    ]


def _check(overrides: list[str], parameterizers: tuple[str, ...] = ()) -> Path:
    """The cross-validation's folder (``run_dir=``) and a check of the train overrides (with
    each of the ``parameterizers``, whose options they may set)."""
    from gnnhydro.config import check_overrides

    own = [o for o in overrides if _is_own(o)]
    root = [o.split("=", 1)[1] for o in own if o.split("=", 1)[0] == "run_dir"]
    own = [o for o in own if o.split("=", 1)[0] != "run_dir"]
    if own:
        raise ValueError(
            f"cv sets {own[0].split('=', 1)[0]} for every run itself: use cv.parameterizers, "
            "cv.seeds, cv.folds, cv.strategy, cv.threads instead"
        )
    if not root:
        raise ValueError("cv needs run_dir=PATH (the folder of the cross-validation)")
    train = [o for o in overrides if not o.startswith("run_dir=")]
    for name in parameterizers or (None,):
        check_overrides(train if name is None else [*train, f"parameterizer={name}"])
    return Path(root[0])


def run_cv(argv: list[str], *, log: Any = print) -> Path:
    """Run (or continue) a cross-validation from ``gnnhydro cv`` arguments: train overrides,
    ``run_dir=PATH`` and ``cv.KEY=VALUE`` options. Returns the folder; raises ``ValueError``
    naming the log of a run that failed."""
    from gnnhydro.config import compose
    from gnnhydro.training.experiment import as_single_graph, build_dataset

    cv_args = [a[3:] for a in argv if a.startswith("cv.")]
    overrides = [a for a in argv if not a.startswith("cv.")]
    options = CVOptions.parse(cv_args)
    root = _check(overrides, options.parameterizers)
    train_overrides = [o for o in overrides if not o.startswith("run_dir=")]
    # prepare the dataset once (parallel runs would race to write its cache) and check the folds
    cfg = compose([*train_overrides, f"parameterizer={options.parameterizers[0]}"])
    graph = as_single_graph(build_dataset(cfg.dataset))
    _check_folds(graph, options)
    del graph
    root.mkdir(parents=True, exist_ok=True)
    (root / "cv.json").write_text(
        json.dumps({"overrides": train_overrides, **options.__dict__}, indent=2, default=list)
    )
    runs = _runs(root, options)
    todo = [r for r in runs if not r.done]
    log(
        f"cv: {len(runs)} runs ({len(options.parameterizers)} parameterizers x "
        f"{len(options.seeds)} seeds x {_fold_text(options)}), {len(runs) - len(todo)} done, "
        f"{options.jobs} in parallel with {options.threads} thread(s) each"
    )
    _execute(todo, train_overrides, options, log)
    metrics = collect_metrics(runs)
    metrics.to_csv(root / "cv_metrics.csv", index=False)
    min_obs = _min_obs(runs[0])
    summary = summarize_cv(metrics, options.parameterizers, min_obs, options.bootstrap)
    summary.to_csv(root / "cv_summary.csv", index=False)
    _plot(metrics, min_obs, root)
    recovery = collect_recovery(runs)
    if recovery is not None:  # datasets with true parameters (synthetic twins)
        recovery.to_csv(root / "cv_parameter_recovery.csv", index=False)
    log("cv summary:\n" + summary.to_string(index=False))
    return root


def _fold_text(options: CVOptions) -> str:
    if options.only_folds is None:
        return f"{options.folds} folds"
    return f"folds {list(options.only_folds)} of {options.folds}"


def _check_folds(graph: Any, options: CVOptions) -> None:
    from gnnhydro.datasets.splits import cv_folds

    folds = cv_folds(
        graph,
        options.folds,
        options.fold_seed,
        strategy=options.strategy,
        downstream_closed=options.downstream_closed,
    )
    for k, split in enumerate(folds):
        if split.train_index.numel() == 0:
            raise ValueError(f"cv fold {k} has no training gauge")


def run_environment(options: CVOptions) -> dict[str, str]:
    """The environment of every fold run: its share of the cores, ``cv.threads``, for torch
    (``OMP_NUM_THREADS``, with ``torch_threads=``) and for the CPU kernels' thread pool
    (``NUMBA_NUM_THREADS``; by default it has a thread per core, so ``cv.jobs`` runs side by
    side would each split their kernels over every core)."""
    threads = str(options.threads)
    return {**os.environ, "OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}


def _execute(todo: list[_Run], overrides: list[str], options: CVOptions, log: Any) -> None:
    """Run ``todo`` in ``cv.jobs`` parallel slots, each a warm worker process where supported
    (:mod:`gnnhydro.training.workers`: the imports once per slot, not once per run); stops
    starting runs after the first failure and raises once the running ones have ended."""
    from gnnhydro.training.workers import new_slot

    env = run_environment(options)
    slots: list[Any] = []
    waiting = list(todo)
    running: dict[int, tuple[_Run, Path, float]] = {}
    failed: list[tuple[_Run, int, Path]] = []
    try:
        while waiting or running:
            while waiting and len(running) < options.jobs and not failed:
                run = waiting.pop(0)
                run.run_dir.parent.mkdir(parents=True, exist_ok=True)
                log_path = run.run_dir.parent / f"{run.run_dir.name}.log"
                free = next((i for i, s in enumerate(slots) if not s.busy), None)
                if free is None:
                    slots.append(new_slot(env))
                    free = len(slots) - 1
                slots[free].submit(_command(run, overrides, options), log_path)
                running[free] = (run, log_path, time.perf_counter())
            time.sleep(0.5)
            for i, (run, log_path, started) in list(running.items()):
                code = slots[i].poll()
                if code is None:
                    continue
                del running[i]
                if code != 0 or not run.done:
                    failed.append((run, code, log_path))
                    continue
                log(
                    f"cv: {run.parameterizer} seed {run.seed} fold {run.fold} done in "
                    f"{time.perf_counter() - started:.0f} s{_held_out(run)}"
                )
            if failed and not running:
                break
    except BaseException:  # Ctrl-C: the runs take it themselves; do not wait for them
        for slot in slots:
            slot.close(wait=False)
        raise
    for slot in slots:
        slot.close()
    if failed:
        run, code, log_path = failed[0]
        text = log_path.read_text() if log_path.exists() else ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise ValueError(
            f"cv run {run.run_dir} failed (exit {code}): {lines[-1] if lines else 'no output'} "
            f"(log: {log_path})"
        )


def _held_out(run: _Run) -> str:
    summary = pd.read_csv(run.run_dir / "metrics_summary.csv", index_col="split")
    if "test_ungauged" not in summary.index:
        return ""
    return f", held-out median NSE {summary.loc['test_ungauged', 'nse']:.3f}"


def collect_metrics(runs: list[_Run]) -> pd.DataFrame:
    """The ``cv_metrics.csv`` table from the runs' ``metrics.csv``."""
    frames = []
    for run in runs:
        df = pd.read_csv(run.run_dir / "metrics.csv", dtype={"gauge_id": str})
        if "variable" in df:  # discharge at gauges (observed fluxes/states have own rows)
            df = df[df["variable"] == "discharge"].copy()
        df.insert(0, "fold", run.fold)
        df.insert(0, "seed", run.seed)
        df.insert(0, "parameterizer", run.parameterizer)
        frames.append(
            df[["parameterizer", "seed", "fold", "gauge_id", "split", "nse", "kge", "n_obs"]]
        )
    return pd.concat(frames, ignore_index=True)


def collect_recovery(runs: list[_Run]) -> pd.DataFrame | None:
    """``cv_parameter_recovery.csv``: Pearson r of learned against true parameter maps per
    parameterizer, seed and fold (``r_ungauged``: at the nodes no training gauge drains, i.e.
    the held-out basins of that fold), from the runs' ``parameter_recovery.csv``; ``None`` when
    the dataset has no true parameters."""
    frames = []
    for run in runs:
        path = run.run_dir / "parameter_recovery.csv"
        if not path.exists():
            return None
        df = pd.read_csv(path)
        df.insert(0, "fold", run.fold)
        df.insert(0, "seed", run.seed)
        df.insert(0, "parameterizer", run.parameterizer)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def _min_obs(run: _Run) -> int:
    """``dataset.min_obs_days`` of the runs in time steps."""
    cfg = OmegaConf.load(run.run_dir / "config.yaml")
    step = json.loads((run.run_dir / "model_inputs.json").read_text())["step_seconds"]
    return int(round(float(cfg.dataset.get("min_obs_days", 0) or 0) * 86400.0 / float(step)))


def bootstrap_median(values: np.ndarray, draws: int, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of the median of ``values`` over ``draws`` bootstrap resamples
    (a 90 % percentile interval; NaN for an empty set)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(int(draws), values.size), replace=True), axis=1)
    low, high = np.percentile(medians, [5.0, 95.0])
    return float(low), float(high)


def gauge_scores(metrics: pd.DataFrame, min_obs: int = 0) -> pd.DataFrame:
    """Each gauge's score per parameterizer and split: the median NSE and KGE over its seeds
    and folds (rows with fewer than ``min_obs`` observations, or NaN NSE, left out)."""
    kept = metrics[(metrics["n_obs"] >= max(int(min_obs), 1)) & np.isfinite(metrics["nse"])]
    return kept.groupby(["parameterizer", "split", "gauge_id"], as_index=False)[
        ["nse", "kge"]
    ].median()


def summarize_cv(
    metrics: pd.DataFrame, parameterizers: tuple[str, ...], min_obs: int = 0, draws: int = 2000
) -> pd.DataFrame:
    """The ``cv_summary.csv`` table (see the module docstring)."""
    scores = gauge_scores(metrics, min_obs)
    first = parameterizers[0]
    rows = []
    for split in sorted(scores["split"].unique()):
        in_split = scores[scores["split"] == split]
        reference = in_split[in_split["parameterizer"] == first].set_index("gauge_id")["nse"]
        for name in parameterizers:
            own = in_split[in_split["parameterizer"] == name]
            if own.empty:
                continue
            low, high = bootstrap_median(own["nse"].to_numpy(), draws)
            row = {
                "parameterizer": name,
                "split": split,
                "median_nse": float(own["nse"].median()),
                "median_kge": float(own["kge"].median()),
                "nse_ci_low": low,
                "nse_ci_high": high,
                "n_gauges": int(len(own)),
                "median_nse_diff": float("nan"),
                "diff_ci_low": float("nan"),
                "diff_ci_high": float("nan"),
            }
            if name != first:
                paired = own.set_index("gauge_id")["nse"].sub(reference).dropna()
                if len(paired):
                    row["median_nse_diff"] = float(paired.median())
                    row["diff_ci_low"], row["diff_ci_high"] = bootstrap_median(
                        paired.to_numpy(), draws, seed=1
                    )
            rows.append(row)
    return pd.DataFrame(rows)


def _plot(metrics: pd.DataFrame, min_obs: int, root: Path) -> None:
    from gnnhydro import plot

    held = gauge_scores(metrics, min_obs)
    held = held[held["split"] == "test_ungauged"]
    if not held.empty:
        plot.plot_metric_cdf(held, root / "cv_nse_cdf.png", metric="nse", by="parameterizer")
