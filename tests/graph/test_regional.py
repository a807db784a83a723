"""Regional edge sets on hand-built graphs: relations, spatial neighbours against a brute-force
haversine search, distances, area ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.graph import RiverGraph
from gnnhydro.graph.regional import drainage_area, regional_edges, spatial_neighbours


def _haversine_km(a, b):
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _graph():
    # chain 0 → 1 → 2, and two isolated catchments 3, 4; ~11 km per 0.1° of latitude
    pos = torch.tensor([[10.0, 50.0], [10.0, 50.1], [10.0, 50.2], [10.1, 50.1], [12.0, 50.0]])
    return RiverGraph(
        edge_index=torch.tensor([[0, 1], [1, 2]]),
        node_id=list(range(5)),
        area_km2=torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]),
        pos=pos,
    )


def test_spatial_neighbours_equal_a_brute_force_search():
    rng = np.random.default_rng(0)
    pos = np.stack([rng.uniform(5, 8, 60), rng.uniform(45, 47, 60)], axis=1)
    edge_index, distance = spatial_neighbours(torch.from_numpy(pos), k=5, max_distance_km=60.0)
    for node in range(60):
        d = np.array([_haversine_km(pos[node], pos[j]) if j != node else np.inf for j in range(60)])
        expected = [j for j in np.argsort(d)[:5] if d[j] <= 60.0]
        got = edge_index[0, edge_index[1] == node].tolist()
        assert sorted(got) == sorted(expected)
        for j, dist in zip(got, distance[edge_index[1] == node].tolist(), strict=True):
            assert dist == pytest.approx(d[j], rel=1e-4)


def test_regional_edges_relations_distances_and_area_ratios():
    g = _graph()
    edge_index, attr = regional_edges(g, k=2, max_distance_km=30.0)
    pairs = {(int(s), int(t)): attr[e] for e, (s, t) in enumerate(edge_index.T.tolist())}
    # river edges both ways with their relation (receiver's view)
    assert pairs[(0, 1)][1:4].tolist() == [1.0, 0.0, 0.0]  # 1 hears its upstream reach 0
    assert pairs[(1, 0)][1:4].tolist() == [0.0, 1.0, 0.0]  # 0 hears its downstream reach 1
    # spatial pairs not repeated where a river edge joins them; node 4 is > 30 km from all
    spatial = [p for p, a in pairs.items() if a[3] == 1.0]
    assert (0, 1) not in spatial and (1, 0) not in spatial
    assert all(4 not in p for p in pairs)
    assert (3, 1) in spatial and (1, 3) in spatial and (3, 0) in spatial
    assert (0, 2) not in pairs and (2, 0) not in pairs  # not among the 2 nearest of either
    pos = g.pos.numpy()
    for (s, t), a in pairs.items():
        assert float(a[0]) == pytest.approx(_haversine_km(pos[s], pos[t]) / 30.0, rel=1e-4)
    # log of drainage-area ratios: upstream areas 10, 30, 60, 40, 50 km²
    up = {0: 10.0, 1: 30.0, 2: 60.0, 3: 40.0, 4: 50.0}
    assert drainage_area(g).tolist() == [up[i] for i in range(5)]
    for (s, t), a in pairs.items():
        assert float(a[4]) == pytest.approx(math.log(up[s] / up[t]), rel=1e-5)


def test_isolated_catchments_get_spatial_neighbours_only():
    g = _graph()
    g.edge_index = torch.zeros(2, 0, dtype=torch.long)
    edge_index, attr = regional_edges(g, k=1, max_distance_km=500.0)
    assert edge_index.shape[1] == 5 and bool((attr[:, 3] == 1).all())
    with pytest.raises(ValueError, match="node positions"):
        g.pos = None
        regional_edges(g)


def _edge_set(edge_index, attr, offset=0):
    return {
        (int(s) + offset, int(t) + offset, tuple(round(float(v), 5) for v in a))
        for (s, t), a in zip(edge_index.T.tolist(), attr, strict=True)
    }


def test_a_batch_of_copies_has_each_copys_edges_and_no_twins():
    """Training batches are copies of one network (windows) at the same positions: each copy
    must get the edges the network alone gets, not the nearest nodes of the other copies (its
    own twins at distance 0), or training and evaluation would see different graphs."""
    from torch_geometric.data import Batch

    g = _graph()
    alone = regional_edges(g, k=2, max_distance_km=30.0)
    batch = Batch.from_data_list([_graph(), _graph(), _graph()])
    edge_index, attr = regional_edges(batch, k=2, max_distance_km=30.0)
    graph_of = batch.batch
    assert bool((graph_of[edge_index[0]] == graph_of[edge_index[1]]).all())
    expected = set().union(*(_edge_set(*alone, offset=5 * c) for c in range(3)))
    assert _edge_set(edge_index, attr) == expected
