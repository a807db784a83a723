"""The gauge context and the regionalization parameterizers: donor weights (basin membership,
inverse squared distance), global = one parameter set, donor = the basins' own parameters,
regional message passing reaches exactly as far as its layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gnnhydro.datasets.signatures import SIGNATURE_NAMES
from gnnhydro.graph import RiverGraph
from gnnhydro.graph.regional import great_circle_km
from gnnhydro.nn import build_parameterizer
from gnnhydro.spec import ParamSpec
from gnnhydro.training.gauge_context import attach_gauge_context

SPECS = {"a": ParamSpec("a", "-", 0.0, 1.0, 0.5), "b": ParamSpec("b", "mm", 10.0, 20.0, 15.0)}


def _chain_graph(edge_index=None, pos=None):
    # 0 → 1 → 2 (gauge G1 at 2), 3 → 4 (gauge G2 at 4), 5 alone; 6 far away
    if pos is None:
        pos = torch.tensor(
            [[0.0, 0.0], [0.0, 0.1], [0.0, 0.2], [0.5, 0.0], [0.5, 0.1], [1.0, 1.0], [3.0, 3.0]]
        )
    return RiverGraph(
        edge_index=torch.tensor([[0, 1, 3], [1, 2, 4]]) if edge_index is None else edge_index,
        node_id=[f"n{i}" for i in range(7)],
        area_km2=torch.full((7,), 10.0),
        pos=pos,
        x=torch.randn(7, 3),
    )


def _table(available=(True, True)):
    frame = pd.DataFrame(
        {
            "gauge_id": ["G1", "G2"],
            "node_id": ["n2", "n4"],
            "lon": [0.0, 0.5],
            "lat": [0.1, 0.05],
            "area_km2": [30.0, 20.0],
            "available": list(available),
        }
    )
    for j, name in enumerate(SIGNATURE_NAMES):
        frame[name] = [1.0 + j, 3.0 + j]
    return frame


def test_gauge_context_donor_weights_and_signatures():
    g = attach_gauge_context(_chain_graph(), _table(), donors=2)
    rows, weights = g.donor_row, g.donor_weight
    # nodes in a training basin: that basin alone
    for node, row in [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]:
        assert rows[node, 0] == row and weights[node].tolist() == [1.0, 0.0]
    # the others: 1/d² over the two centroids, nearest first
    for node in (5, 6):
        d = great_circle_km(
            np.repeat(g.pos[node].numpy()[None], 2, 0), np.array([[0.0, 0.1], [0.5, 0.05]])
        )
        w = (1 / d**2) / (1 / d**2).sum()
        order = np.argsort(d)
        assert rows[node].tolist() == order.tolist()
        assert np.allclose(weights[node].numpy(), w[order], rtol=1e-5)
    # standardised signatures at the two gauge nodes only (±1: two values per signature)
    assert g.signature_mask.tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert torch.allclose(g.gauge_signatures[2, 2:], -torch.ones(6)) and torch.allclose(
        g.gauge_signatures[4, 2:], torch.ones(6)
    )
    assert g.gauge_signatures[[0, 1, 3, 5, 6]].abs().sum() == 0
    g = attach_gauge_context(_chain_graph(), _table((True, False)))
    assert (
        g.signature_mask.tolist() == [0, 0, 1, 0, 0, 0, 0]
        and g.gauge_signatures[4].abs().sum() == 0
    )


def test_proximity_signatures_come_from_other_basins_only():
    """Each node gets the 1/d²-weighted signatures of the nearest gauges whose basin does not hold
    it: nodes in G1's basin see G2 only (and vice versa), the others both; never their own."""
    g = attach_gauge_context(_chain_graph(), _table(), donors=2)
    sig = g.gauge_signatures[[2, 4]]  # standardised signatures of G1, G2
    centroids = np.array([[0.0, 0.1], [0.5, 0.05]])
    for node in range(7):
        d = great_circle_km(np.repeat(g.pos[node].numpy()[None], 2, 0), centroids).clip(1.0)
        own = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}.get(node)
        w = 1.0 / d**2
        if own is not None:
            w[own] = 0.0
        expected = (w[:, None] * sig.numpy()).sum(0) / w.sum()
        assert np.allclose(g.proximity_signatures[node].numpy(), expected, atol=1e-6), node
        nearest = d[w > 0].min()
        assert np.isclose(float(g.proximity_distance[node]), np.log10(nearest), atol=1e-5)
    # one available gauge: its own basin has no donor (zeros), every other node gets it
    g = attach_gauge_context(_chain_graph(), _table((True, False)))
    assert g.proximity_signatures[[0, 1, 2]].abs().sum() == 0
    assert torch.allclose(g.proximity_signatures[5], g.gauge_signatures[2])
    # the regional parameterizer reads them only with proximity=true
    net = build_parameterizer(
        "regional", in_channels=3, specs=SPECS, nmul=None, proximity=True, hidden_channels=8
    )
    inputs = net.graph_inputs(g, g.x)
    assert inputs["x"].shape[1] == 3 + 2 * (len(SIGNATURE_NAMES) + 1)
    assert torch.equal(inputs["x"][:, -9:-1], g.proximity_signatures)


@pytest.mark.parametrize("mode", ["others", "basin"])
def test_donor_residual_adds_the_donor_basins_weighted_residuals(mode):
    """``donor_residual``: the embedding before the heads is the plain one plus the weighted
    residuals of the node's donor basins: ``others`` the proximity rows (the 1/d²-weighted
    nearest basins that do not hold the node: they reproduce the proximity signatures, and a
    node's own basin never enters), ``basin`` the donor rows (a node in a training basin takes
    that basin's alone). Gradients reach only the residuals a node uses; residual dropout acts
    in training only, on whole basins."""
    g = attach_gauge_context(_chain_graph(), _table(), donors=2)
    sig = g.gauge_signatures[[2, 4]]
    assert torch.allclose(
        (g.proximity_weight.unsqueeze(-1) * sig[g.proximity_row]).sum(1),
        g.proximity_signatures,
        atol=1e-6,
    )
    own = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}
    for node, row in own.items():  # the own basin has weight 0 wherever it appears
        assert float(g.proximity_weight[node][g.proximity_row[node] == row].sum()) == 0.0
    assert torch.allclose(g.proximity_weight.sum(1), torch.ones(7))
    with pytest.raises(ValueError, match="num_donors"):
        build_parameterizer("regional", in_channels=3, specs=SPECS, donor_residual=mode)
    with pytest.raises(ValueError, match="basin or others"):
        build_parameterizer("regional", in_channels=3, specs=SPECS, donor_residual="near")
    torch.manual_seed(0)
    net = build_parameterizer(
        "regional",
        in_channels=3,
        specs=SPECS,
        nmul=None,
        hidden_channels=8,
        donor_residual=mode,
        num_donors=2,
        signature_dropout=0.0,
        residual_dropout=0.5,
    ).eval()
    inputs = net.graph_inputs(g, g.x)
    plain = net.embed(inputs["x"], inputs["edge_index"], inputs["edge_attr"])
    with torch.no_grad():
        net.residual_table.copy_(torch.randn(2, 8))
    rows, weights = (
        (g.proximity_row, g.proximity_weight) if mode == "others" else (g.donor_row, g.donor_weight)
    )
    residual = torch.stack(
        [
            sum(float(weights[i, j]) * net.residual_table[rows[i, j]] for j in range(2))
            for i in range(7)
        ]
    )
    expected = {}
    for head in net.heads.values():
        expected.update(head(plain + residual, None))
    out = net(**inputs)
    for name in SPECS:
        assert torch.allclose(out[name], expected[name], atol=1e-6)
    out["a"][[0, 1, 2]].sum().backward()  # G1's basin: G2's residual (others) or its own (basin)
    used, unused = (1, 0) if mode == "others" else (0, 1)
    assert net.residual_table.grad[unused].abs().sum() == 0
    assert net.residual_table.grad[used].abs().sum() > 0
    net.train()  # dropout: over steps, each basin's residual is now present, now absent
    seen = set()
    for _ in range(20):
        h = net(**inputs)["a"][[0, 1, 2]].detach()
        seen.add(bool(torch.allclose(h, expected["a"][[0, 1, 2]], atol=1e-6)))
    assert seen == {True, False}


def test_global_gives_one_parameter_set_and_donor_the_basins_own():
    g = attach_gauge_context(_chain_graph(), _table(), donors=2)
    glob = build_parameterizer("global", in_channels=3, specs=SPECS, nmul=None)
    out = glob(**glob.graph_inputs(g, g.x))
    assert torch.allclose(out["a"], out["a"][0].expand(7)) and out["b"].requires_grad
    donor = build_parameterizer("donor", in_channels=3, specs=SPECS, nmul=None, num_donors=2)
    with torch.no_grad():
        donor.embedding.copy_(torch.randn(2, donor.hidden_channels))
    out = donor(**donor.graph_inputs(g, g.x))
    own = {}
    for head in donor.heads.values():
        own.update(head(donor.embedding, None))
    for name in SPECS:
        assert torch.allclose(out[name][[0, 1, 2]], own[name][0].expand(3))
        assert torch.allclose(out[name][[3, 4]], own[name][1].expand(2))
        w = g.donor_weight[5]
        expected = w[0] * own[name][g.donor_row[5, 0]] + w[1] * own[name][g.donor_row[5, 1]]
        assert torch.allclose(out[name][5], expected)
    out["a"].sum().backward()
    assert donor.embedding.grad.abs().sum(dim=1).gt(0).all()  # both basins learn


@pytest.mark.parametrize("layers", [1, 2])
def test_regional_signatures_reach_as_far_as_the_layers(layers):
    torch.manual_seed(0)
    g = _chain_graph(  # one chain 0 → … → 5, nodes far apart: no spatial edges
        torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]),
        torch.tensor([[0.0, 5.0 * i] for i in range(7)]),
    )
    table = _table()
    table["node_id"] = ["n0", "n6"]
    p = build_parameterizer(
        "regional", in_channels=3, specs=SPECS, nmul=None, num_layers=layers, hidden_channels=16
    )
    p.eval()
    before = p(**p.graph_inputs(attach_gauge_context(g, table), g.x))["a"]
    table.loc[0, "q_mean"] = 50.0  # the signature at node 0 changes
    after = p(**p.graph_inputs(attach_gauge_context(g, table), g.x))["a"]
    changed = (before - after).abs() > 1e-7
    assert changed.tolist()[: layers + 1] == [True] * (layers + 1)
    assert not changed[layers + 1 : 6].any()
    with pytest.raises(ValueError, match="gauge_signatures"):
        g2 = _chain_graph()
        p(**p.graph_inputs(g2, g2.x))


def test_signature_dropout_hides_whole_gauges_in_training_only():
    torch.manual_seed(0)
    n = 400
    g = RiverGraph(
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        node_id=[f"n{i}" for i in range(n)],
        area_km2=torch.full((n,), 10.0),
        pos=torch.stack([torch.linspace(0, 10, n), torch.zeros(n)], dim=1),
        x=torch.randn(n, 3),
    )
    g.gauge_signatures = torch.randn(n, len(SIGNATURE_NAMES))
    g.signature_mask = torch.ones(n)
    p = build_parameterizer(
        "regional", in_channels=3, specs=SPECS, nmul=None, signature_dropout=0.5
    )
    p.train()
    x = p.graph_inputs(g, g.x)["x"]
    kept = x[:, -1]
    assert 0.4 < kept.mean() < 0.6  # about half the gauges hidden in this step
    assert torch.equal(
        x[kept == 0, 3:-1], torch.zeros(int((kept == 0).sum()), len(SIGNATURE_NAMES))
    )
    assert torch.equal(x[kept == 1, 3:-1], g.gauge_signatures[kept == 1])
    p.eval()
    assert torch.equal(p.graph_inputs(g, g.x)["x"][:, -1], torch.ones(n))


def test_regional_edges_are_cached_by_the_graphs_content():
    """Each training step collates new tensors of the same windows' graph: the edges are built
    once for that content, and again for another graph (other positions, other batch sizes)."""
    from torch_geometric.data import Batch

    p = build_parameterizer("regional", in_channels=3, specs=SPECS, nmul=None)
    first = p.edges_of(Batch.from_data_list([_chain_graph(), _chain_graph()]))
    again = p.edges_of(Batch.from_data_list([_chain_graph(), _chain_graph()]))
    assert again is first
    moved = _chain_graph(pos=torch.tensor([[0.0, 0.1 * i] for i in range(7)]))
    other = p.edges_of(Batch.from_data_list([moved, moved]))
    assert other is not first and not torch.equal(other[1], first[1])
    three = p.edges_of(Batch.from_data_list([_chain_graph()] * 3))
    assert three[0].shape[1] == 3 * first[0].shape[1] // 2
