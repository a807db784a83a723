"""Training windows and temporal slicing of river-graph items.

A window is a shallow copy of an item whose time-shaped tensors (``[N, T]`` or ``[N, T, ...]``:
``forcing``, ``lateral_inflow``, ``q_obs``, ``q_nwm``, ...) are sliced to ``warmup + window`` steps,
with ``time`` sliced alike and ``warmup_steps`` set. Windows batch with the stock
``torch_geometric.loader.DataLoader`` (disjoint union of the graphs).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gnnhydro.graph import RiverGraph

__all__ = ["TimeWindows", "WindowSamples", "time_keys", "slice_time", "time_slice"]

#: Node-level attributes that are never time series, whatever their shape.
STATIC_KEYS = frozenset({"x", "pos", "edge_index", "edge_weight", "edge_attr", "batch"})


def _num_steps(graph: RiverGraph) -> int:
    t = getattr(graph, "time", None)
    if t is not None:
        return len(t)
    steps = getattr(graph, "num_time_steps", None)
    if steps is not None:
        return int(steps)
    raise ValueError("graph has no `time` attribute: cannot find its time axis")


def time_keys(graph: RiverGraph, static_keys: Sequence[str] = ()) -> list[str]:
    """Names of the time-shaped tensors of ``graph``: node-level tensors with ``dim >= 2`` whose
    second axis has the length of ``graph.time`` (``[N, T]``, ``[N, T, F]``), except the static
    ``x``/``pos``/edge attributes and any name in ``static_keys``."""
    n, t = graph.num_nodes, _num_steps(graph)
    skip = STATIC_KEYS | set(static_keys)
    out = []
    for key, value in graph._store.items():
        if key in skip or not isinstance(value, Tensor):
            continue
        if value.dim() >= 2 and value.size(0) == n and value.size(1) == t:
            out.append(key)
    return out


def slice_time(
    graph: RiverGraph, start: int, stop: int, *, static_keys: Sequence[str] = ()
) -> RiverGraph:
    """A shallow copy of ``graph`` with every time-shaped tensor and ``time`` sliced to
    ``[start, stop)`` (time-step indices). Static tensors are shared, not copied.

    Shapes:
        ``[N, T, ...]`` → ``[N, stop - start, ...]``; ``time`` ``[T]`` → ``[stop - start]``.
    """
    total = _num_steps(graph)
    if not 0 <= start < stop <= total:
        raise ValueError(f"time slice [{start}, {stop}) outside the {total} steps of the series")
    keys = time_keys(graph, static_keys)
    out = copy.copy(graph)
    for key in keys:
        out[key] = graph[key][:, start:stop]
    t = getattr(graph, "time", None)
    if t is not None:
        out.time = np.asarray(t)[start:stop]
    elif getattr(graph, "num_time_steps", None) is not None:
        out.num_time_steps = stop - start
    offset = int(getattr(graph, "time_offset", 0) or 0)
    out.time_offset = offset + start
    return out


def time_slice(graph: RiverGraph, start: Any = None, end: Any = None) -> RiverGraph:
    """The part of ``graph`` between the dates ``start`` and ``end`` (both inclusive, like pandas
    label slicing); ``None`` = open end. Dates are anything ``numpy.datetime64`` accepts
    (``"1979-10-01"``, ``datetime``, ``pandas.Timestamp``).

    Raises ``ValueError`` when the range selects no time step.
    """
    import pandas as pd

    time = np.asarray(graph.time, dtype="datetime64[ns]")
    lo = (
        0
        if start is None
        else int(np.searchsorted(time, np.datetime64(pd.Timestamp(start), "ns"), "left"))
    )
    hi = (
        len(time)
        if end is None
        else int(np.searchsorted(time, np.datetime64(pd.Timestamp(end), "ns"), "right"))
    )
    if hi <= lo:
        raise ValueError(
            f"time_slice({start!r}, {end!r}) selects no time step; the series covers {time[0]} .. {time[-1]}"
        )
    return slice_time(graph, lo, hi)


class TimeWindows(Dataset):
    r"""Training windows of ``warmup + window`` steps over river-graph items.

    Deterministic mode (``stride``): windows start at ``0, stride, 2·stride, ...`` (the last one
    ending at or before the end of the series). Random mode (``random=n``): ``n`` windows per item
    per epoch with starts drawn uniformly by a ``torch.Generator`` seeded with ``seed + epoch``
    (:meth:`set_epoch`), so runs are reproducible. The loss should ignore the first
    ``warmup_steps`` steps of each window.

    Used three ways: ``windows(graph)`` → list of windows; ``windows.slice(graph, start)`` → one
    window; or with ``source`` (a graph, a list of graphs or a dataset) as a map-style dataset for
    ``torch_geometric.loader.DataLoader``.

    Args:
        window: steps that count in the loss.
        warmup: steps before them used to spin up states (default 0).
        stride: distance between deterministic window starts (default ``window``).
        random: number of random windows per item and epoch (exclusive with ``stride``).
        seed: seed of the random windows.
        source: optional graph(s) to window.
        reader: optional :class:`~gnnhydro.datasets.forcing.ForcingReader`; when given, each
            window's ``forcing`` (and ``q_obs``) is read lazily for that window only.
        static_keys: names of ``[N, T', ...]`` tensors that are not time series.

    Shapes:
        every time-shaped tensor ``[N, T, ...]`` → ``[N, warmup + window, ...]``; ``time`` ``[T]``
        → ``[warmup + window]``; ``warmup_steps`` int; ``time_offset`` int (start in the item).
    """

    def __init__(
        self,
        window: int,
        warmup: int = 0,
        stride: int | None = None,
        random: int | None = None,
        *,
        seed: int = 0,
        source: Any = None,
        reader: Any = None,
        static_keys: Sequence[str] = (),
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be a positive number of steps, got {window}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 steps, got {warmup}")
        if stride is not None and random is not None:
            raise ValueError(
                "give either stride (deterministic windows) or random (random windows), not both"
            )
        if stride is not None and stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        if random is not None and random <= 0:
            raise ValueError(f"random must be a positive number of windows, got {random}")
        self.window = int(window)
        self.warmup = int(warmup)
        self.stride = (
            int(stride) if stride is not None else (None if random is not None else int(window))
        )
        self.random = int(random) if random is not None else None
        self.seed = int(seed)
        self.epoch = 0
        self.reader = reader
        self.static_keys = tuple(static_keys)
        self.source = source
        self._index: list[tuple[int, int]] | None = None

    @property
    def length(self) -> int:
        """Steps per window: ``warmup + window``."""
        return self.warmup + self.window

    # ------------------------------------------------------------------ starts
    def starts(self, num_steps: int, item: int = 0) -> list[int]:
        """Window start indices for a series of ``num_steps`` steps (item ``item`` in random mode)."""
        last = num_steps - self.length
        if last < 0:
            raise ValueError(
                f"series of {num_steps} steps is shorter than one window (warmup {self.warmup} + window {self.window})"
            )
        if self.random is None:
            return list(range(0, last + 1, self.stride))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + item)
        return torch.randint(0, last + 1, (self.random,), generator=g).tolist()

    def set_epoch(self, epoch: int) -> None:
        """Redraw the random windows for ``epoch`` (deterministic given ``seed`` and ``epoch``)."""
        self.epoch = int(epoch)
        self._index = None

    def slice(self, graph: RiverGraph, start: int) -> RiverGraph:
        """The window of ``graph`` starting at step ``start``."""
        out = slice_time(graph, start, start + self.length, static_keys=self.static_keys)
        if self.reader is not None:
            first = int(out.time_offset)  # start in the reader's file (items may be time slices)
            out = self.reader.fill(out, first, first + self.length)
        out.warmup_steps = self.warmup
        return out

    def __call__(self, graph: RiverGraph) -> list[RiverGraph]:
        return [self.slice(graph, s) for s in self.starts(_num_steps(graph))]

    # ------------------------------------------------------------------ dataset protocol
    def _items(self) -> Sequence[RiverGraph]:
        if self.source is None:
            raise TypeError(
                "TimeWindows has no source: pass source= (a graph, list of graphs or dataset)"
            )
        if isinstance(self.source, RiverGraph):
            return [self.source]
        return self.source

    def _build_index(self) -> list[tuple[int, int]]:
        if self._index is None:
            items = self._items()
            index = []
            for i in range(len(items)):
                index.extend((i, s) for s in self.starts(_num_steps(items[i]), item=i))
            self._index = index
        return self._index

    def __len__(self) -> int:
        return len(self._build_index())

    def __getitem__(self, idx: int) -> RiverGraph:
        item, start = self._build_index()[idx]
        return self.slice(self._items()[item], start)

    def __repr__(self) -> str:
        mode = (
            f"stride={self.stride}"
            if self.random is None
            else f"random={self.random}, seed={self.seed}"
        )
        return f"TimeWindows(window={self.window}, warmup={self.warmup}, {mode})"


class WindowSamples(Dataset):
    """Map-style dataset of given time windows of one graph: item ``i`` is
    ``slice_time(graph, start_i, stop_i)`` with ``warmup_steps`` set, for the stock
    ``torch_geometric.loader.DataLoader`` (a batch is the disjoint union of its windows).

    The trainer draws the windows of an epoch (random starts inside the training period) and
    hands them to this dataset; a ``reader`` (lazy forcing) fills each window's forcing and
    observations from the files, so only the window is read.

    Args:
        graph: the river graph (time-shaped tensors ``[N, T, ...]``).
        windows: ``(start, stop, warmup)`` per sample, time-step indices into ``graph``.
        reader: optional :class:`~gnnhydro.datasets.forcing.ForcingReader`.

    Shapes:
        item ``i``: every time-shaped tensor ``[N, stop_i - start_i, ...]``.
    """

    def __init__(
        self,
        graph: RiverGraph,
        windows: Sequence[tuple[int, int, int]],
        *,
        reader: Any = None,
    ) -> None:
        total = _num_steps(graph)
        for start, stop, warmup in windows:
            if not 0 <= start < stop <= total or not 0 <= warmup < stop - start:
                raise ValueError(
                    f"window ({start}, {stop}, warmup {warmup}) outside the {total} steps"
                )
        self.graph = graph
        self.windows = [tuple(int(v) for v in w) for w in windows]
        self.reader = reader

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> RiverGraph:
        start, stop, warmup = self.windows[idx]
        out = slice_time(self.graph, start, stop)
        if self.reader is not None:
            first = int(out.time_offset)
            out = self.reader.fill(out, first, first + stop - start)
        out.warmup_steps = warmup
        # every item is the whole graph: a batch's static parameters are one copy's, repeated
        # (:meth:`gnnhydro.models.HydroModel.parameters_of`)
        out.whole_graph_window = True
        return out
