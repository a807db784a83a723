"""TimeWindows, time_slice and gauge splits on small hand-built graphs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.loader import DataLoader

from gnnhydro.datasets import TimeWindows, k_fold_gauges, spatial_holdout, time_slice
from gnnhydro.datasets.splits import upstream_mask
from gnnhydro.graph import RiverGraph

T = 30


def make_graph(num_static: int = 2) -> RiverGraph:
    # 0 -> 2, 1 -> 2, 2 -> 4, 3 -> 4, 5 -> 6 (two trees)
    g = RiverGraph.from_edges(list(range(7)), downstream=[2, 2, 4, 4, None, 6, None])
    n = g.num_nodes
    g.x = torch.arange(n * num_static, dtype=torch.float32).view(n, num_static)
    g.forcing = torch.arange(n * T * 3, dtype=torch.float32).view(n, T, 3)
    g.q_obs = torch.arange(n * T, dtype=torch.float32).view(n, T)
    g.time = pd.date_range("2001-01-01", periods=T, freq="D").to_numpy()
    g.gauge_index = torch.tensor([1, 2, 4, 6])
    g.gauge_id = ["g1", "g2", "g4", "g6"]
    g.step_seconds = 86400.0
    return g


def test_deterministic_windows_slice_time_tensors():
    g = make_graph()
    w = TimeWindows(8, 4, stride=5)
    assert w.starts(T) == [0, 5, 10, 15]
    wins = w(g)
    assert len(wins) == 4
    win = wins[2]
    assert win.forcing.shape == (7, 12, 3) and win.q_obs.shape == (7, 12)
    assert torch.equal(win.forcing, g.forcing[:, 10:22]) and torch.equal(
        win.q_obs, g.q_obs[:, 10:22]
    )
    assert win.warmup_steps == 4 and win.time_offset == 10
    assert np.array_equal(win.time, g.time[10:22])
    assert win.x is g.x and torch.equal(win.edge_index, g.edge_index)
    assert g.forcing.shape == (7, T, 3)  # the source graph is untouched


def test_static_tensor_with_time_length_is_not_sliced():
    g = make_graph(num_static=T)  # x is [N, T]: same shape as a time series
    win = TimeWindows(5, 0, stride=5).slice(g, 5)
    assert win.x.shape == (7, T) and win.q_obs.shape == (7, 5)
    g.extra_static = torch.zeros(7, T)
    win = TimeWindows(5, 0, stride=5, static_keys=["extra_static"]).slice(g, 5)
    assert win.extra_static.shape == (7, T)


def test_random_windows_are_seeded():
    g = make_graph()
    a = TimeWindows(10, 2, random=6, seed=3, source=[g, g])
    b = TimeWindows(10, 2, random=6, seed=3, source=[g, g])
    assert len(a) == 12
    assert [x.time_offset for x in a] == [x.time_offset for x in b]
    assert all(0 <= x.time_offset <= T - 12 for x in a)
    first = [x.time_offset for x in a]
    a.set_epoch(1)
    assert [x.time_offset for x in a] != first
    with pytest.raises(ValueError, match="stride"):
        TimeWindows(10, 2, stride=3, random=2)
    with pytest.raises(ValueError, match="shorter than one window"):
        TimeWindows(40, 0).starts(T)


def test_windows_batch_with_pyg_dataloader():
    g = make_graph()
    windows = TimeWindows(6, 3, stride=4, source=g)
    batch = next(iter(DataLoader(windows, batch_size=3)))
    assert batch.num_graphs == 3
    assert batch.forcing.shape == (21, 9, 3) and batch.q_obs.shape == (21, 9)
    assert batch.warmup_steps.tolist() == [3, 3, 3]
    assert batch.edge_index.size(1) == 3 * g.edge_index.size(1)
    assert batch.gauge_index.tolist() == [1, 2, 4, 6, 8, 9, 11, 13, 15, 16, 18, 20]
    assert torch.equal(batch.forcing[7:14], g.forcing[:, 4:13])
    assert len(batch.time) == 3 and np.array_equal(batch.time[1], g.time[4:13])


def test_time_slice_by_dates():
    g = make_graph()
    part = time_slice(g, "2001-01-05", "2001-01-10")
    assert len(part.time) == 6 and str(part.time[0])[:10] == "2001-01-05"
    assert torch.equal(part.q_obs, g.q_obs[:, 4:10])
    assert len(time_slice(g, None, "2001-01-03").time) == 3
    with pytest.raises(ValueError, match="selects no time step"):
        time_slice(g, "2002-01-01", "2002-02-01")


def test_upstream_mask_and_holdout():
    g = make_graph()
    assert upstream_mask(g, torch.tensor([2])).nonzero().flatten().tolist() == [0, 1, 2]
    assert upstream_mask(g, torch.tensor([4, 6])).all()
    split = spatial_holdout(g, 0.25, seed=0)
    assert split.holdout_index.numel() == 1 and split.train_index.numel() == 3
    assert sorted(split.train_index.tolist() + split.holdout_index.tolist()) == [1, 2, 4, 6]
    # exclusive area = upstream of held-out gauges and of no training gauge
    hold = upstream_mask(g, split.holdout_index)
    train = upstream_mask(g, split.train_index)
    assert torch.equal(split.holdout_exclusive, hold & ~train)
    assert torch.equal(split.train_nodes, train)
    assert split.holdout_gauge_id == [
        g.gauge_id[g.gauge_index.tolist().index(int(i))] for i in split.holdout_index
    ]
    assert spatial_holdout(g, 0.25, seed=0).holdout_index.tolist() == split.holdout_index.tolist()


def test_nested_holdout_has_no_exclusive_area():
    from gnnhydro.datasets.splits import split_from_gauges

    g = make_graph()
    s = split_from_gauges(g, torch.tensor([1]))  # hold out gauge at node 2 (nested in 4's basin)
    assert s.holdout_index.tolist() == [2]
    assert not s.holdout_exclusive.any() and s.exclusive_fraction.tolist() == [0.0]
    s = split_from_gauges(g, torch.tensor([3]))  # node 6: independent tree
    assert s.holdout_exclusive.nonzero().flatten().tolist() == [5, 6]
    assert s.exclusive_fraction.tolist() == [1.0]


def test_k_fold_partitions_gauges():
    g = make_graph()
    folds = k_fold_gauges(g, 2, seed=1)
    held = sorted(sum((f.holdout_index.tolist() for f in folds), []))
    assert held == [1, 2, 4, 6]
    assert all(f.holdout_index.numel() == 2 for f in folds)
    with pytest.raises(ValueError, match="k must be"):
        k_fold_gauges(g, 5)
