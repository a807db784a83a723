"""Deterministic synthetic river networks with realistic branching (for benchmarks and the
synthetic dataset).

Networks are grown from the outlet. Each new reach drains into a free *upstream slot* of an
existing reach, chosen uniformly at random; every reach offers two slots, so confluences join
two reaches, as in real networks, and the topology is that of a random binary tree
(Shreve-like, depth ``O(log N)``).

* ``depth="shallow"``: one node per reach of that tree: ``O(log N)`` topological levels.
* ``depth="deep"``: the tree is built over *links* (junction-to-junction stretches) that are then
  subdivided into chains of reaches with geometrically distributed lengths (mean ``≈ √N / 4``),
  as in NHDPlus/NWM networks where most reaches have exactly one upstream neighbour. The NWM
  Lower Colorado network (11,248 reaches, 649 levels) is of this kind.

Optional bifurcations add a second downstream edge from a reach to a reach a few levels further
downstream (never creating a cycle), with a split fraction drawn in [0.1, 0.5].

Attributes: ``length_m`` (log-normal, median 2 km), ``area_km2`` (log-normal, median 10 km²),
``slope`` (log-normal, median 1e-3 m/m).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from gnnhydro.graph.river_graph import RiverGraph
from gnnhydro.graph.topology import topological_levels

__all__ = ["random_river_network"]


def _slot_loop(num: int, u: np.ndarray) -> np.ndarray:
    """Node i (>= 1) takes the free upstream slot ``⌊u_i · #slots⌋``; each node adds two slots."""
    parent = np.full(num, -1, dtype=np.int64)
    if num <= 1:
        return parent
    slots = np.empty(2 * num + 2, dtype=np.int64)
    slots[0] = 0
    slots[1] = 0
    n_slots = 2
    for i in range(1, num):
        k = int(u[i] * n_slots)
        p = slots[k]
        parent[i] = p
        n_slots -= 1
        slots[k] = slots[n_slots]
        slots[n_slots] = i
        slots[n_slots + 1] = i
        n_slots += 2
    return parent


try:  # the slot loop is the only O(N) Python loop: compile it when numba is there
    from numba import njit as _njit

    _slot_loop_fast = _njit(cache=True)(_slot_loop)
except ImportError:  # pragma: no cover
    _slot_loop_fast = None


def _parents(num: int, rng: np.random.Generator) -> np.ndarray:
    """Downstream index of each node of a random binary tree grown from node 0 (−1 for 0)."""
    u = rng.random(num)
    return (_slot_loop_fast or _slot_loop)(num, u)


def random_river_network(
    num_nodes: int,
    *,
    depth: Literal["shallow", "deep"] = "shallow",
    seed: int = 0,
    bifurcations: int = 0,
    mean_chain: float | None = None,
) -> RiverGraph:
    """A deterministic random river network of ``num_nodes`` reaches.

    Args:
        num_nodes: number of reaches N (>= 1).
        depth: ``"shallow"`` (random binary tree, ``O(log N)`` levels) or ``"deep"`` (tree of
            links subdivided into long reach chains, ``O(√N · log N)`` levels).
        seed: random seed; the same arguments always give the same network.
        bifurcations: number of extra downstream edges (distributaries) to add; the network
            becomes a DAG whose edge weights are split fractions summing to 1 per reach.
        mean_chain: mean number of reaches per link for ``depth="deep"`` (default ``√N / 4``);
            shorter chains give fewer topological levels.

    Returns:
        A validated :class:`RiverGraph` with ``node_id = 0..N−1`` (node 0 the main outlet),
        ``length_m``, ``area_km2`` and ``slope``.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if depth not in ("shallow", "deep"):
        raise ValueError(f"depth must be 'shallow' or 'deep', got {depth!r}")
    if bifurcations < 0:
        raise ValueError(f"bifurcations must be >= 0, got {bifurcations}")
    rng = np.random.default_rng(seed)
    if depth == "shallow":
        parent = _parents(num_nodes, rng)
    else:
        mean_chain = max(1.0, mean_chain or np.sqrt(num_nodes) / 4.0)
        lengths: list[int] = []
        total = 0
        while total < num_nodes:
            n = int(min(rng.geometric(1.0 / mean_chain), num_nodes - total))
            lengths.append(n)
            total += n
        num_links = len(lengths)
        link_parent = _parents(num_links, rng)
        chain_len = np.asarray(lengths, dtype=np.int64)
        # node ids: link l occupies [start_l, start_l + len_l); the first node of a link is its
        # most downstream reach; the last node of a link drains... the chain flows toward start_l
        start = np.zeros(num_links, dtype=np.int64)
        np.cumsum(chain_len[:-1], out=start[1:])
        parent = np.arange(num_nodes, dtype=np.int64) - 1  # within a chain: node i → i−1
        # the downstream end of each link drains into the *upstream end* (last node) of its
        # parent link
        head = start
        tail = start + chain_len - 1
        parent[head] = np.where(link_parent >= 0, tail[np.maximum(link_parent, 0)], -1)
    src = np.flatnonzero(parent >= 0)
    dst = parent[src]
    weight = np.ones(src.size)
    if bifurcations:
        ei = torch.from_numpy(np.stack([src, dst]))
        levels = topological_levels(ei, num_nodes).numpy()
        # candidates: reaches with a downstream neighbour; a second target a few levels further
        # downstream (higher level ⇒ never upstream ⇒ no cycle)
        order = np.argsort(levels, kind="stable")
        level_start = np.searchsorted(levels[order], np.arange(levels.max() + 2))
        cand = rng.permutation(src)
        extra_src, extra_dst = [], []
        used = set()
        for u in cand.tolist():
            if len(extra_src) >= bifurcations:
                break
            lo = levels[u] + 1
            hi = min(levels[u] + 4, levels.max())
            if lo > hi or u in used:
                continue
            a, b = level_start[lo], level_start[hi + 1]
            v = int(order[rng.integers(a, b)])
            if v == parent[u]:
                continue
            used.add(u)
            extra_src.append(u)
            extra_dst.append(v)
        if extra_src:
            frac = rng.uniform(0.1, 0.5, size=len(extra_src))
            es = np.asarray(extra_src)
            pos = np.searchsorted(src, es)  # src is sorted (flatnonzero)
            weight[pos] = 1 - frac
            src = np.concatenate([src, es])
            dst = np.concatenate([dst, np.asarray(extra_dst)])
            weight = np.concatenate([weight, frac])
    edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    dtype = torch.get_default_dtype()
    length_m = torch.from_numpy(rng.lognormal(np.log(2000.0), 0.6, num_nodes)).to(dtype)
    area_km2 = torch.from_numpy(rng.lognormal(np.log(10.0), 0.8, num_nodes)).to(dtype)
    slope = torch.from_numpy(rng.lognormal(np.log(1e-3), 0.7, num_nodes)).to(dtype)
    return RiverGraph(
        edge_index=edge_index,
        edge_weight=torch.from_numpy(weight).to(dtype),
        node_id=list(range(num_nodes)),
        length_m=length_m,
        area_km2=area_km2,
        slope=slope,
        validate=True,  # O(N + E): 1.3 s for a 1e6-reach deep network including generation
    )
