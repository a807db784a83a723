"""Tests for gnnhydro.nn.heads: bounded heads by name, shapes, defaults, temporal causality."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.nn import ParameterHeads, TemporalEncoder
from gnnhydro.spec import ParamSpec, check_in_bounds, from_bounds, to_bounds

SPECS = {
    "fc": ParamSpec("fc", "mm", 50.0, 1000.0, 250.0, True),
    "k1": ParamSpec("k1", "1/day", 0.01, 0.5, 0.1, True),
    "tt": ParamSpec("tt", "°C", -2.5, 2.5, 0.0, False),
}


@pytest.mark.parametrize("nmul", [1, 4, None])
def test_static_shapes_and_to_bounds_by_name(nmul):
    heads = ParameterHeads(8, SPECS, nmul)
    h = torch.randn(5, 8)
    out = heads(h)
    assert list(out) == ["fc", "k1", "tt"]
    w = 1 if nmul is None else nmul
    raw = heads.static_lin(h)
    for i, (name, spec) in enumerate(SPECS.items()):
        expected = to_bounds(raw[:, i * w : (i + 1) * w], spec)
        if nmul is None:
            expected = expected.squeeze(-1)
            assert out[name].shape == (5,)
        else:
            assert out[name].shape == (5, nmul)
        torch.testing.assert_close(out[name], expected)


def test_bounds_hold_for_extreme_embeddings():
    heads = ParameterHeads(3, SPECS, 2)
    h = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]])
    out = heads(h)
    check_in_bounds(out, SPECS, owner="test")
    for name, spec in SPECS.items():
        assert out[name].min() >= spec.low and out[name].max() <= spec.high


def test_untrained_heads_start_at_defaults():
    heads = ParameterHeads(6, SPECS, 3)
    out = heads(torch.zeros(4, 6))
    for name, spec in SPECS.items():
        torch.testing.assert_close(out[name], torch.full((4, 3), spec.default))


def test_default_on_a_bound_is_clipped_away_from_saturation():
    spec = {"perc": ParamSpec("perc", "mm/day", 0.0, 10.0, 0.0)}
    heads = ParameterHeads(2, spec, None)
    bias = heads.static_lin.bias
    torch.testing.assert_close(bias, from_bounds(torch.tensor([0.0]), spec["perc"], 0.02))
    assert abs(bias.item()) < 4.0


@pytest.mark.parametrize("kind", ["lstm", "conv"])
@pytest.mark.parametrize("nmul", [3, None])
def test_dynamic_shapes_bounds_and_causality(kind, nmul):
    heads = ParameterHeads(
        4, SPECS, nmul, dynamic={"fc"}, dynamic_channels=2, temporal=kind, kernel_size=3
    )
    h = torch.randn(5, 4)
    d = torch.randn(5, 10, 2)
    out = heads(h, d)
    shape = (5, 10) if nmul is None else (5, 10, nmul)
    assert out["fc"].shape == shape
    assert out["k1"].shape == ((5,) if nmul is None else (5, nmul))
    assert out["fc"].min() >= 50.0 and out["fc"].max() <= 1000.0
    d2 = d.clone()
    d2[:, 6:] += 5.0
    out2 = heads(h, d2)
    torch.testing.assert_close(out2["fc"][:, :6], out["fc"][:, :6])
    assert not torch.allclose(out2["fc"][:, 6:], out["fc"][:, 6:])
    torch.testing.assert_close(out2["k1"], out["k1"])


def test_dynamic_depends_on_node_embedding():
    heads = ParameterHeads(4, SPECS, 1, dynamic={"fc", "k1"}, dynamic_channels=2)
    d = torch.randn(1, 6, 2).expand(2, 6, 2)
    out = heads(torch.randn(2, 4), d)
    assert not torch.allclose(out["fc"][0], out["fc"][1])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="tt"):
        ParameterHeads(4, SPECS, 1, dynamic={"tt"}, dynamic_channels=2)  # spec static
    with pytest.raises(ValueError, match="nope"):
        ParameterHeads(4, SPECS, 1, dynamic={"nope"}, dynamic_channels=2)
    with pytest.raises(ValueError, match="dynamic_channels"):
        ParameterHeads(4, SPECS, 1, dynamic={"fc"})
    with pytest.raises(ValueError, match="differs"):
        ParameterHeads(4, {"x": SPECS["fc"]}, 1)
    heads = ParameterHeads(4, SPECS, 1, dynamic={"fc"}, dynamic_channels=2)
    with pytest.raises(ValueError, match="dynamic_input"):
        heads(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        heads(torch.randn(3, 5), torch.randn(3, 2, 2))


def test_temporal_encoder_conv_receptive_field():
    enc = TemporalEncoder(1, 4, kind="conv", kernel_size=3)  # receptive field 5 steps
    x = torch.zeros(1, 12, 1)
    base = enc(x)
    x[0, 3, 0] = 1.0
    diff = (enc(x) - base).abs().sum(-1)[0]
    assert torch.all(diff[:3] == 0)
    assert torch.all(diff[8:] == 0)  # t ≥ 3 + 5 is outside the receptive field


def test_heads_gradcheck_float64():
    heads = ParameterHeads(3, SPECS, 2, dynamic={"k1"}, dynamic_channels=2).double()
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    d = torch.randn(4, 5, 2, dtype=torch.float64, requires_grad=True)

    def f(h, d):
        out = heads(h, d)
        return tuple(out.values())

    assert torch.autograd.gradcheck(f, (h, d))
