"""Cross-validation folds over gauges: a partition, downstream closure (no training gauge sees
a held-out basin), spatially clustered regional folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnhydro.datasets.splits import cv_folds, k_fold_gauges, upstream_mask
from gnnhydro.datasets.synthetic import generate_synthetic_basin


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=2, num_nodes=150, years=1, num_gauges=24)


def _in_basin(graph, gauge, node):
    return bool(upstream_mask(graph, torch.tensor([gauge]))[node])


@pytest.mark.parametrize("strategy", ["random", "regional"])
def test_folds_partition_the_gauges_and_are_downstream_closed(graph, strategy):
    folds = cv_folds(graph, 4, seed=3, strategy=strategy, downstream_closed=True)
    held = torch.cat([f.holdout_index for f in folds]).sort().values
    assert held.tolist() == graph.gauge_index.sort().values.tolist()
    for fold in folds:
        train, hold, out = (
            fold.train_index.tolist(),
            fold.holdout_index.tolist(),
            fold.excluded_index.tolist(),
        )
        assert not set(train) & set(hold) and not set(out) & (set(train) | set(hold))
        assert len(train) + len(hold) + len(out) == graph.gauge_index.numel()
        # excluded = exactly the non-held-out gauges with a held-out gauge in their basin
        expected = sorted(
            g
            for g in graph.gauge_index.tolist()
            if g not in hold and any(_in_basin(graph, g, h) for h in hold)
        )
        assert sorted(out) == expected
        # so every held-out basin is ungauged: its exclusive area is all of it
        whole = upstream_mask(graph, fold.holdout_index)
        assert torch.equal(fold.holdout_exclusive, whole & ~fold.train_nodes)
        for h in hold:
            assert not any(_in_basin(graph, t, h) for t in train)


def test_regional_folds_are_spatially_compact_and_random_folds_unchanged(graph):
    pos = graph.pos.numpy()

    def spread(folds):
        return np.mean([pos[f.holdout_index.numpy()].std(axis=0).sum() for f in folds])

    assert spread(cv_folds(graph, 4, seed=0, strategy="regional")) < 0.6 * spread(
        cv_folds(graph, 4, seed=0)
    )
    # the random folds are k_fold_gauges' (same permutation, same order)
    for a, b in zip(cv_folds(graph, 3, seed=5), k_fold_gauges(graph, 3, seed=5), strict=True):
        assert torch.equal(a.holdout_index, b.holdout_index) and a.excluded_index.numel() == 0
    with pytest.raises(ValueError, match="random or 'regional'|'random' or 'regional'"):
        cv_folds(graph, 3, strategy="nearest")


def test_holdout_config_honours_downstream_closed(graph):
    from gnnhydro.datasets.splits import spatial_holdout
    from gnnhydro.training.experiment import make_gauge_split

    cfg = {"fraction": 0.3, "seed": 1, "downstream_closed": True}
    split = make_gauge_split(graph, cfg)
    expected = spatial_holdout(graph, 0.3, seed=1, downstream_closed=True)
    assert split.holdout_gauge_id == expected.holdout_gauge_id
    for h in split.holdout_index.tolist():  # no training gauge downstream of a held-out one
        assert not any(_in_basin(graph, t, h) for t in split.train_index.tolist())
