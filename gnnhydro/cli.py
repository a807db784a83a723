"""The ``gnnhydro`` command line (hydra 1.3 for ``train``; ``key=value`` arguments elsewhere).

Invalid input exits with status 2 and a one-line message naming the cause, before any output
is written; an interrupted ``train`` says how to resume.
"""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gnnhydro.config import CONFIG_DIR, check_overrides, compose, suggest, with_dataset_defaults

log = logging.getLogger("gnnhydro")

USAGE = """\
usage: gnnhydro COMMAND [key=value ...]      (gnnhydro COMMAND --help for each command)

commands:
  train      train a regionalization model (hydra overrides; -m for a multirun sweep)
  cv         k-fold spatial cross-validation over gauges: parameterizers x seeds x folds
  evaluate   recompute the metrics and outputs of a trained run
  predict    predict parameters and discharge on a dataset (ungauged basins)
  export     write a trained run's parameter maps as gpkg, parquet, netcdf or csv
  route      route a real domain from files (NWM RouteLink + CHRTOUT, or RAPID)
  bench      benchmarks: gnnhydro bench runoff|routing|compile|scale [options]

examples:
  gnnhydro train                                   the embedded synthetic basin
  gnnhydro train dataset=generic dataset.root=PATH your own network (see datasets/generic)
  gnnhydro train run_dir=runs/a trainer.resume=true    continue an interrupted run
  gnnhydro cv cv.folds=5 'cv.parameterizers=[mlp,regional]' run_dir=runs/cv
  gnnhydro predict run_dir=runs/a dataset=generic dataset.root=PATH out=pred/
  gnnhydro export run_dir=runs/a format=csv

options:
  -h, --help     this text
  --version      the gnnhydro version
"""

#: errors that mean "bad input": reported in one line, exit status 2
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError, NotADirectoryError)


@dataclass(frozen=True)
class Command:
    """A subcommand: its ``key=value`` keys (``None``: hydra overrides), which accept hydra
    overrides too, and its help text."""

    keys: tuple[str, ...] | None
    help: str
    hydra_prefixes: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {
    "train": Command(
        None,
        """\
usage: gnnhydro train [-m] [hydra overrides ...]

Train a GNN parameterizer + runoff + routing model; outputs go to run_dir (config.yaml,
provenance.json, train.log, checkpoints/, train_log.csv, gauges.csv, metrics.csv,
metrics_summary.csv, parameters.gpkg, discharge.nc, plots/).

common overrides:
  dataset=synthetic|drb|nwm|camels_us|generic|rapid   dataset.root=PATH  dataset.source_dir=PATH
  model=hbv_muskingum|hbv2_muskingum|hbv_mc|gr4j_muskingum|sacsma_muskingum|hbv_lumped|routing_only
  parameterizer=sage|gcn|gatv2|gin|mlp|regional|global|donor   (dataset=generic: regional)
  trainer.epochs=N  trainer.lr=X  trainer.batch_size=N  device=auto|cpu|cuda  seed=N
  run_dir=PATH      a new run needs an empty or new directory
  overwrite=true    replace an earlier run in run_dir
  trainer.resume=true   continue the run in run_dir with its own config.yaml (Ctrl-C is safe:
                        the last finished epoch is kept); other overrides apply on top
  experiment=drb_gnn|drb_mlp    presets
  -m a=1,2          a multirun sweep: <run_dir>_multirun/N/ and <run_dir>_multirun/summary.csv
Every key is listed by: gnnhydro train --cfg job
""",
    ),
    "cv": Command(
        None,
        """\
usage: gnnhydro cv [train overrides ...] run_dir=DIR [cv.folds=5] [cv.seeds=1]
                   ['cv.parameterizers=[mlp,regional]'] [cv.strategy=random|regional]
                   [cv.downstream_closed=true] [cv.fold_seed=0] [cv.jobs=auto] [cv.threads=1]
                   [cv.bootstrap=2000]

k-fold spatial cross-validation over gauges: every parameterizer x seed x fold is an ordinary
training run in DIR/<parameterizer>/seed<S>/fold<F> (in parallel processes, cv.jobs at a time),
trained on its fold's training gauges only; folds are shared by all parameterizers and seeds
(cv.fold_seed). downstream_closed: gauges downstream of a held-out gauge are not trained in that
fold. cv.seeds=N means seeds 0..N-1 (or a list). Finished runs are reused: run the same command
again to continue. Writes DIR/cv_metrics.csv (parameterizer, seed, fold, gauge_id, split, nse,
kge, n_obs), DIR/cv_summary.csv (median NSE/KGE per parameterizer and split with bootstrap 90 %
intervals over gauges, paired median NSE difference to the first parameterizer with its
interval) and DIR/cv_nse_cdf.png; the held-out split is test_ungauged.
""",
    ),
    "evaluate": Command(
        ("run_dir",),
        """\
usage: gnnhydro evaluate run_dir=PATH

Recompute metrics.csv, metrics_summary.csv, parameter maps, discharge.nc and plots of a trained
run from its best checkpoint (checkpoints/best.pt, else last.pt) and its own config.yaml.
""",
    ),
    "predict": Command(
        ("run_dir", "out", "overwrite", "stream", "discharge_format", "time_chunk", "node_chunk"),
        """\
usage: gnnhydro predict run_dir=PATH dataset=NAME [dataset.KEY=VALUE ...] [out=DIR] [overwrite=true]
                        [stream=true|false] [discharge_format=zarr|netcdf] [time_chunk=365]
                        [node_chunk=16384]

Predict parameters and discharge with a trained run on a dataset (observations not needed).
Writes parameters.gpkg (parameters.nc without geometry), the discharge and provenance.json into
out (default: <run_dir>/predictions/<dataset name>); an earlier prediction there is replaced
only with overwrite=true.

In memory (the default for in-memory datasets) the whole record runs at once: discharge.nc.
Streamed (stream=true; the default with dataset.lazy=true) the model runs time_chunk steps x
node_chunk nodes at a time, forcing read per chunk, states carried between chunks, and
discharge.zarr is written as it goes (discharge_format=netcdf converts it at the end): memory is
set by the chunks, not by the size of the network or the length of the record.
""",
        hydra_prefixes=("dataset", "data_root"),
    ),
    "export": Command(
        ("run_dir", "format", "out", "overwrite"),
        """\
usage: gnnhydro export run_dir=PATH [format=gpkg|parquet|netcdf|csv] [out=FILE] [overwrite=true]

Write a trained run's parameter maps with units (one row per node, one column per parameter;
time-varying parameters as their time mean, the series too in netCDF) to out (default:
<run_dir>/exports/parameters.<suffix>); an existing file is replaced only with overwrite=true.
""",
    ),
    "route": Command(
        ("routelink", "chrtout", "rapid_connect", "k", "x", "inflow", "irf", "substeps", "out"),
        """\
usage: gnnhydro route routelink=PATH chrtout="DIR/*.CHRTOUT_DOMAIN1" out=q.nc [irf=muskingum] [substeps=N|auto]
       gnnhydro route rapid_connect=PATH k=PATH x=PATH inflow=PATH out=Qout.nc

Route a real domain from files with Muskingum parameters from the files: an NWM domain
(RouteLink + CHRTOUT q_lateral) written as CF-1.8 netCDF, or a RAPID domain (m3_riv inflow)
written as RAPID Qout netCDF. The files are read as the datasets read them: matched by id,
units checked, CHRTOUT files sorted by their time (a time gap is an error).
""",
    ),
    "bench": Command(None, "usage: gnnhydro bench runoff|routing|compile|scale [--help]\n"),
}


def _fail(command: str, err: BaseException) -> None:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    message = " ".join(message.split("\n")[0].split()) if message else type(err).__name__
    print(f"gnnhydro {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _bool(value: str, key: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{key}={value}: expected true or false")


def _key_values(argv: list[str], command: str) -> tuple[dict[str, str], list[str]]:
    """This command's own ``key=value`` arguments and the hydra overrides it accepts; any other
    key is an error naming the closest valid one."""
    spec = COMMANDS[command]
    own = set(spec.keys or ())
    mine: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} is not key=value (see gnnhydro {command} --help)")
        key, value = arg.split("=", 1)
        if key in own:
            if key in mine:
                raise ValueError(f"{key}= is given twice")
            mine[key] = value
        elif key.lstrip("+~").split(".", 1)[0] in spec.hydra_prefixes:
            overrides.append(arg)
        else:
            allowed = sorted(own) + [f"{p}..." for p in spec.hydra_prefixes]
            raise ValueError(
                f"unknown key {key!r} for gnnhydro {command}"
                + suggest(key, own)
                + f" (keys: {', '.join(allowed)})"
            )
    return mine, overrides


def _run_dir_arg(args: dict[str, str], command: str) -> Path:
    if "run_dir" not in args:
        raise ValueError(f"{command} needs run_dir=PATH (a trained run)")
    return Path(args["run_dir"])


def _train(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    multirun = any(a in ("-m", "--multirun") for a in argv)
    passthrough = [a for a in argv if a.startswith("-")]  # hydra's own flags (--cfg job, ...)
    command = shlex.join(["gnnhydro", "train", *argv])  # as typed (provenance)
    argv = with_dataset_defaults(argv)  # e.g. dataset=generic: parameterizer=regional
    overrides = [a for a in argv if not a.startswith("-") and a not in ("job", "hydra", "all")]
    if not passthrough or multirun:
        check_overrides(overrides)  # unknown keys and group options, before hydra makes dirs

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def app(cfg: DictConfig) -> None:
        from gnnhydro.training.rundir import resume_config
        from gnnhydro.training.trainer import train

        logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
        logging.getLogger("pyogrio").setLevel(logging.WARNING)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        existed = run_dir.exists() and any(run_dir.iterdir())
        try:
            task = list(HydraConfig.get().overrides.task)
            if cfg.trainer.get("resume"):
                cfg = resume_config(run_dir, cfg, task)
            train(cfg, run_dir, command=command, overrides=task)
        except USER_ERRORS as err:
            _remove_if_empty(run_dir, existed)
            _fail("train", err)
        except KeyboardInterrupt:
            _remove_if_empty(run_dir, existed)
            print(_interrupted(run_dir), file=sys.stderr)
            raise SystemExit(130) from None
        print(f"run directory: {run_dir}")
        if multirun:
            from gnnhydro.training.multirun import write_summary

            write_summary(run_dir.parent)

    saved = sys.argv
    sys.argv = [saved[0] if saved else "gnnhydro", *argv]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


def _remove_if_empty(run_dir: Path, existed: bool) -> None:
    """A failed new run leaves no directory behind (hydra makes it before the job starts)."""
    if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _interrupted(run_dir: Path) -> str:
    resume = f"gnnhydro train run_dir={shlex.quote(str(run_dir))} trainer.resume=true"
    if not (run_dir / "config.yaml").exists():
        return "gnnhydro train: interrupted before the run started; nothing was written"
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return (
            f"gnnhydro train: interrupted before the first epoch ended; restart it with: {resume}"
        )
    return f"gnnhydro train: interrupted; the last finished epoch is kept — resume with: {resume}"


def _cv(argv: list[str]) -> int:
    from gnnhydro.training.cv import run_cv

    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    root = run_cv(argv)
    print(f"cross-validation written to {root}")
    return 0


def _evaluate(argv: list[str]) -> int:
    from gnnhydro.training.run import evaluate

    args, _ = _key_values(argv, "evaluate")
    run_dir = _run_dir_arg(args, "evaluate")
    df = evaluate(run_dir)
    print(f"metrics for {len(df)} gauge-splits written to {run_dir / 'metrics.csv'}")
    return 0


def _positive_int(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"{key}={value!r}: expected a positive whole number")
    return number


def _predict(argv: list[str]) -> int:
    from gnnhydro.models.streaming import DEFAULT_NODE_CHUNK, DEFAULT_TIME_CHUNK
    from gnnhydro.training.run import predict

    args, overrides = _key_values(argv, "predict")
    run_dir = _run_dir_arg(args, "predict")
    if not any(o.split("=", 1)[0] == "dataset" for o in overrides):
        raise ValueError("predict needs dataset=NAME (and dataset.root=PATH for your own data)")
    cfg = compose(overrides)
    target = predict(
        run_dir,
        cfg.dataset,
        out_dir=args.get("out"),
        overwrite=_bool(args.get("overwrite", "false"), "overwrite"),
        stream=_bool(args["stream"], "stream") if "stream" in args else None,
        discharge_format=args.get("discharge_format"),
        time_chunk=_positive_int(args.get("time_chunk", DEFAULT_TIME_CHUNK), "time_chunk"),
        node_chunk=_positive_int(args.get("node_chunk", DEFAULT_NODE_CHUNK), "node_chunk"),
    )
    print(f"predictions written to {target}")
    return 0


def _export(argv: list[str]) -> int:
    from gnnhydro.training.run import export_run

    args, _ = _key_values(argv, "export")
    run_dir = _run_dir_arg(args, "export")
    path = export_run(
        run_dir,
        args.get("format", "gpkg"),
        args.get("out"),
        overwrite=_bool(args.get("overwrite", "false"), "overwrite"),
    )
    print(f"parameters written to {path}")
    return 0


def _route(argv: list[str]) -> int:
    from gnnhydro.routing.io import route_files

    args, _ = _key_values(argv, "route")
    if "out" not in args:
        raise ValueError("route needs out=PATH (the discharge file to write)")
    path = route_files(**args)
    print(f"discharge written to {path}")
    return 0


def _bench(argv: list[str]) -> int:
    from gnnhydro.bench import main as bench_main

    return bench_main(argv)


RUNNERS = {
    "train": _train,
    "cv": _cv,
    "evaluate": _evaluate,
    "predict": _predict,
    "export": _export,
    "route": _route,
    "bench": _bench,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnnhydro`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version", "version"):
        import gnnhydro

        print(f"gnnhydro {gnnhydro.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in RUNNERS:
        print(
            f"gnnhydro: unknown command {command!r}{suggest(command, RUNNERS)}; "
            f"choose from {sorted(RUNNERS)} (gnnhydro --help)",
            file=sys.stderr,
        )
        return 2
    if command != "bench" and any(a in ("-h", "--help") for a in rest):
        print(COMMANDS[command].help)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)
    try:
        return RUNNERS[command](rest)
    except USER_ERRORS as err:
        _fail(command, err)
    except KeyboardInterrupt:
        print(f"gnnhydro {command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
