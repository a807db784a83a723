"""Compile-time benchmark of the numba kernels: ``gnnhydro bench compile``.

Runs a tiny workload (HBV float32 and float64 forward and backward through the fused numba
kernels, Muskingum routing with gradients) in a fresh Python subprocess twice with the same
``NUMBA_CACHE_DIR``: first **cold** (an empty cache directory, so every kernel is compiled),
then **warm** (the kernels are loaded from the cache), and prints both wall times against the
targets (cold ≤ 30 s, warm ≤ 10 s).  The workload itself is tiny, so the wall times are
interpreter start-up, imports and compilation (or cache loading).

Example::

    python -m gnnhydro.bench.compile
    python -m gnnhydro.bench.compile --cache-dir /tmp/nb   # a given (empty) cache directory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "main",
    "workload",
    "run_workload_subprocess",
    "compile_cost",
    "format_compile_cost",
    "COLD_TARGET_S",
    "WARM_TARGET_S",
]

#: Targets (issue 14, item 8) for the wall time of the tiny workload in a fresh process.
COLD_TARGET_S = 30.0
WARM_TARGET_S = 10.0


def compile_cost(fn: Callable[[], object], kernel=None) -> dict:
    """Time ``fn`` twice: the compile (or cache-loading) time it paid is the first call's time
    minus the second's.  Also counts the numba functions compiled and loaded from the disk
    cache during the first call (:func:`gnnhydro._numba.cache_stats`); ``kernel`` (a
    dispatcher) names the cache directory.

    Returns ``{"first_s", "second_s", "compile_s", "compiled", "loaded", "cache_dir"}``.
    """
    from gnnhydro._numba import cache_path, cache_stats

    before = cache_stats()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    after = cache_stats()
    t0 = time.perf_counter()
    fn()
    second = time.perf_counter() - t0
    return {
        "first_s": first,
        "second_s": second,
        "compile_s": max(first - second, 0.0),
        "compiled": after["misses"] - before["misses"],
        "loaded": after["hits"] - before["hits"],
        "cache_dir": cache_path(kernel) if kernel is not None else None,
    }


def format_compile_cost(label: str, c: dict) -> str:
    """One line: compile time paid and whether the disk cache was hit (cold/warm)."""
    if c["compiled"]:
        state = f"cold: {c['compiled']} numba functions compiled"
    elif c["loaded"]:
        state = f"warm: cache hit, {c['loaded']} numba kernels loaded"
    else:
        state = "already compiled in this process"
    where = f", cache {c['cache_dir']}" if c.get("cache_dir") else ""
    return (
        f"compile {label}: {c['compile_s']:.2f} s (first call {c['first_s']:.2f} s − second "
        f"{c['second_s']:.3f} s; {state}{where})"
    )


def workload() -> dict[str, float]:
    """The tiny workload; returns the seconds spent in each part (imports included).

    HBV (nmul 2, 4 basins × 30 days) in float32 and float64, forward and backward through the
    fused numba adjoint; Muskingum routing of a 64-reach tree (float32, batch 2) with gradients
    with respect to the lateral inflow, ``k`` and ``x``.
    """
    parts: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    from gnnhydro.bench.runoff import synthetic_case
    from gnnhydro.graph.synthetic import random_river_network
    from gnnhydro.routing import route
    from gnnhydro.runoff.hbv import HBV

    parts["more imports"] = time.perf_counter() - t0
    for dtype in (torch.float32, torch.float64):
        t0 = time.perf_counter()
        forcing, params = synthetic_case(4, 30, 2, dtype=dtype)
        leaves = {k: v.requires_grad_() for k, v in params.items()}
        q = HBV(2, backend="numba")(forcing, leaves)["runoff"]
        q.sum().backward()
        parts[f"hbv_{str(dtype).removeprefix('torch.')}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    graph = random_river_network(64, seed=0)
    lat = torch.rand(2, 64, 30, generator=gen).requires_grad_()
    k = (0.2 + 3.0 * torch.rand(64, generator=gen)).requires_grad_()
    x = (0.45 * torch.rand(64, generator=gen)).requires_grad_()
    q = route(lat, graph, "muskingum", {"k": k, "x": x}, backend="numba")
    q.sum().backward()
    parts["muskingum"] = time.perf_counter() - t0
    return parts


def run_workload_subprocess(cache_dir: str | os.PathLike, *, env: dict | None = None) -> dict:
    """Run :func:`workload` in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``.

    Returns ``{"wall_s": ..., "parts": {...}}`` (wall time of the whole subprocess, start-up
    included).  Raises ``RuntimeError`` with the child's stderr if it fails.
    """
    child_env = dict(os.environ if env is None else env)
    child_env["NUMBA_CACHE_DIR"] = str(cache_dir)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gnnhydro.bench.compile", "--child"],
        env=child_env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed (exit {proc.returncode}):\n{proc.stderr}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return {"wall_s": wall, "parts": json.loads(lines[-1]), "stderr": proc.stderr}


def _fmt_parts(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``gnnhydro bench compile``); returns the exit code (0, or 1
    with ``--check`` when a target is missed)."""
    ap = argparse.ArgumentParser(prog="gnnhydro bench compile", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cache-dir",
        help="NUMBA_CACHE_DIR for both runs (default: a fresh temporary directory, removed after)",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(workload()), flush=True)
        return 0
    tmp = None
    if args.cache_dir:
        cache_dir = Path(args.cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        if any(cache_dir.iterdir()):
            print(f"# warning: {cache_dir} is not empty: the cold run may hit the cache")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gnnhydro-numba-")
        cache_dir = Path(tmp.name)
    print(
        f"# gnnhydro bench compile: tiny workload (HBV f32+f64 forward/backward, Muskingum "
        f"with gradients) in a fresh process, NUMBA_CACHE_DIR={cache_dir}, "
        f"cpu count {os.cpu_count()}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '-')}",
        flush=True,
    )
    ok = True
    try:
        for label, target in (("cold", COLD_TARGET_S), ("warm", WARM_TARGET_S)):
            res = run_workload_subprocess(cache_dir)
            met = res["wall_s"] <= target
            ok &= met
            parts = {"start-up+imports": res["wall_s"] - sum(res["parts"].values())}
            parts.update(res["parts"])
            print(
                f"{label}: {res['wall_s']:7.1f} s  (target ≤ {target:.0f} s: "
                f"{'met' if met else 'MISSED'})  [{_fmt_parts(parts)}]",
                flush=True,
            )
            for line in res["stderr"].splitlines():
                if line.startswith("gnnhydro:"):
                    print(f"    {line}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0 if ok or not args.check else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
