import networkx as nx
import numpy as np
import pytest
import torch

from gnnhydro.graph import RiverGraph, topology


def _random_tree(n: int, seed: int) -> nx.DiGraph:
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    G.add_node(0)
    for v in range(1, n):
        G.add_edge(v, int(rng.integers(0, v)))  # v drains into an earlier node
    return G


def test_levels_match_networkx_longest_path():
    G = _random_tree(300, 1)
    g = RiverGraph.from_networkx(G)
    # independent reference: longest path from any source, by dynamic programming in networkx order
    ref = {}
    for v in nx.topological_sort(G):
        preds = list(G.predecessors(v))
        ref[v] = 0 if not preds else 1 + max(ref[u] for u in preds)
    expected = torch.tensor([ref[v] for v in G.nodes])
    assert torch.equal(g.topo_level, expected)
    order = g.topo_order.tolist()
    position = {v: k for k, v in enumerate(order)}
    for u, v in g.edge_index.t().tolist():
        assert position[u] < position[v]


def test_outlets_headwaters_and_basin():
    G = nx.DiGraph([("a", "c"), ("b", "c"), ("c", "e"), ("d", "e"), ("f", "g")])
    g = RiverGraph.from_networkx(G)
    ids = g.node_id
    assert sorted(ids[i] for i in g.outlets.tolist()) == ["e", "g"]
    assert sorted(ids[i] for i in g.headwaters.tolist()) == ["a", "b", "d", "f"]
    basin = {ids[i] for i in g.upstream_nodes("c", by_id=True).tolist()}
    assert basin == {"a", "b", "c"}
    assert {ids[i] for i in g.upstream_nodes(g.index_of("e")).tolist()} == {"a", "b", "c", "d", "e"}


def test_accumulate_area_with_split_fractions():
    # a -> b (0.3), a -> c (0.7), b -> d, c -> d
    g = RiverGraph.from_edges(
        ["a", "b", "c", "d"],
        edges=[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        weights=[0.3, 0.7, 1.0, 1.0],
        area_km2=[10.0, 1.0, 2.0, 4.0],
    )
    acc = g.upstream_area_km2
    assert torch.allclose(acc, torch.tensor([10.0, 4.0, 9.0, 17.0]))
    # differentiable: d acc[d] / d area = [1, 1, 1, 1]
    area = torch.tensor([10.0, 1.0, 2.0, 4.0], requires_grad=True)
    g.accumulate(area)[3].backward()
    assert torch.allclose(area.grad, torch.ones(4))


def test_accumulate_matches_networkx_on_random_tree():
    G = _random_tree(500, 3)
    g = RiverGraph.from_networkx(G)
    values = torch.rand(500, dtype=torch.float64)
    acc = g.accumulate(values)
    for v in [0, 5, 17, 123]:
        basin = nx.ancestors(G, v) | {v}
        assert acc[v].item() == pytest.approx(values[list(basin)].sum().item())


@pytest.mark.parametrize("max_nodes,max_paths", [(10, None), (50, None), (None, 200), (25, 400)])
def test_stage_plan_partition_is_connected_bounded_and_ordered(max_nodes, max_paths):
    G = _random_tree(400, 7)
    g = RiverGraph.from_networkx(G)
    plan = g.stage_plan(max_nodes=max_nodes, max_paths=max_paths)
    all_nodes = torch.cat(plan.stages)
    assert sorted(all_nodes.tolist()) == list(range(400))  # a partition
    ids = g.node_id
    for k, stage in enumerate(plan.stages):
        assert (plan.stage_of_node[stage] == k).all()
        if max_nodes is not None:
            assert stage.numel() <= max_nodes
        sub = G.subgraph([ids[i] for i in stage.tolist()])
        assert nx.is_weakly_connected(sub)
        if max_paths is not None:
            paths = sum(len(nx.ancestors(sub, v)) + 1 for v in sub.nodes)
            assert paths <= max_paths
        # nodes inside a stage are sorted by level
        lv = g.topo_level[stage]
        assert (lv[1:] >= lv[:-1]).all()
    # execution order: every cut edge goes from an earlier stage to a later one
    src, dst = g.edge_index[:, plan.cut_edges]
    assert (plan.stage_of_node[src] < plan.stage_of_node[dst]).all()
    cut = plan.stage_of_node[g.edge_index[0]] != plan.stage_of_node[g.edge_index[1]]
    assert torch.equal(cut.nonzero().flatten(), plan.cut_edges)
    # deterministic
    again = topology.stage_plan(
        g.edge_index, g.num_nodes, g.topo_level, max_nodes=max_nodes, max_paths=max_paths
    )
    assert torch.equal(again.stage_of_node, plan.stage_of_node)


def test_stage_plan_on_dag_with_bifurcation_is_acyclic():
    g = RiverGraph.from_edges(
        list(range(6)),
        edges=[(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5)],
        weights=[0.5, 0.5, 1, 1, 1, 1],
    )
    plan = g.stage_plan(max_nodes=2)
    src, dst = g.edge_index[:, plan.cut_edges]
    assert (plan.stage_of_node[src] < plan.stage_of_node[dst]).all()
    assert sorted(torch.cat(plan.stages).tolist()) == list(range(6))


def test_find_cycle_names_cycle():
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 1, 0]])
    cycle = topology.find_cycle(ei, 4)
    assert sorted(cycle) == [1, 2]
    assert topology.find_cycle(torch.tensor([[0, 1], [1, 2]]), 3) is None
