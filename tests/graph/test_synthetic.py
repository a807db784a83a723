"""Synthetic river networks: deterministic, valid, realistic branching, shallow vs deep."""

from __future__ import annotations

import torch

from gnnhydro.graph.synthetic import random_river_network


def test_deterministic_tree_with_binary_confluences():
    a = random_river_network(500, depth="shallow", seed=3)
    b = random_river_network(500, depth="shallow", seed=3)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.length_m, b.length_m)
    assert a.num_nodes == 500 and a.edge_index.shape[1] == 499  # a tree: one outlet
    assert int(a.in_degree.max()) <= 2 and int(a.out_degree.max()) <= 1
    assert a.outlets.tolist() == [0]
    assert (a.length_m > 0).all() and (a.area_km2 > 0).all()


def test_deep_networks_are_deep_and_chain_dominated():
    shallow = random_river_network(10_000, depth="shallow", seed=0)
    deep = random_river_network(10_000, depth="deep", seed=0)
    assert shallow.num_levels < 60
    assert deep.num_levels > 300  # the NWM Lower Colorado (11,248 reaches) has 649 levels
    assert (deep.in_degree == 1).float().mean() > 0.9


def test_bifurcations_make_a_valid_dag_with_split_fractions():
    g = random_river_network(300, depth="deep", seed=1, bifurcations=15)
    src = g.edge_index[0]
    assert int((g.out_degree > 1).sum()) == 15
    sums = torch.zeros(g.num_nodes, dtype=g.edge_weight.dtype).index_add(0, src, g.edge_weight)
    has_down = g.out_degree > 0
    assert torch.allclose(sums[has_down], torch.ones(int(has_down.sum()), dtype=sums.dtype))
    assert (g.topo_level[g.edge_index[1]] > g.topo_level[src]).all()
