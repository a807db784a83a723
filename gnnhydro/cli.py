"""The ``gnnhydro`` command line (hydra 1.3).

.. code-block:: text

    gnnhydro train [hydra overrides]             train on the synthetic default (or dataset=NAME)
    gnnhydro train -m parameterizer=sage,mlp     multirun sweep
    gnnhydro evaluate run_dir=PATH               recompute metrics and exports of a run
    gnnhydro predict run_dir=PATH dataset=NAME [dataset.root=PATH]   ungauged prediction
    gnnhydro export run_dir=PATH format=gpkg|parquet|netcdf|csv
    gnnhydro route routelink=PATH chrtout="DIR/*.CHRTOUT_DOMAIN1" out=q.nc [irf=muskingum]
    gnnhydro route rapid_connect=PATH k=PATH x=PATH inflow=PATH out=Qout.nc
    gnnhydro bench runoff|routing [options]

Invalid input exits with status 2 and a message naming the cause, before any output is written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from gnnhydro.config import CONFIG_DIR, compose

USAGE = __doc__

log = logging.getLogger("gnnhydro")

#: errors that mean "bad input": reported in one line, exit status 2
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def _fail(command: str, err: BaseException) -> None:
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    print(f"gnnhydro {command}: error: {type(err).__name__}: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_configs() -> None:
    if not (CONFIG_DIR / "config.yaml").exists():
        raise SystemExit(
            f"gnnhydro: configuration folder not found at {CONFIG_DIR}; install from a checkout "
            "with `pip install -e .`"
        )


def _train(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def app(cfg: DictConfig) -> None:
        from gnnhydro.training.run import train

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("pyogrio").setLevel(logging.WARNING)
        run_dir = HydraConfig.get().runtime.output_dir
        try:
            train(cfg, run_dir)
        except USER_ERRORS as err:
            _fail("train", err)
        print(f"run directory: {run_dir}")

    saved = sys.argv
    sys.argv = [saved[0] if saved else "gnnhydro", *argv]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


def _key_values(argv: list[str], command: str) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into this command's own keys and hydra overrides."""
    own = {
        "run_dir",
        "format",
        "out",
        "routelink",
        "chrtout",
        "rapid_connect",
        "k",
        "x",
        "inflow",
        "irf",
        "substeps",
    }
    mine: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} is not key=value")
        key, value = arg.split("=", 1)
        if key in own:
            mine[key] = value
        else:
            overrides.append(arg)
    return mine, overrides


def _evaluate(argv: list[str]) -> int:
    from gnnhydro.training.run import evaluate

    args, _ = _key_values(argv, "evaluate")
    if "run_dir" not in args:
        raise ValueError("evaluate needs run_dir=PATH")
    df = evaluate(args["run_dir"])
    print(f"metrics for {len(df)} gauge-splits written to {Path(args['run_dir']) / 'metrics.csv'}")
    return 0


def _predict(argv: list[str]) -> int:
    from gnnhydro.training.run import predict

    args, overrides = _key_values(argv, "predict")
    if "run_dir" not in args:
        raise ValueError("predict needs run_dir=PATH (a trained run) and dataset=NAME")
    cfg = compose(overrides)
    target = predict(args["run_dir"], cfg.dataset, out_dir=args.get("out"))
    print(f"predictions written to {target}")
    return 0


def _export(argv: list[str]) -> int:
    from gnnhydro.training.run import export_run

    args, _ = _key_values(argv, "export")
    if "run_dir" not in args:
        raise ValueError("export needs run_dir=PATH")
    path = export_run(args["run_dir"], args.get("format", "gpkg"))
    print(f"parameters written to {path}")
    return 0


def _route(argv: list[str]) -> int:
    from gnnhydro.routing.io import route_files

    args, _ = _key_values(argv, "route")
    path = route_files(**args)
    print(f"discharge written to {path}")
    return 0


def _bench(argv: list[str]) -> int:
    from gnnhydro.bench import main as bench_main

    return bench_main(argv)


COMMANDS = {
    "train": _train,
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
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"gnnhydro: unknown command {command!r}; choose from {sorted(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    if command != "bench":
        _check_configs()
    try:
        return COMMANDS[command](rest)
    except USER_ERRORS as err:
        _fail(command, err)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
