"""A by-hand batch of training windows, the reference the trainer's DataLoader batches are
checked against."""

from __future__ import annotations

from typing import Any

from gnnhydro.datasets.windows import slice_time


def disjoint_union(exp: Any, windows: list[tuple[int, int, int]]) -> tuple[Any, int]:
    """Disjoint union of window copies of ``exp.graph``; windows share one warm-up length (the
    shortest). Returns the batch and its warm-up steps."""
    from torch_geometric.data import Batch

    warm = min(w for _, _, w in windows)
    length = min(stop - start - (w - warm) for start, stop, w in windows)
    items = [
        slice_time(exp.graph, start + (w - warm), start + (w - warm) + length)
        for start, _, w in windows
    ]
    if len(items) == 1:
        return items[0], warm
    return Batch.from_data_list(items), warm
