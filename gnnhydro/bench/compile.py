"""Compile-time benchmark of the numba kernels: ``gnnhydro bench compile``.

Runs a tiny workload (HBV float32 and float64, GR4J and SAC-SMA float32, each forward and
backward through the fused numba kernels; Muskingum routing with gradients) in a fresh Python
subprocess twice with the same ``NUMBA_CACHE_DIR``: first **cold** (an empty cache directory,
so every kernel is compiled), then **warm** (the kernels are loaded from the cache), and prints
both wall times against the targets (cold ≤ 30 s, warm ≤ 10 s) and the time of each part.  The
workload itself is tiny, so the wall times are interpreter start-up, imports and compilation
(or cache loading).

``--inline both`` runs the cold and warm pair once per inlining mode of the kernels' helpers
(``$GNNHYDRO_NUMBA_INLINE``, see :mod:`gnnhydro._numba`: ``llvm``, the default, and ``numba``,
numba's ``inline="always"``), each with its own empty cache directory, and prints the cold and
warm times of both and their ratio; ``--inline numba`` runs that mode alone.

Example::

    python -m gnnhydro.bench.compile
    python -m gnnhydro.bench.compile --cache-dir /tmp/nb   # a given (empty) cache directory
    python -m gnnhydro.bench.compile --inline both --timeout 900
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
    "parse_args",
    "workload",
    "run_workload_subprocess",
    "compile_cost",
    "format_compile_cost",
    "format_run",
    "format_inline_comparison",
    "COLD_TARGET_S",
    "WARM_TARGET_S",
]

#: Targets (issue 14, item 8) for the wall time of the tiny workload in a fresh process, set when
#: it was HBV and Muskingum alone; GR4J and SAC-SMA add ~19 s cold on 2 cores (39.6 s in all,
#: 2026-12-01), so the cold target is missed there.
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

    HBV (nmul 2, 4 basins × 30 days) in float32 and float64, GR4J and SAC-SMA (same size) in
    float32, forward and backward through the fused numba adjoints; Muskingum routing of a
    64-reach tree (float32, batch 2) with gradients with respect to the lateral inflow, ``k``
    and ``x``.
    """
    parts: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    from gnnhydro.bench.runoff import MODELS, synthetic_case
    from gnnhydro.graph.synthetic import random_river_network
    from gnnhydro.routing import route

    parts["more imports"] = time.perf_counter() - t0
    runs = [
        ("hbv", torch.float32),
        ("hbv", torch.float64),
        ("gr4j", torch.float32),
        ("sacsma", torch.float32),
    ]
    for model, dtype in runs:
        t0 = time.perf_counter()
        forcing, params = synthetic_case(4, 30, 2, dtype=dtype, model=model)
        leaves = {k: v.requires_grad_() for k, v in params.items()}
        q = MODELS[model](2, backend="numba")(forcing, leaves)["runoff"]
        q.sum().backward()
        parts[f"{model}_{str(dtype).removeprefix('torch.')}"] = time.perf_counter() - t0
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


def run_workload_subprocess(
    cache_dir: str | os.PathLike,
    *,
    env: dict | None = None,
    inline: str | None = None,
    timeout: float | None = None,
) -> dict:
    """Run :func:`workload` in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir`` (and
    ``GNNHYDRO_NUMBA_INLINE=inline`` when given).

    Returns ``{"wall_s", "parts", "inline", "stderr", "timed_out"}``: wall time of the whole
    subprocess (start-up included), seconds per part, the inlining mode the child ran with.  A
    child still running after ``timeout`` seconds is killed: ``timed_out`` True, ``wall_s`` the
    timeout, no parts.  Raises ``RuntimeError`` with the child's stderr if it fails.
    """
    from gnnhydro._numba import INLINE_ENV

    child_env = dict(os.environ if env is None else env)
    child_env["NUMBA_CACHE_DIR"] = str(cache_dir)
    if inline is not None:
        child_env[INLINE_ENV] = inline
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gnnhydro.bench.compile", "--child"],
            env=child_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:  # the child is killed by subprocess.run
        stderr = err.stderr or ""
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        return {
            "wall_s": float(timeout),
            "parts": {},
            "inline": inline,
            "stderr": stderr,
            "timed_out": True,
        }
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed (exit {proc.returncode}):\n{proc.stderr}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1])
    return {
        "wall_s": wall,
        "parts": res["parts"],
        "inline": res["inline"],
        "stderr": proc.stderr,
        "timed_out": False,
    }


def _fmt_parts(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())


def _fmt_wall(res: dict) -> str:
    if res.get("timed_out"):
        return f"> {res['wall_s'] / 60:.1f} min"
    return f"{res['wall_s']:.1f} s"


def format_run(label: str, res: dict, target: float) -> str:
    """One result line: wall time against ``target`` and the seconds of each part (start-up and
    imports: the wall time not spent in a part)."""
    if res.get("timed_out"):
        return (
            f"{label}: {_fmt_wall(res):>7}  (target ≤ {target:.0f} s: MISSED; stopped after "
            f"the timeout)"
        )
    met = res["wall_s"] <= target
    parts = {"start-up+imports": res["wall_s"] - sum(res["parts"].values())}
    parts.update(res["parts"])
    return (
        f"{label}: {res['wall_s']:7.1f} s  (target ≤ {target:.0f} s: "
        f"{'met' if met else 'MISSED'})  [{_fmt_parts(parts)}]"
    )


def format_inline_comparison(results: dict[str, dict[str, dict]]) -> list[str]:
    """Summary lines of an ``--inline both`` run: cold and warm wall time per inlining mode and
    the ratio numba / llvm (a lower bound when the numba run was stopped at the timeout).

    ``results``: ``{mode: {"cold": result, "warm": result}}`` (results of
    :func:`run_workload_subprocess`; a missing warm run prints as ``-``).
    """
    lines = []
    for phase in ("cold", "warm"):
        cells = []
        for mode, res in results.items():
            r = res.get(phase)
            cells.append(f"{mode} {_fmt_wall(r) if r else '-'}")
        line = f"{phase}: " + ", ".join(cells)
        a, b = results.get("llvm", {}).get(phase), results.get("numba", {}).get(phase)
        if a and b and not a.get("timed_out") and a["wall_s"] > 0:
            ratio = b["wall_s"] / a["wall_s"]
            line += f"  (numba/llvm {'> ' if b.get('timed_out') else ''}{ratio:.1f}×)"
        lines.append(line)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``gnnhydro bench compile`` (``inline``: ``None`` = the
    environment's mode, else one of ``llvm``, ``numba``, ``both``)."""
    ap = argparse.ArgumentParser(prog="gnnhydro bench compile", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cache-dir",
        help="NUMBA_CACHE_DIR for both runs (default: a fresh temporary directory, removed "
        "after); with --inline both, one sub-directory per mode",
    )
    ap.add_argument(
        "--inline",
        choices=("llvm", "numba", "both"),
        help="inlining of the kernels' helpers (GNNHYDRO_NUMBA_INLINE; default: the "
        "environment's, llvm when unset); both: one cold and warm pair per mode, compared",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        help="stop a workload run after this many seconds (reported as '> X min')",
    )
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        ap.error(f"--timeout must be > 0, got {args.timeout}")
    return args


def _pair(cache_dir: Path, inline: str | None, timeout: float | None, prefix: str) -> tuple:
    """The cold and warm runs in ``cache_dir`` (printed as they finish; the warm run is skipped
    when the cold one timed out): ``({"cold": res, "warm": res}, all targets met)``."""
    out: dict[str, dict] = {}
    ok = True
    for label, target in (("cold", COLD_TARGET_S), ("warm", WARM_TARGET_S)):
        res = run_workload_subprocess(cache_dir, inline=inline, timeout=timeout)
        out[label] = res
        ok &= not res["timed_out"] and res["wall_s"] <= target
        print(format_run(prefix + label, res, target), flush=True)
        for line in res["stderr"].splitlines():
            if line.startswith("gnnhydro:"):
                print(f"    {line}", flush=True)
        if res["timed_out"]:
            break
    return out, ok


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``gnnhydro bench compile``); returns the exit code (0, or 1
    with ``--check`` when a target is missed)."""
    args = parse_args(argv)
    if args.child:
        from gnnhydro._numba import INLINE

        print(json.dumps({"parts": workload(), "inline": INLINE}), flush=True)
        return 0
    modes = ["llvm", "numba"] if args.inline == "both" else [args.inline]
    tmp = None
    if args.cache_dir:
        cache_dir = Path(args.cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gnnhydro-numba-")
        cache_dir = Path(tmp.name)
    dirs = {m: cache_dir / m if len(modes) > 1 else cache_dir for m in modes}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        if any(d.iterdir()):
            print(f"# warning: {d} is not empty: the cold run may hit the cache")
    if args.inline is None:
        from gnnhydro._numba import INLINE

        inline_note = f"inlining {INLINE} (GNNHYDRO_NUMBA_INLINE)"
    else:
        inline_note = f"inlining {args.inline}"
    print(
        f"# gnnhydro bench compile: tiny workload (HBV f32+f64, GR4J and SAC-SMA f32 "
        f"forward/backward, Muskingum with gradients) in a fresh process, "
        f"NUMBA_CACHE_DIR={cache_dir}{'/<mode>' if len(modes) > 1 else ''}, {inline_note}, "
        f"cpu count {os.cpu_count()}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '-')}",
        flush=True,
    )
    ok = True
    results: dict[str, dict] = {}
    try:
        for mode in modes:
            prefix = f"{mode} " if len(modes) > 1 else ""
            results[mode], met = _pair(dirs[mode], mode, args.timeout, prefix)
            if len(modes) == 1 or mode == "llvm":  # the targets are those of the default mode
                ok &= met
    finally:
        if tmp is not None:
            tmp.cleanup()
    if len(modes) > 1:
        for line in format_inline_comparison(results):
            print(line, flush=True)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
