"""Tests for gnnhydro.nn.parameterizers: registry, groups, message direction, edge attributes,
batching (disjoint unions) and bounds."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch_geometric.data import Batch, Data

from gnnhydro.config import CONFIG_DIR, compose
from gnnhydro.nn import (
    GINParameterizer,
    GNNParameterizer,
    SAGEParameterizer,
    build_parameterizer,
    list_parameterizers,
    register_parameterizer,
)
from gnnhydro.nn.parameterizers import PARAMETERIZERS, normalize_spec_groups
from gnnhydro.spec import ParamSpec, check_in_bounds, from_bounds

RUNOFF = {
    "fc": ParamSpec("fc", "mm", 50.0, 1000.0, 250.0, True),
    "k1": ParamSpec("k1", "1/day", 0.01, 0.5, 0.1, True),
}
ROUTING = {
    "k": ParamSpec("k", "day", 0.1, 5.0, 1.0),
    "x": ParamSpec("x", "-", 0.0, 0.5, 0.2),
}
GROUPS = {"runoff": (RUNOFF, 4), "routing": (ROUTING, None)}
NAMES = ["sage", "gatv2", "gcn", "gin", "mlp"]
EDGE_NAMES = ["gatv2", "gin"]

# chain 0 → 1 → 2 → 3 and a tributary 4 → 2
CHAIN = torch.tensor([[0, 1, 2, 4], [1, 2, 3, 2]])


def _build(name, **kw):
    kw.setdefault("hidden_channels", 16)
    return build_parameterizer(name, in_channels=3, specs=GROUPS, **kw).eval()


def test_registry_lists_all_and_rejects_unknown():
    assert set(NAMES) <= set(list_parameterizers())
    with pytest.raises(ValueError, match="unknown parameterizer 'nope'"):
        build_parameterizer("nope", in_channels=3, specs=RUNOFF)


def test_register_custom_parameterizer():
    try:

        @register_parameterizer("test_custom_sage")
        class Custom(SAGEParameterizer):
            pass

        p = build_parameterizer("test_custom_sage", in_channels=3, specs=RUNOFF)
        assert isinstance(p, Custom) and Custom.registry_name == "test_custom_sage"
        with pytest.raises(ValueError, match="already registered"):
            register_parameterizer("test_custom_sage")(GINParameterizer)
    finally:
        PARAMETERIZERS._items.pop("test_custom_sage", None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["downstream", "upstream", "both"])
def test_shapes_groups_bounds_and_gradients(name, direction):
    p = _build(name, direction=direction, norm="layer").train()
    x = torch.randn(5, 3)
    out = p(x, CHAIN)
    assert list(out) == ["fc", "k1", "k", "x"]
    assert out["fc"].shape == (5, 4) and out["k1"].shape == (5, 4)
    assert out["k"].shape == (5,) and out["x"].shape == (5,)
    assert p.param_groups == {"runoff": ("fc", "k1"), "routing": ("k", "x")}
    assert p.group_of("k") == "routing" and p.group_of("fc") == "runoff"
    split = p.split_groups(out)
    check_in_bounds(split["runoff"], RUNOFF, owner=name)
    check_in_bounds(split["routing"], ROUTING, owner=name)
    sum(v.sum() for v in out.values()).backward()
    assert p.lin_in.weight.grad is not None and p.lin_in.weight.grad.abs().sum() > 0
    for conv in p.convs:
        grads = [q.grad for q in conv.parameters() if q.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _influence(p, source: int, edge_index=CHAIN) -> torch.Tensor:
    """Which nodes' outputs change when the attributes of node ``source`` change."""
    torch.manual_seed(1)
    x = torch.randn(5, 3)
    base = p(x, edge_index)["k"]
    x2 = x.clone()
    x2[source] += 3.0
    return (p(x2, edge_index)["k"] - base).abs() > 1e-7


@pytest.mark.parametrize("name", ["sage", "gatv2", "gcn", "gin"])
def test_message_direction(name):
    down = _build(name, num_layers=1, direction="downstream")
    up = _build(name, num_layers=1, direction="upstream")
    both = _build(name, num_layers=1, direction="both")
    # downstream: node 1's attributes reach itself and its downstream neighbour 2 only
    assert _influence(down, 1).tolist() == [False, True, True, False, False]
    # upstream: they reach itself and its upstream neighbour 0 only
    assert _influence(up, 1).tolist() == [True, True, False, False, False]
    assert _influence(both, 1).tolist() == [True, True, True, False, False]
    # confluence: node 2 hears both upstream branches (1 and 4) when messages go downstream
    assert _influence(down, 4).tolist() == [False, False, True, False, True]
    # two layers reach two hops downstream
    two = _build(name, num_layers=2, direction="downstream")
    assert _influence(two, 1).tolist() == [False, True, True, True, False]


def test_mlp_ignores_topology():
    p = _build("mlp", num_layers=3, direction="both")
    assert p.direction == "downstream"
    assert _influence(p, 1).tolist() == [False, True, False, False, False]
    x = torch.randn(5, 3)
    torch.testing.assert_close(p(x, CHAIN), p(x, None))


@pytest.mark.parametrize("combine", ["sum", "cat"])
def test_both_directions_have_separate_weights(combine):
    p = _build("sage", direction="both", combine=combine)
    layer = p.convs[0]
    down, up = layer.convs["downstream"], layer.convs["upstream"]
    assert down is not up
    assert not any(a.data_ptr() == b.data_ptr() for a, b in zip(down.parameters(), up.parameters()))
    assert (layer.lin is not None) == (combine == "cat")


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_edge_attributes_are_used(name):
    p = _build(name, edge_dim=2)
    x = torch.randn(5, 3)
    ea = torch.randn(4, 2)
    a = p(x, CHAIN, ea)["k"]
    ea2 = ea.clone()
    ea2[1] += 2.0  # edge 1 → 2
    b = p(x, CHAIN, ea2)["k"]
    changed = (a - b).abs() > 1e-7
    assert changed[2] and not changed[0] and not changed[1]
    with pytest.raises(ValueError, match="edge_attr"):
        p(x, CHAIN)
    with pytest.raises(ValueError, match=r"\[E=4, 2\]"):
        p(x, CHAIN, torch.randn(3, 2))


def test_gin_uses_gine_with_edge_dim():
    from torch_geometric.nn import GINConv, GINEConv

    assert isinstance(_build("gin", edge_dim=1).convs[0].convs["downstream"], GINEConv)
    assert isinstance(_build("gin").convs[0].convs["downstream"], GINConv)
    # a 1-D edge attribute is accepted as [E, 1]
    _build("gin", edge_dim=1)(torch.randn(5, 3), CHAIN, torch.rand(4))


@pytest.mark.parametrize("name", ["sage", "gcn", "mlp"])
def test_edge_dim_rejected_where_unsupported_and_ignored_at_forward(name):
    with pytest.raises(ValueError, match="does not use edge attributes"):
        _build(name, edge_dim=2)
    p = _build(name)
    x = torch.randn(5, 3)
    torch.testing.assert_close(p(x, CHAIN, torch.randn(4, 2)), p(x, CHAIN))


@pytest.mark.parametrize("name", NAMES)
def test_disjoint_union_batch_matches_separate_graphs(name):
    kw = {"edge_dim": 1} if name in EDGE_NAMES else {}
    p = _build(name, direction="both", jk="cat", **kw)
    g1 = Data(x=torch.randn(5, 3), edge_index=CHAIN, edge_attr=torch.rand(4, 1))
    g2 = Data(
        x=torch.randn(3, 3), edge_index=torch.tensor([[0, 1], [2, 2]]), edge_attr=torch.rand(2, 1)
    )
    batch = Batch.from_data_list([g1, g2])
    out = p(batch.x, batch.edge_index, batch.edge_attr, batch=batch.batch)
    for g, sl in ((g1, slice(0, 5)), (g2, slice(5, 8))):
        ref = p(g.x, g.edge_index, g.edge_attr)
        for n in ref:
            torch.testing.assert_close(out[n][sl], ref[n])


@pytest.mark.parametrize("norm", ["batch", "layer", "graph", None])
@pytest.mark.parametrize("jk", ["last", "cat", "max"])
def test_norms_and_jumping_knowledge(norm, jk):
    p = _build("sage", norm=norm, jk=jk, dropout=0.2, num_layers=3).train()
    batch = torch.tensor([0, 0, 0, 1, 1])
    out = p(torch.randn(5, 3), CHAIN, batch=batch)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_dynamic_parameters_through_parameterizer():
    p = build_parameterizer(
        "gatv2",
        in_channels=3,
        specs=GROUPS,
        dynamic={"fc"},
        dynamic_channels=2,
        temporal="conv",
        hidden_channels=8,
    )
    out = p(torch.randn(5, 3), CHAIN, dynamic_input=torch.randn(5, 7, 2))
    assert out["fc"].shape == (5, 7, 4) and out["k1"].shape == (5, 4)
    assert out["fc"].min() >= 50.0 and out["fc"].max() <= 1000.0
    with pytest.raises(ValueError, match="dynamic_input"):
        p(torch.randn(5, 3), CHAIN)
    with pytest.raises(ValueError, match="not in"):
        build_parameterizer("gcn", in_channels=3, specs=GROUPS, dynamic={"zz"})


def test_single_group_form_and_spec_group_errors():
    p = build_parameterizer("gcn", in_channels=3, specs=ROUTING, nmul=None)
    assert p.param_groups == {"params": ("k", "x")}
    assert p(torch.randn(5, 3), CHAIN)["k"].shape == (5,)
    g = normalize_spec_groups({"a": RUNOFF, "b": (ROUTING, None)}, nmul=2)
    assert g["a"][1] == 2 and g["b"][1] is None
    with pytest.raises(ValueError, match="'k'.*unique"):
        normalize_spec_groups({"a": (ROUTING, 1), "b": (ROUTING, None)})
    with pytest.raises(ValueError, match="mixes"):
        normalize_spec_groups({"fc": RUNOFF["fc"], "routing": (ROUTING, None)})
    with pytest.raises(ValueError, match="unknown parameter"):
        p.group_of("fc")


def test_input_validation():
    p = _build("sage")
    x = torch.randn(5, 3)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"node indices \[3\].*columns \[1\]"):
        p(x, CHAIN)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        p(torch.randn(5, 4), CHAIN)
    with pytest.raises(ValueError, match="edge_index"):
        p(torch.randn(5, 3), None)
    with pytest.raises(ValueError, match="direction"):
        _build("sage", direction="sideways")
    with pytest.raises(ValueError, match="norm"):
        _build("sage", norm="instance")


def test_reset_parameters_restores_default_biases():
    p = _build("gin")
    head = p.heads["routing"]
    with torch.no_grad():
        head.static_lin.bias.fill_(7.0)
        w = p.lin_in.weight.clone()
    p.reset_parameters()
    expected = torch.stack(
        [from_bounds(torch.tensor(s.default), s, 0.02) for s in ROUTING.values()]
    )
    torch.testing.assert_close(head.static_lin.bias.data, expected)
    assert not torch.equal(w, p.lin_in.weight)


def test_is_template_base():
    class NoConv(GNNParameterizer):
        pass

    with pytest.raises(NotImplementedError):
        NoConv(3, RUNOFF)


def test_with_hbv_and_routing_specs():
    hbv = pytest.importorskip("gnnhydro.runoff.hbv")
    specs = {"runoff": (hbv.HBV_PARAM_SPECS, 16), "routing": (hbv.UH_PARAM_SPECS, None)}
    p = build_parameterizer("sage", in_channels=3, specs=specs, hidden_channels=8)
    out = p(torch.randn(5, 3) * 100, CHAIN)
    split = p.split_groups(out)
    check_in_bounds(split["runoff"], hbv.HBV_PARAM_SPECS, owner="hbv")
    check_in_bounds(split["routing"], hbv.UH_PARAM_SPECS, owner="uh")
    assert out["fc"].shape == (5, 16) and out["route_a"].shape == (5,)


@pytest.mark.parametrize("name", ["mlp", "global"])
def test_topology_free_parameterizers_refuse_unknown_options(name):
    """An option no layer reads (a typo such as ``hiden_channels``, or a GNN option given to the
    MLP) is an error naming it, not a silent drop."""
    with pytest.raises(ValueError, match="unknown option.*hiden_channels"):
        build_parameterizer(name, in_channels=3, specs=RUNOFF, hiden_channels=8)
    p = build_parameterizer(name, in_channels=3, specs=RUNOFF, hidden_channels=8)
    assert p.hidden_channels == 8


_PARAMETERIZER_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "parameterizer").glob("*.yaml"))


@pytest.mark.parametrize("config", _PARAMETERIZER_CONFIGS)
def test_every_parameterizer_config_builds_with_its_options(config):
    """Each shipped ``parameterizer=`` config composes and its keys are the class's arguments
    (a variant such as ``regional_k16`` reaches the class with its own values)."""
    options = OmegaConf.to_container(compose([f"parameterizer={config}"]).parameterizer)
    name = options.pop("name")
    extra = {"num_donors": 2} if name == "donor" or options.get("donor_residual") else {}
    p = build_parameterizer(name, in_channels=3, specs=RUNOFF, nmul=None, **options, **extra)
    for key in ("k_neighbours", "proximity", "max_distance_km", "donor_residual"):
        if key in options:
            assert getattr(p, key) == options[key]
    if config == "regional_k16":
        assert p.k_neighbours == 16 and options["signature_dropout"] == 0.5
    if config == "regional_residual":
        assert p.residual_table.shape == (2, p.hidden_channels) and p.donor_residual == "others"
