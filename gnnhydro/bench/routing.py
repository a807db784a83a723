"""Benchmark of LTI river routing: ``gnnhydro bench routing``.

For the NWM Lower Colorado network (``RouteLink.nc``, 11,248 reaches, 649 levels) and synthetic
trees (:func:`gnnhydro.graph.synthetic.random_river_network`, shallow and deep) it measures, for
Muskingum routing with per-reach ``k`` and ``x`` (float32):

* forward and forward+backward wall time (medians of repeats timed alternately; the backward is the gradient of
  ``Σ w·Q`` with random ``w``, given to autograd as the cotangent of ``Q``; ``--loss-op`` also
  times the product and sum as torch ops),
* peak resident memory above the baseline (sampled every millisecond),
* reach-steps per second,
* in the same run, the ratio to the sequential reference (scipy ``lfilter`` reach by reach in
  topological order) and to the copy floor (one copy of the ``[B, N, T]`` array),
* the largest relative difference from the reference (exactness),
* for Lower Colorado, the same case with its 30 LAKEPARM lakes as level-pool reservoirs
  (``reservoir="level_pool"``, staged at the reservoir levels) and its forward time relative
  to the plain case (``fwd/plain``),
* after each case, the same network with per-reach time steps (``substeps="auto"``, ``k`` from
  0.01 to 3.2 steps so that reaches sub-step or pass through; reference: scipy with the
  composed coefficients) and its forward time relative to the plain case (``fwd/plain``),
* first, the compile time the numba kernels paid (first call minus second call on a tiny tree;
  cold: compiled, warm: loaded from the disk cache).

The 1e6-reach cases run staged (``stage_plan="auto"``, ``--max-nodes`` per stage).

Example::

    python -m gnnhydro.bench.routing --quick
    python -m gnnhydro.bench.routing --sizes 1000 100000 1000000 --steps 365 --batch 1 8
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "scipy_reference", "PeakMemory"]


class PeakMemory:
    """Context manager sampling the resident set size (``/proc/self/statm``) every ``interval``
    seconds; ``peak_bytes`` is the peak above the RSS at entry."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:  # pragma: no cover - non-Linux
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._base = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss() - self._base)


def scipy_reference(
    lateral: np.ndarray,
    edge_index: np.ndarray,
    edge_weight: np.ndarray,
    coefs: np.ndarray,
    order: np.ndarray,
) -> np.ndarray:
    """Sequential reference: ``scipy.signal.lfilter`` reach by reach in topological order.

    Shapes: lateral ``[N, T]``; edge_index ``[2, E]``; edge_weight ``[E]``; coefs ``[N, 3]``
    (Muskingum ``C0, C1, C2``); order ``[N]``; result ``[N, T]``.
    """
    from scipy.signal import lfilter

    N = lateral.shape[0]
    src, dst = edge_index
    eid = np.argsort(dst, kind="stable")
    ptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=N), out=ptr[1:])
    up_src, up_w = src[eid], edge_weight[eid].astype(lateral.dtype)
    out = np.empty_like(lateral)
    for i in order.tolist():
        inflow = lateral[i].copy()
        for e in range(ptr[i], ptr[i + 1]):
            inflow += up_w[e] * out[up_src[e]]
        c0, c1, c2 = coefs[i]
        out[i] = lfilter([c0, c1], [1.0, -c2], inflow)
    return out


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_pair(f1: Callable[[], object], f2: Callable[[], object], repeats: int) -> tuple:
    """Medians of ``f1`` and ``f2`` timed alternately, so that a load drifting over the run (other
    processes on the machine) affects both alike and their ratio stays meaningful."""
    f1()
    f2()
    t1, t2 = [], []
    for _ in range(repeats):
        for f, ts in ((f1, t1), (f2, t2)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return statistics.median(t1), statistics.median(t2)


def _compile_line() -> str:
    """Compile time paid by the numba routing kernels (float32, with gradients) on a tiny tree:
    first call minus second call, and whether the disk cache was hit."""
    from gnnhydro.bench.compile import compile_cost, format_compile_cost
    from gnnhydro.graph.synthetic import random_river_network
    from gnnhydro.routing import route
    from gnnhydro.routing.kernels import numba_kernels

    g = random_river_network(64, seed=0)
    gen = torch.Generator().manual_seed(0)
    lat = torch.rand(2, 64, 30, generator=gen).requires_grad_(True)
    k = (0.2 + 3.0 * torch.rand(64, generator=gen)).requires_grad_(True)
    x = (0.45 * torch.rand(64, generator=gen)).requires_grad_(True)

    def fwd_bwd():
        lat.grad = k.grad = x.grad = None
        route(lat, g, "muskingum", {"k": k, "x": x}, backend="numba").sum().backward()

    cost = compile_cost(fwd_bwd, numba_kernels._iir_member)
    return "# " + format_compile_cost("numba routing (muskingum, float32)", cost)


def _graphs(args) -> list[tuple[str, object]]:
    from gnnhydro.graph import RiverGraph
    from gnnhydro.graph.synthetic import random_river_network

    out = []
    rl = Path(args.routelink)
    if rl.exists():
        out.append(("lower_colorado", RiverGraph.from_routelink(rl)))
    else:
        print(f"# RouteLink not found at {rl}: Lower Colorado skipped", file=sys.stderr)
    for n in args.sizes:
        for depth in args.depths:
            out.append(
                (f"{depth}_{n:.0e}".replace("+0", ""), random_river_network(n, depth=depth, seed=0))
            )
    return out


def _row(
    name: str,
    g,
    T: int,
    B: int,
    staged: bool,
    t_fwd: float,
    t_fb: float,
    mem_f: PeakMemory,
    mem_fb: PeakMemory,
    t_copy: float,
    t_ref: float = float("nan"),
    err: float = float("nan"),
    fwd_plain: float = float("nan"),
) -> dict:
    """One printed row: times [s], peaks [MB], throughput and ratios."""
    N = g.num_nodes
    return {
        "case": name,
        "N": N,
        "levels": int(g.topo_level.max()) + 1,
        "T": T,
        "B": B,
        "staged": staged,
        "fwd_s": t_fwd,
        "fwdbwd_s": t_fb,
        "fb/f": t_fb / t_fwd,
        "peak_fwd_MB": mem_f.peak_bytes / 2**20,
        "peak_fb_MB": mem_fb.peak_bytes / 2**20,
        "reach_steps/s": B * N * T / t_fwd,
        "ref_s": t_ref,
        "ref/fwd": t_ref / t_fwd,
        "fwd/copy": t_fwd / t_copy,
        "max_rel_err": err,
        "fwd/plain": t_fwd / fwd_plain,
    }


def _plain_fwd(rows: list[dict], name: str) -> float:
    """Forward time of the latest plain row of the case ``name`` (NaN if none)."""
    plain = [r["fwd_s"] for r in rows if r["case"] == name]
    return plain[-1] if plain else float("nan")


def _attach_lakes(g, routelink: Path) -> bool:
    """Mark the Lower Colorado's lakes (RouteLink waterbodies, ``LAKEPARM.nc`` beside it) on
    ``g`` as level-pool reservoir nodes; False where LAKEPARM is missing."""
    import xarray as xr

    from gnnhydro.datasets.nwm import read_lake_reservoirs

    lakeparm = routelink.parent / "LAKEPARM.nc"
    if not lakeparm.exists():
        print(f"# {lakeparm} not found: the lakes case is skipped", file=sys.stderr)
        return False
    with xr.open_dataset(routelink) as rl:
        link = rl["link"].values.astype(np.int64)
        to = rl["to"].values.astype(np.int64)
        waterbody = rl["NHDWaterbodyComID"].values.astype(np.int64)
    order = np.argsort(link)
    pos = order[np.searchsorted(link[order], np.asarray(g.node_id, dtype=np.int64))]
    for name, value in read_lake_reservoirs(lakeparm, waterbody[pos], link[pos], to[pos]).items():
        t = torch.as_tensor(value)
        setattr(g, name, t.float() if t.is_floating_point() else t)
    return True


def _lakes_case(name, g, T, B, args, rows) -> None:
    """Lower Colorado with its LAKEPARM lakes as level-pool reservoirs (the same inflow and
    ``k``, ``x`` as the plain case before it; ``fwd/plain`` compares the two forwards)."""
    from gnnhydro.routing import route

    N = g.num_nodes
    gen = torch.Generator().manual_seed(0)
    lat = torch.rand(B, N, T, generator=gen)
    k = 0.2 + 3.0 * torch.rand(N, generator=gen)
    x = 0.45 * torch.rand(N, generator=gen)
    opts = {"reservoir": "level_pool", "step_seconds": 3600.0}

    def fwd():
        with torch.no_grad():
            return route(lat, g, "muskingum", {"k": k, "x": x}, **opts)

    lat_g = lat.detach().requires_grad_(True)
    kg, xg = k.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weight = torch.rand(B, N, T, generator=gen)

    def fwd_bwd():
        lat_g.grad = kg.grad = xg.grad = None
        q = route(lat_g, g, "muskingum", {"k": kg, "x": xg}, **opts)
        q.backward(weight)
        return lat_g.grad

    repeats = args.repeats
    t_fwd, t_fb = _time_pair(fwd, fwd_bwd, repeats)
    with PeakMemory() as mem_f:
        fwd()
    with PeakMemory() as mem_fb:
        fwd_bwd()
    t_copy = _time(lambda: lat.numpy().copy(), 5)
    plain = _plain_fwd(rows, name)
    rows.append(
        _row(f"{name}+lakes", g, T, B, True, t_fwd, t_fb, mem_f, mem_fb, t_copy, fwd_plain=plain)
    )
    _print_row(rows[-1])


def _case(name, g, T, B, args, rows, substeps: int | str = 1) -> None:
    """One benchmark row; ``substeps="auto"``: per-reach time steps, with ``k`` down to 0.01
    steps so that many reaches sub-step or pass through (the row's ``fwd/plain`` compares its
    forward with the previous row's, the same network routed at the input step)."""
    from gnnhydro.routing import muskingum_coefficients, route
    from gnnhydro.routing.irf import Muskingum, RoutingContext, muskingum_substeps
    from gnnhydro.routing.lti import AUTO_MAX_SUBSTEPS

    N = g.num_nodes
    if B * N * T > args.max_elements:
        print(
            f"# {name} T={T} B={B}: {B * N * T:.1e} elements > --max-elements, skipped",
            file=sys.stderr,
        )
        return
    staged = N > args.stage_above
    gen = torch.Generator().manual_seed(0)
    lat = torch.rand(B, N, T, generator=gen)
    k = 0.2 + 3.0 * torch.rand(N, generator=gen)
    x = 0.45 * torch.rand(N, generator=gen)
    kw: dict = {"stage_plan": "auto", "max_nodes": args.max_nodes} if staged else {}
    if substeps == "auto":
        k = 10 ** (torch.rand(N, generator=gen) * 2.5 - 2.0)  # 0.01 … 3.2 steps
        kw["substeps"] = "auto"
    base, name = name, (f"{name}+auto" if substeps == "auto" else name)
    if staged:
        g.stage_plan(max_nodes=args.max_nodes)  # plan once (cached), not timed
    _ = g.topo_order
    repeats = args.repeats if N * T * B < 5e8 else 1

    def fwd():
        with torch.no_grad():
            return route(lat, g, "muskingum", {"k": k, "x": x}, **kw)

    weight = torch.rand(B, N, T, generator=gen)
    # leaves made once (no copy of the inflow); the backward is the vector-Jacobian product with
    # the cotangent ``weight``, i.e. the gradient of Σ w·Q, without timing torch's [B, N, T]
    # temporaries for the product and its backward (--loss-op times them too)
    lat_g = lat.detach().requires_grad_(True)
    kg, xg = k.clone().requires_grad_(True), x.clone().requires_grad_(True)

    def fwd_bwd():
        lat_g.grad = kg.grad = xg.grad = None
        q = route(lat_g, g, "muskingum", {"k": kg, "x": xg}, **kw)
        if args.loss_op:
            (q * weight).sum().backward()
        else:
            q.backward(weight)
        return lat_g.grad

    t_fwd, t_fb = _time_pair(fwd, fwd_bwd, repeats)
    # memory in separate runs: the sampling thread must not disturb the timings; the kernels'
    # recycled arrays are released first, so the peak is that of a call from scratch
    from gnnhydro.routing.kernels.cpu import clear_buffer_pool

    lat_g.grad = kg.grad = xg.grad = None
    clear_buffer_pool()
    with PeakMemory() as mem_f:
        fwd()
    clear_buffer_pool()
    with PeakMemory() as mem_fb:
        fwd_bwd()
    lat_np = lat.numpy()
    t_copy = _time(lambda: lat_np.copy(), 5)
    t_ref = float("nan")
    err = float("nan")
    if B * N * T <= args.max_reference:
        if substeps == "auto":
            steps = muskingum_substeps(k.double(), x.double(), AUTO_MAX_SUBSTEPS)
            ctx = RoutingContext(reach_substeps=steps)
            kx = {"k": k.double(), "x": x.double()}
            coefs = Muskingum().step_coefficients(kx, ctx).numpy()
        else:
            coefs = muskingum_coefficients(k.double(), x.double()).numpy()
        order = g.topo_order.numpy()
        ei, ew = g.edge_index.numpy(), g.edge_weight.double().numpy()
        t0 = time.perf_counter()
        ref = np.stack([scipy_reference(lat_np[b], ei, ew, coefs, order) for b in range(B)])
        t_ref = time.perf_counter() - t0
        q = fwd().numpy()
        err = float(np.abs(q - ref).max() / np.abs(ref).max())
    plain = _plain_fwd(rows, base) if substeps == "auto" else float("nan")
    rows.append(_row(name, g, T, B, staged, t_fwd, t_fb, mem_f, mem_fb, t_copy, t_ref, err, plain))
    _print_row(rows[-1])


_COLS = [
    ("case", "{:<16}"),
    ("N", "{:>8}"),
    ("levels", "{:>6}"),
    ("T", "{:>5}"),
    ("B", "{:>2}"),
    ("staged", "{!s:>6}"),
    ("fwd_s", "{:>8.4f}"),
    ("fwdbwd_s", "{:>8.4f}"),
    ("fb/f", "{:>5.2f}"),
    ("peak_fwd_MB", "{:>9.0f}"),
    ("peak_fb_MB", "{:>9.0f}"),
    ("reach_steps/s", "{:>9.2e}"),
    ("ref_s", "{:>7.3f}"),
    ("ref/fwd", "{:>7.2f}"),
    ("fwd/copy", "{:>8.1f}"),
    ("max_rel_err", "{:>9.1e}"),
    ("fwd/plain", "{:>9.2f}"),
]


def _print_header() -> None:
    widths = [len(fmt.format(*(["x"] if "s" in fmt[-3:] else [0]))) for _, fmt in _COLS]
    print(
        " ".join(name.rjust(max(w, len(name))) for (name, _), w in zip(_COLS, widths)), flush=True
    )


def _print_row(row: dict) -> None:
    cells = []
    for name, fmt in _COLS:
        cells.append(fmt.format(row[name]).rjust(len(name)))
    print(" ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the routing benchmark; prints one row per case. Returns 0."""
    default_rl = (
        Path(__file__).resolve().parents[2]
        / ".."
        / "shared"
        / "data"
        / "lower_colorado_tx"
        / "domain"
        / "RouteLink.nc"
    )
    p = argparse.ArgumentParser(prog="gnnhydro bench routing", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small cases only (Lower Colorado, 1e3, 1e4; T=365)"
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    p.add_argument("--depths", nargs="+", default=["shallow", "deep"], choices=["shallow", "deep"])
    p.add_argument("--steps", type=int, nargs="+", default=[365, 8760], help="series lengths T")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--routelink", default=str(default_rl))
    p.add_argument(
        "--stage-above", type=int, default=200_000, help="route staged above this many reaches"
    )
    p.add_argument("--max-nodes", type=int, default=200_000, help="stage size for staged cases")
    p.add_argument("--max-elements", type=float, default=4.0e8, help="skip cases with more B·N·T")
    p.add_argument(
        "--max-reference", type=float, default=3.0e7, help="scipy reference up to this B·N·T"
    )
    p.add_argument(
        "--loss-op",
        action="store_true",
        help="time the loss Σ w·Q as torch ops ((q * w).sum().backward()) instead of q.backward(w)",
    )
    p.add_argument(
        "--no-auto",
        action="store_true",
        help="skip the per-reach time step rows (substeps='auto' after each plain case)",
    )
    p.add_argument(
        "--no-lakes",
        action="store_true",
        help="skip the Lower Colorado row with its LAKEPARM lakes as level-pool reservoirs",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.repeats = [1_000, 10_000], [365], 7
    torch.set_num_threads(args.threads)
    print(
        f"# gnnhydro bench routing: muskingum, float32, torch threads={args.threads}, cpu count={os.cpu_count()}"
    )
    print(_compile_line(), flush=True)
    rows: list[dict] = []
    _print_header()
    for name, g in _graphs(args):
        lakes = name == "lower_colorado" and not args.no_lakes
        lakes = lakes and _attach_lakes(g, Path(args.routelink))
        for T in args.steps:
            for B in args.batch:
                _case(name, g, T, B, args, rows)
                if lakes:
                    _lakes_case(name, g, T, B, args, rows)
                if not args.no_auto:
                    _case(name, g, T, B, args, rows, substeps="auto")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
