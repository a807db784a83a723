"""Gauge-basin samples: training on the upstream basins of gauges instead of the whole network.

A sample is the upstream basin of one training gauge (every node draining to it, the gauge
included; gauges inside it count in the loss too) × a time window with its warm-up, plus the
``k``-hop halo that the parameterizer's ``k`` rounds of message passing read: halo nodes feed
the GNN but carry no loss and are not run through runoff and routing (``physics_mask``).
A basin is upstream-closed, so routing inside it is exact.

Batches pack samples up to a node budget (:class:`NodeBudgetBatches`); a basin larger than the
budget is trained alone in its own batch (it is never dropped), so the memory of a step is set
by the batch — by the largest basin at worst — not by the network.

Under data parallelism every rank forms the same batches (those of one process) and
:class:`RankShares` gives each rank its part of every batch, balanced by nodes, so that all
ranks take the same number of steps; a rank left without a sample of a batch runs a stand-in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from gnnhydro.graph.subgraph import node_subset
from gnnhydro.graph.topology import NodeWalker

log = logging.getLogger("gnnhydro")

__all__ = [
    "GaugeBasins",
    "GaugeBasinSamples",
    "NodeBudgetBatches",
    "RankShares",
    "StandInSamples",
    "share_out",
]


class GaugeBasins:
    """The basin (upstream nodes) and halo of each gauge of a graph, computed once.

    Args:
        graph: the river graph (``edge_index`` upstream → downstream).
        gauges: node indices of the gauges (e.g. the training gauges).
        halo_hops: rounds of message passing of the parameterizer (0: no halo).

    Shapes:
        ``nodes(i)`` ``[M_i]`` int64: basin nodes (ascending) then halo nodes (ascending);
        ``basin_size(i)`` the number of basin nodes among them.
    """

    def __init__(self, graph: Any, gauges: Tensor, halo_hops: int = 0) -> None:
        if halo_hops < 0:
            raise ValueError(f"halo_hops must be >= 0, got {halo_hops}")
        self.gauges = gauges.long()
        walker = NodeWalker(graph.edge_index, int(graph.num_nodes))
        self._nodes: list[Tensor] = []
        self._basin_size: list[int] = []
        self._gauge_position: list[int] = []
        for gauge in self.gauges.tolist():
            basin = walker.upstream(gauge)
            self._gauge_position.append(int(torch.searchsorted(basin, gauge)))
            halo = (
                walker.neighbourhood(basin, halo_hops)
                if halo_hops > 0
                else torch.zeros(0, dtype=torch.long)
            )
            self._nodes.append(torch.cat([basin, halo]))
            self._basin_size.append(int(basin.numel()))

    def __len__(self) -> int:
        return len(self._nodes)

    def nodes(self, i: int) -> Tensor:
        return self._nodes[i]

    def basin_size(self, i: int) -> int:
        return self._basin_size[i]

    def gauge_position(self, i: int) -> int:
        """Where gauge ``i`` stands among its basin's nodes (``nodes(i)``)."""
        return self._gauge_position[i]

    def size(self, i: int) -> int:
        """Nodes of sample ``i`` (basin and halo): what counts against the batch budget."""
        return int(self._nodes[i].numel())


class GaugeBasinSamples(Dataset):
    """Map-style dataset of ``(gauge basin, time window)`` samples for PyG's ``DataLoader``.

    Args:
        graph: the river graph with its time series (or lazy: ``reader`` fills them).
        basins: the :class:`GaugeBasins` of the gauges to sample.
        samples: ``(basin index, start, stop, warmup)`` per sample (time-step indices).
        reader: optional :class:`~gnnhydro.datasets.forcing.ForcingReader` (lazy forcing).

    Shapes:
        item: the basin + halo subgraph, time series ``[M, stop - start, ...]``,
        ``physics_mask`` ``[M]`` bool (True on basin nodes), ``warmup_steps`` int.
    """

    def __init__(
        self,
        graph: Any,
        basins: GaugeBasins,
        samples: Sequence[tuple[int, int, int, int]],
        *,
        reader: Any = None,
    ) -> None:
        self.graph = graph
        self.basins = basins
        self.samples = [tuple(int(v) for v in s) for s in samples]
        self.reader = reader

    def __len__(self) -> int:
        return len(self.samples)

    def size(self, idx: int) -> int:
        return self.basins.size(self.samples[idx][0])

    def __getitem__(self, idx: int) -> Any:
        from gnnhydro.datasets.windows import slice_time

        basin, start, stop, warmup = self.samples[idx]
        nodes = self.basins.nodes(basin)
        out = node_subset(slice_time(self.graph, start, stop), nodes)
        if self.reader is not None:  # read the basin and its halo alone, not the network
            offset = int(out.time_offset)
            out = self.reader.fill(out, offset, offset + stop - start, nodes)
        mask = torch.zeros(nodes.numel(), dtype=torch.bool)
        mask[: self.basins.basin_size(basin)] = True
        out.physics_mask = mask
        out.warmup_steps = warmup
        return out


class NodeBudgetBatches(Sampler[list[int]]):
    """Batches of consecutive samples whose nodes sum to at most ``max_nodes`` (and at most
    ``max_samples`` samples); a sample above the budget forms a batch of its own.

    Args:
        sizes: nodes per sample, in sample order.
        max_nodes: the node budget of a batch (``None``: no budget).
        max_samples: the most samples in a batch (``None``: no limit).
    """

    def __init__(
        self, sizes: Sequence[int], max_nodes: int | None, max_samples: int | None = None
    ) -> None:
        if max_nodes is not None and max_nodes < 1:
            raise ValueError(f"max_nodes_per_batch must be >= 1, got {max_nodes}")
        self.sizes = [int(s) for s in sizes]
        self.max_nodes = max_nodes
        self.max_samples = max_samples
        self.batches = self._pack()

    def _pack(self) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        total = 0
        for i, size in enumerate(self.sizes):
            full = self.max_samples is not None and len(current) >= self.max_samples
            over = self.max_nodes is not None and total + size > self.max_nodes
            if current and (full or over):
                batches.append(current)
                current, total = [], 0
            current.append(i)
            total += size
        if current:
            batches.append(current)
        return batches

    def oversized(self) -> list[int]:
        """Samples larger than the budget (each trained alone)."""
        if self.max_nodes is None:
            return []
        return [i for i, s in enumerate(self.sizes) if s > self.max_nodes]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def share_out(batch: Sequence[int], sizes: Sequence[int], world: int) -> list[list[int]]:
    """Split the samples of one batch among ``world`` ranks, balanced by nodes: the largest
    sample first, each to the rank with the fewest nodes so far (ties: the lowest rank); every
    share in sample order. Deterministic; a share is empty only when the batch has fewer
    samples than ranks."""
    shares: list[list[int]] = [[] for _ in range(world)]
    loads = [0] * world
    for i in sorted(batch, key=lambda i: (-int(sizes[i]), i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        shares[rank].append(i)
        loads[rank] += int(sizes[i])
    return [sorted(share) for share in shares]


class RankShares(Sampler[list[tuple[int, bool]]]):
    """One rank's part of every batch of a :class:`NodeBudgetBatches` (the batches of one
    process, formed alike on every rank): as many steps as batches on every rank.

    Yields ``[(sample, stand_in), ...]`` per batch (for :class:`StandInSamples`): the rank's
    share (:func:`share_out`) with ``stand_in`` False, or, when the share is empty, the batch's
    smallest sample alone with ``stand_in`` True — run forward and backward (data-parallel
    training needs every rank in every backward) but left out of the loss.

    Args:
        batches: the batches of the whole epoch (sample indices).
        sizes: nodes per sample.
        rank, world: this process and the number of processes.
    """

    def __init__(
        self, batches: Sequence[Sequence[int]], sizes: Sequence[int], rank: int, world: int
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.batches = [list(b) for b in batches]
        self.sizes = [int(s) for s in sizes]
        self.rank, self.world = rank, world
        self.shares: list[list[tuple[int, bool]]] = []
        for batch in self.batches:
            share = share_out(batch, self.sizes, world)[rank]
            if share:
                self.shares.append([(i, False) for i in share])
            else:
                smallest = min(batch, key=lambda i: (self.sizes[i], i))
                self.shares.append([(smallest, True)])

    def stand_ins(self) -> int:
        """Steps in which this rank runs a stand-in."""
        return sum(share[0][1] for share in self.shares)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        return iter(self.shares)

    def __len__(self) -> int:
        return len(self.shares)


class StandInSamples(Dataset):
    """The items of ``dataset`` indexed by ``(index, stand_in)`` (from :class:`RankShares`),
    each with its ``stand_in`` flag (bool; collated to ``[num_graphs]``)."""

    def __init__(self, dataset: GaugeBasinSamples) -> None:
        self.dataset = dataset
        self.samples = dataset.samples

    def __len__(self) -> int:
        return len(self.dataset)

    def size(self, idx: int) -> int:
        return self.dataset.size(idx)

    def __getitem__(self, idx: tuple[int, bool]) -> Any:
        index, stand_in = idx
        out = self.dataset[int(index)]
        out.stand_in = bool(stand_in)
        return out
