"""RunoffModel interface: validation, batch/warm-up handling, mass balance, registry."""

from __future__ import annotations

import math

import pytest
import torch

from gnnhydro.runoff import (
    HBV,
    LinearReservoir,
    LSTMRunoff,
    RunoffModel,
    get_runoff_model,
    linear_reservoir,
    list_runoff_models,
    register_runoff_model,
)


@pytest.mark.parametrize("kwargs", [{}, {"betaet": True, "capillary": True}, {"backend": "torch"}])
def test_hbv_mass_balance(kwargs, make_forcing, make_params):
    n, t = 4, 365
    model = HBV(nmul=3, **kwargs)
    f = make_forcing(n, t)
    p = make_params(model, n, t)
    with torch.no_grad():
        out = model(f, p)
        resid = model.mass_balance(out, f)
    assert resid.shape == (n,)
    assert resid.abs().max() < 1e-4
    assert f["precipitation"].sum(-1).min() > 100  # a real test: plenty of water moved


def test_warmup_drops_steps_and_keeps_balance(make_forcing, make_params):
    n, t, w = 3, 100, 30
    model = HBV(nmul=2)
    f = make_forcing(n, t)
    p = make_params(model, n, t)
    with torch.no_grad():
        full = model(f, p)
        out = model(f, p, warmup_steps=w)
    torch.testing.assert_close(out["runoff"], full["runoff"][:, w:])
    torch.testing.assert_close(out["storage_initial"], full["storage"][:, w - 1])
    assert model.mass_balance(out, f, warmup_steps=w).abs().max() < 1e-4


def test_batched_forcing_and_state_chaining(make_forcing, make_params):
    n, t = 3, 50
    model = HBV(nmul=2)
    f1, f2 = make_forcing(n, t, seed=1), make_forcing(n, t, seed=2)
    p = make_params(model, n, t)
    with torch.no_grad():
        fb = {k: torch.stack([f1[k], f2[k]]) for k in f1}
        ob = model(fb, p)
        assert ob["runoff"].shape == (2, n, t)
        torch.testing.assert_close(ob["runoff"][1], model(f2, p)["runoff"])
        # two windows with states handed over = one long run
        half = {k: v[:, :25] for k, v in f1.items()}
        rest = {k: v[:, 25:] for k, v in f1.items()}
        o1 = model(half, p, return_states=True)
        o2 = model(rest, p, states=model.final_states(o1))
        torch.testing.assert_close(o2["runoff"], model(f1, p)["runoff"][:, 25:])


def test_validation_errors(make_forcing, make_params):
    n, t = 2, 10
    model = HBV(nmul=2)
    f = make_forcing(n, t)
    p = {k: v.detach() for k, v in make_params(model, n, t).items()}
    with pytest.raises(ValueError, match="pet"):
        model({k: v for k, v in f.items() if k != "pet"}, p)
    bad = dict(f)
    bad["temperature"] = f["temperature"].clone()
    bad["temperature"][1, 4] = math.nan
    with pytest.raises(ValueError, match=r"temperature.*NaN.*\[1\].*time index 4"):
        model(bad, p)
    with pytest.raises(ValueError, match="'fc'.*outside its bounds"):
        model(f, {**p, "fc": torch.full((n, 2), 20.0, dtype=torch.float64)})
    with pytest.raises(ValueError, match="'k1' has shape"):
        model(f, {**p, "k1": p["k1"][:, :1]})
    with pytest.raises(ValueError, match="unknown parameter.*'foo'"):
        model(f, {**p, "foo": p["k1"]})
    with pytest.raises(ValueError, match="missing parameter.*'beta'"):
        model(f, {k: v for k, v in p.items() if k != "beta"})
    with pytest.raises(ValueError, match="dynamic"):  # static-only parameter given over time
        model(f, {**p, "k0": p["k0"].unsqueeze(1).expand(n, t, 2)})


def test_param_spec_bounds_and_options():
    spec = HBV(4, betaet=True, capillary=True, dynamic=("k0",)).param_spec
    expected = {
        "beta": (1, 6), "fc": (50, 1000), "k0": (0.05, 0.9), "k1": (0.01, 0.5),
        "k2": (0.001, 0.2), "lp": (0.2, 1), "perc": (0, 10), "uzl": (0, 100),
        "tt": (-2.5, 2.5), "cfmax": (0.5, 10), "cfr": (0, 0.1), "cwh": (0, 0.2),
        "betaet": (0.3, 5), "c": (0, 1),
    }  # fmt: skip
    assert {k: (s.low, s.high) for k, s in spec.items()} == expected
    assert spec["k0"].dynamic and not spec["k1"].dynamic


def test_registry():
    assert get_runoff_model("HBV") is HBV
    assert get_runoff_model("linear_reservoir") is LinearReservoir
    assert {"hbv", "lstm", "linear_reservoir"} <= set(list_runoff_models())
    with pytest.raises(ValueError, match="unknown runoff model 'nope'"):
        get_runoff_model("nope")

    @register_runoff_model("test_dummy_model")
    class Dummy(RunoffModel):
        forcing_names = ("precipitation",)

    assert get_runoff_model("test_dummy_model") is Dummy


def test_linear_reservoir_analytic():
    n, t = 3, 50
    k = torch.tensor([[0.05], [0.2], [0.9]], dtype=torch.float64)
    p = torch.full((n, t), 4.0, dtype=torch.float64)
    model = LinearReservoir()
    out = model(
        {"precipitation": p}, {"k": k}, states={"storage": torch.zeros(n, 1, dtype=torch.float64)}
    )
    steps = torch.arange(1, t + 1, dtype=torch.float64)
    exact = 4.0 / k * (1 - torch.exp(-k * steps))
    torch.testing.assert_close(out["storage"], exact, rtol=1e-12, atol=1e-12)
    # outflow of the ODE over a step: ∫ k S dt = P − ΔS
    assert model.mass_balance(out, {"precipitation": p}).abs().max() < 1e-10
    q, _ = linear_reservoir(p, k, torch.zeros(n, 1, dtype=torch.float64))
    torch.testing.assert_close(q.mean(1), out["runoff"])


def test_linear_reservoir_gradcheck():
    p = torch.rand(2, 8, dtype=torch.float64)
    k = (torch.rand(2, 1, dtype=torch.float64) * 0.5 + 0.1).requires_grad_()
    s0 = torch.zeros(2, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda kk: linear_reservoir(p, kk, s0)[0], (k,))


def test_lstm_runoff_interface_and_training_step(make_forcing):
    torch.manual_seed(0)
    model = LSTMRunoff(hidden_size=8)
    f = {k: v.float() for k, v in make_forcing(4, 20).items()}
    out = model(f, {}, warmup_steps=5, return_states=True)
    assert out["runoff"].shape == (4, 15) and (out["runoff"] >= 0).all()
    out["runoff"].mean().backward()
    assert model.head.weight.grad is not None
    with pytest.raises(ValueError, match="unknown parameter"):
        model(f, {"k": torch.ones(4, 1)})
    with pytest.raises(ValueError, match="pet"):
        model({k: v for k, v in f.items() if k != "pet"}, {})
