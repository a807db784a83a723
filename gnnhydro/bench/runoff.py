"""Benchmark of runoff generation (HBV, GR4J, SAC-SMA): ``gnnhydro bench runoff [--model gr4j]``.

Measures, on synthetic forcing (basins × days × nmul), wall time, throughput (basin-steps/s) and
peak resident memory of the forward and forward+backward passes of

* the fused numba path with its exact adjoint (``gradient="autograd"``, backend numba),
* forward sensitivities (``gradient="sensitivity"``: HBV's fused numba sensitivity kernel; GR4J
  and SAC-SMA the fused forward and forward-mode AD through their torch step),
* the per-step PyTorch autograd loop (the floor to beat) at 1 torch thread and at the default
  thread count, in the same run,

and reports the speed-up of each against the best loop setting, the largest output difference
between the fused path and the loop, and the compile time paid by the fused paths (first call
minus second call on a tiny case; cold: compiled, warm: loaded from the numba disk cache).
Torch's thread count is restored afterwards.

Example::

    python -m gnnhydro.bench.runoff --basins 1000 --days 730 --nmul 16
    python -m gnnhydro.bench.runoff --model gr4j
    python -m gnnhydro.bench.runoff --model sacsma
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Callable

import torch

from gnnhydro.runoff.gr4j import GR4J
from gnnhydro.runoff.hbv import HBV
from gnnhydro.runoff.sacsma import SACSMA

__all__ = ["main", "synthetic_case"]

#: the benchmarked models: name -> class (built with ``nmul`` and ``backend=``)
MODELS = {"hbv": HBV, "gr4j": GR4J, "sacsma": SACSMA}


def synthetic_case(
    basins: int,
    days: int,
    nmul: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    model: str = "hbv",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Plausible synthetic daily forcing and parameters of ``model`` (inside its bounds).

    Shapes:
        forcing ``[basins, days]`` (mm/day, °C, mm/day); params ``[basins, nmul]``.
    """
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(days, dtype=torch.float64)
    season = torch.sin(2 * torch.pi * (t - 100) / 365.25)
    offset = torch.rand(basins, 1, generator=gen, dtype=torch.float64) * 15 - 3
    temp = offset + 12 * season + 3 * torch.randn(basins, days, generator=gen, dtype=torch.float64)
    wet = torch.rand(basins, days, generator=gen, dtype=torch.float64) < 0.4
    prec = wet * torch.distributions.Exponential(0.2).sample((basins, days))
    pet = torch.clamp(2.0 + 2.0 * season + 0.3 * torch.randn(basins, days, generator=gen), 0.0)
    forcing = {
        "precipitation": prec.to(dtype),
        "temperature": temp.to(dtype),
        "pet": pet.to(dtype),
    }
    spec = MODELS[model](nmul).param_spec
    params = {
        k: (
            s.low
            + (0.05 + 0.9 * torch.rand(basins, nmul, generator=gen, dtype=torch.float64)) * s.span
        ).to(dtype)
        for k, s in spec.items()
    }
    return forcing, params


def _peak_rss_mb() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024.0 if sys.platform != "darwin" else ru / 1024.0**2


def _current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1024.0**2
    except ImportError:  # pragma: no cover
        return float("nan")


def _time(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Best wall time of ``repeat`` calls and the growth of RSS (MB) during the first call."""
    gc.collect()
    before = _current_rss_mb()
    best = float("inf")
    res = None
    peak_delta = float("nan")
    for i in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
        if i == 0:
            peak_delta = _current_rss_mb() - before
    return best, peak_delta, res


def _fwd(model: torch.nn.Module, forcing, params) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(forcing, params)["runoff"]

    return run


def _fwd_bwd(model: torch.nn.Module, forcing, params) -> Callable[[], torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}

    def run() -> torch.Tensor:
        out = model(forcing, leaves)["runoff"]
        out.mean().backward()
        for v in leaves.values():
            v.grad = None
        return out.detach()

    return run


class _Threads:
    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.old)


def run_bench(
    basins: int,
    days: int,
    nmul: int,
    *,
    repeat: int = 1,
    loop: bool = True,
    sensitivity=True,
    model: str = "hbv",
) -> list[dict]:
    """Run all cases; return one row per (path, pass) with seconds, throughput and memory, led
    by the compile rows (``"compile"``: path; see :func:`gnnhydro.bench.compile.compile_cost`)
    and ended by the largest fused-vs-loop runoff difference."""
    from gnnhydro.bench.compile import compile_cost
    from gnnhydro.runoff.kernels import gr4j_numba, hbv_numba, sacsma_numba

    cls = MODELS[model]
    forcing, params = synthetic_case(basins, days, nmul, model=model)
    steps = basins * days
    rows: list[dict] = []
    fused = cls(nmul, backend="numba")
    # compilation (cached on disk: only the first call in a fresh cache compiles), paid on a
    # tiny case and reported: first call minus second call, and whether the cache was hit
    small_f, small_p = synthetic_case(2, 5, nmul, model=model)
    kernel = {HBV: hbv_numba, GR4J: gr4j_numba, SACSMA: sacsma_numba}[cls]._forward_kernel
    rows.append(
        {"compile": "fused numba (adjoint)"}
        | compile_cost(_fwd_bwd(fused, small_f, small_p), kernel)
    )
    if cls is HBV:  # a fused numba sensitivity kernel (smoothed thresholds)
        sens = HBV(nmul, gradient="sensitivity", smoothing=0.01)
        sens_path = "fused numba (sensitivity, eps=0.01)"
    else:  # the fused forward, forward sensitivities through the torch step
        sens = cls(nmul, backend="numba", gradient="sensitivity")
        sens_path = "numba fwd + torch fwd sensitivities"
    if sensitivity:
        rows.append({"compile": sens_path} | compile_cost(_fwd_bwd(sens, small_f, small_p), kernel))

    def add(path: str, kind: str, fn: Callable[[], object]) -> object:
        sec, mem, res = _time(fn, repeat)
        rows.append(
            {
                "path": path,
                "pass": kind,
                "seconds": sec,
                "basin_steps_per_s": steps / sec,
                "rss_growth_mb": mem,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
        return res

    q_fused = add("fused numba (adjoint)", "forward", _fwd(fused, forcing, params))
    add("fused numba (adjoint)", "forward+backward", _fwd_bwd(fused, forcing, params))
    if sensitivity:
        add(sens_path, "forward", _fwd(sens, forcing, params))
        add(sens_path, "forward+backward", _fwd_bwd(sens, forcing, params))
    diff = float("nan")
    if loop:
        ref = cls(nmul, backend="torch")
        default_threads = torch.get_num_threads()
        for n_thr in sorted({1, default_threads}):
            label = f"torch loop ({n_thr} thread{'s' if n_thr > 1 else ''})"
            with _Threads(n_thr):
                q_loop = add(label, "forward", _fwd(ref, forcing, params))
                add(label, "forward+backward", _fwd_bwd(ref, forcing, params))
        diff = float((q_fused - q_loop).abs().max())
    rows.append({"max_abs_runoff_diff_fused_vs_loop_mm": diff})
    return rows


def _report(rows: list[dict], basins: int, days: int, nmul: int, model: str = "hbv") -> str:
    from gnnhydro.bench.compile import format_compile_cost

    lines = [
        f"{MODELS[model].__name__} runoff benchmark: {basins} basins × {days} days × nmul {nmul} "
        f"(torch {torch.__version__}, default torch threads {torch.get_num_threads()})",
        f"{'path':40s} {'pass':17s} {'s':>8s} {'basin-steps/s':>14s} {'ΔRSS MB':>9s} "
        f"{'peak RSS MB':>11s}",
    ]
    diff = rows[-1]["max_abs_runoff_diff_fused_vs_loop_mm"]
    timed = [r for r in rows if "seconds" in r]
    for r in timed:
        lines.append(
            f"{r['path']:40s} {r['pass']:17s} {r['seconds']:8.3f} {r['basin_steps_per_s']:14.3e} "
            f"{r['rss_growth_mb']:9.1f} {r['peak_rss_mb']:11.1f}"
        )
    for kind in ("forward", "forward+backward"):
        loops = [r for r in timed if r["path"].startswith("torch loop") and r["pass"] == kind]
        if not loops:
            continue
        best = min(loops, key=lambda r: r["seconds"])
        for r in timed:
            if r["pass"] == kind and not r["path"].startswith("torch loop"):
                lines.append(
                    f"speed-up {kind:17s} {r['path']:38s} vs best loop ({best['path']}): "
                    f"{best['seconds'] / r['seconds']:.2f}×"
                )
    lines.append(f"max |runoff fused − runoff loop| = {diff:.3g} mm/day")
    lines.extend(format_compile_cost(r["compile"], r) for r in rows if "compile" in r)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``gnnhydro bench runoff``); returns the exit code."""
    ap = argparse.ArgumentParser(prog="gnnhydro bench runoff", description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="hbv")
    ap.add_argument("--basins", type=int, default=1000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--nmul", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings")
    ap.add_argument("--quick", action="store_true", help="tiny case (smoke test)")
    ap.add_argument("--no-loop", action="store_true", help="skip the per-step torch loop")
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity mode")
    args = ap.parse_args(argv)
    if args.quick:
        args.basins, args.days, args.nmul = 20, 60, 4
    rows = run_bench(
        args.basins,
        args.days,
        args.nmul,
        repeat=args.repeat,
        loop=not args.no_loop,
        sensitivity=not args.no_sensitivity,
        model=args.model,
    )
    print(_report(rows, args.basins, args.days, args.nmul, args.model))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
