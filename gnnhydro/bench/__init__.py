"""Benchmarks: ``gnnhydro bench runoff|routing|compile|scale [options]`` print figures and ratios
measured in the same run (never timed tests)."""

from __future__ import annotations

import importlib

__all__ = ["main", "BENCHMARKS"]

BENCHMARKS = {
    "runoff": "gnnhydro.bench.runoff",
    "routing": "gnnhydro.bench.routing",
    "compile": "gnnhydro.bench.compile",
    "scale": "gnnhydro.bench.scale",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``bench NAME [options]`` to the benchmark module's ``main``."""
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: gnnhydro bench {"
            + ",".join(BENCHMARKS)
            + "} [options]   (NAME --help for options)"
        )
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"gnnhydro bench: unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
        return 2
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(rest) or 0)
