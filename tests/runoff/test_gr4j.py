"""GR4J against an independent reference written here from Perrin et al. (2003), its fused numba
kernel against the per-step torch loop, gradients, mass balance and the public contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnhydro.runoff import GR4J, get_runoff_model, gr4j_unit_hydrographs
from gnnhydro.runoff.kernels.gr4j_numba import GR4JFused


# ------------------------------------------------------------------ independent reference
def _sh1(t: float, x4: float) -> float:
    if t <= 0:
        return 0.0
    if t < x4:
        return (t / x4) ** 2.5
    return 1.0


def _sh2(t: float, x4: float) -> float:
    if t <= 0:
        return 0.0
    if t <= x4:
        return 0.5 * (t / x4) ** 2.5
    if t < 2 * x4:
        return 1.0 - 0.5 * (2.0 - t / x4) ** 2.5
    return 1.0


def reference_gr4j(precip, pet, x1, x2, x3, x4, s0=None, r0=None):
    """Plain-Python GR4J day by day (float64), the UH as an explicit convolution over the
    history of effective rainfall.  Returns runoff, ET, realised exchange, S, R per day."""
    n1 = math.ceil(x4)
    n2 = math.ceil(2 * x4)
    uh1 = [_sh1(j, x4) - _sh1(j - 1, x4) for j in range(1, n1 + 1)]
    uh2 = [_sh2(j, x4) - _sh2(j - 1, x4) for j in range(1, n2 + 1)]
    s = 0.3 * x1 if s0 is None else s0
    r = 0.5 * x3 if r0 is None else r0
    history: list[float] = []  # effective rainfall Pr of every day so far
    q, et, ex, ss, rs = [], [], [], [], []
    for p, e in zip(precip, pet, strict=True):
        if p > e:  # airGR: IF(P1.LE.E) is the dry branch
            pn, en, ei = p - e, 0.0, e
        else:
            pn, en, ei = 0.0, e - p, p
        ps = x1 * (1 - (s / x1) ** 2) * math.tanh(min(pn / x1, 13.0))
        ps /= 1 + (s / x1) * math.tanh(min(pn / x1, 13.0))
        es = s * (2 - s / x1) * math.tanh(min(en / x1, 13.0))
        es /= 1 + (1 - s / x1) * math.tanh(min(en / x1, 13.0))
        s = max(s + ps - es, 0.0)
        perc = s * (1 - (1 + (4 * s / (9 * x1)) ** 4) ** -0.25)
        s -= perc
        history.append(perc + pn - ps)
        q9 = sum(0.9 * uh1[k] * history[-1 - k] for k in range(min(n1, len(history))))
        q1 = sum(0.1 * uh2[k] * history[-1 - k] for k in range(min(n2, len(history))))
        f = x2 * (r / x3) ** 3.5
        r_new = max(r + q9 + f, 0.0)
        gain = r_new - r - q9
        qr = r_new * (1 - (1 + (r_new / x3) ** 4) ** -0.25)
        r = r_new - qr
        qd = max(0.0, q1 + f)
        gain += qd - q1
        q.append(qr + qd)
        et.append(ei + es)
        ex.append(gain)
        ss.append(s)
        rs.append(r)
    return {k: np.array(v) for k, v in zip(("q", "et", "ex", "s", "r"), (q, et, ex, ss, rs))}


def synthetic_forcing(n: int, days: int, seed: int = 0):
    """Seasonal daily forcing (mm/day), ``[n, days]`` float64 (zero-PET winter days included)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(days, dtype=torch.float64)
    season = torch.sin(2 * math.pi * (t - 100) / 365.25)
    wet = torch.rand(n, days, generator=g, dtype=torch.float64) < 0.45
    u = torch.rand(n, days, generator=g, dtype=torch.float64)
    prec = wet * (-8.0 * torch.log1p(-0.999 * u))
    pet = torch.clamp(2.5 + 2.5 * season + 0.4 * torch.randn(n, days, generator=g), min=0.0)
    return prec, pet.to(torch.float64)


#: (x1, x2, x3, x4): airGR's example values, a losing and a gaining catchment, non-integer x4
#: (below 1, mid-range and near the upper bound)
PARAM_SETS = [
    (350.0, 0.0, 90.0, 1.7),
    (257.24, 1.012, 88.23, 2.208),
    (800.0, -2.5, 40.0, 3.4),
    (60.0, -8.0, 300.0, 0.6),
    (1500.0, 3.0, 8.0, 9.7),
]


def _params(sets, dtype=torch.float64):
    cols = list(zip(*sets, strict=True))
    return {k: torch.tensor(c, dtype=dtype) for k, c in zip(("x1", "x2", "x3", "x4"), cols)}


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_matches_independent_reference(backend):
    prec, pet = synthetic_forcing(len(PARAM_SETS), 3 * 365)
    out = GR4J(backend=backend)({"precipitation": prec, "pet": pet}, _params(PARAM_SETS))
    for i, (x1, x2, x3, x4) in enumerate(PARAM_SETS):
        ref = reference_gr4j(prec[i].tolist(), pet[i].tolist(), x1, x2, x3, x4)
        np.testing.assert_allclose(out["runoff"][i].numpy(), ref["q"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(out["evapotranspiration"][i].numpy(), ref["et"], atol=1e-4)
        np.testing.assert_allclose(out["groundwater_exchange"][i].numpy(), ref["ex"], atol=1e-4)
        np.testing.assert_allclose(out["production_store"][i].numpy(), ref["s"], atol=1e-4)
        np.testing.assert_allclose(out["routing_store"][i].numpy(), ref["r"], atol=1e-4)
        assert out["runoff"][i].sum() > 10.0  # the case is not trivially dry


def test_unit_hydrograph_ordinates():
    x4 = torch.tensor([0.6, 1.7, 2.208, 9.7, 10.0], dtype=torch.float64)
    o1, o2 = gr4j_unit_hydrographs(x4)
    assert o1.shape == (5, 10) and o2.shape == (5, 20)
    torch.testing.assert_close(o1.sum(-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(o2.sum(-1), torch.ones(5, dtype=torch.float64))
    for i, x in enumerate(x4.tolist()):
        ref1 = [_sh1(j, x) - _sh1(j - 1, x) for j in range(1, 11)]
        ref2 = [_sh2(j, x) - _sh2(j - 1, x) for j in range(1, 21)]
        np.testing.assert_allclose(o1[i].numpy(), ref1, atol=1e-15)
        np.testing.assert_allclose(o2[i].numpy(), ref2, atol=1e-15)
    assert (o1[1, 2:] == 0).all() and (o2[1, 4:] == 0).all()  # support ⌈x4⌉, ⌈2·x4⌉


def _case(n=3, days=200, nmul=2, seed=0, dynamic=()):
    prec, pet = synthetic_forcing(n, days, seed)
    prec[:, ::17] = 0.0  # P = E = 0 days: the branch ties of the interception
    pet[:, ::17] = 0.0
    g = torch.Generator().manual_seed(seed + 1)
    ranges = {"x1": (50, 900), "x2": (-6, 3), "x3": (5, 300), "x4": (0.6, 9.7)}
    params = {}
    for k, (lo, hi) in ranges.items():
        shape = (n, days, nmul) if k in dynamic else (n, nmul)
        params[k] = lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)
    return {"precipitation": prec, "pet": pet}, params


def _grads(backend, forcing, params, nmul, dynamic=(), batch=False):
    f = {k: v.clone().requires_grad_() for k, v in forcing.items()}
    if batch:  # [B, N, T] forcing: two members with scaled precipitation
        f = {k: torch.stack([v, 0.7 * v]).detach().requires_grad_() for k, v in forcing.items()}
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    model = GR4J(nmul, backend=backend, dynamic=dynamic)
    out = model(f, p, warmup_steps=10, return_states=True)
    w = torch.linspace(0.5, 1.5, out["runoff"].shape[-1], dtype=torch.float64)
    loss = (out["runoff"] * w).sum() + 0.3 * out["evapotranspiration"].sum()
    loss = loss + 0.1 * out["storage"].sum() + 0.2 * out["final_uh2"].sum()
    loss.backward()
    grads = {k: v.grad for k, v in p.items()} | {k: v.grad for k, v in f.items()}
    return out, grads


@pytest.mark.parametrize(("dynamic", "batch"), [((), False), (("x1", "x2"), True)])
def test_numba_matches_torch_loop(dynamic, batch):
    forcing, params = _case(dynamic=dynamic)
    out_t, g_t = _grads("torch", forcing, params, 2, dynamic, batch)
    out_n, g_n = _grads("numba", forcing, params, 2, dynamic, batch)
    assert out_n.keys() == out_t.keys()
    for k in out_t:
        torch.testing.assert_close(out_n[k], out_t[k], rtol=1e-10, atol=1e-10)
    for k in g_t:
        torch.testing.assert_close(g_n[k], g_t[k], rtol=1e-9, atol=1e-10)


def test_recorded_tape_and_replay_give_the_same_gradients(monkeypatch):
    """The backward over the forward's recorded tape equals the one that re-runs the forward."""
    from gnnhydro.runoff.kernels import gr4j_numba

    forcing, params = _case(dynamic=("x3",))
    _, recorded = _grads("numba", forcing, params, 2, ("x3",))
    monkeypatch.setattr(gr4j_numba, "RECORD_TAPE", False)
    _, replayed = _grads("numba", forcing, params, 2, ("x3",))
    for k in recorded:
        torch.testing.assert_close(recorded[k], replayed[k], rtol=0, atol=0)


def test_tape_only_when_gradients_may_follow(monkeypatch):
    """The forward records the adjoint's tape with autograd on, not under no_grad (inference)
    nor for the forward-sensitivity mode (whose backward does not read it)."""
    from gnnhydro.runoff.kernels import gr4j_numba

    tapes = []
    run = gr4j_numba.run_chunks

    def spy(kernel, n, *args):
        if kernel is gr4j_numba._forward_kernel:
            tapes.append(args[-1].size)
        return run(kernel, n, *args)

    monkeypatch.setattr(gr4j_numba, "run_chunks", spy)
    forcing, params = _case()
    params = {k: v.requires_grad_() for k, v in params.items()}
    GR4J(2)(forcing, params)
    with torch.no_grad():
        GR4J(2)(forcing, params)
    GR4J(2, gradient="sensitivity")(forcing, params)["runoff"].sum().backward()
    assert tapes[0] > 0 and tapes[1:] == [0, 0]


def test_gradcheck_fused_kernel():
    n, t, m = 2, 12, 2
    g = torch.Generator().manual_seed(3)
    prec = (torch.rand(n, t, generator=g, dtype=torch.float64) * 15).requires_grad_()
    pet = (torch.rand(n, t, generator=g, dtype=torch.float64) * 4 + 0.1).requires_grad_()
    s0 = (torch.rand(2, n, m, generator=g, dtype=torch.float64) * 40 + 5).requires_grad_()
    u10 = (torch.rand(n, m, 9, generator=g, dtype=torch.float64)).requires_grad_()
    u20 = (torch.rand(n, m, 19, generator=g, dtype=torch.float64)).requires_grad_()
    x1 = torch.tensor([[120.0, 400.0], [80.0, 900.0]], dtype=torch.float64, requires_grad=True)
    x2 = torch.tensor([[-1.5, 0.8], [2.0, -4.0]], dtype=torch.float64, requires_grad=True)
    x3 = (torch.tensor([[60.0, 30.0], [150.0, 20.0]], dtype=torch.float64)).requires_grad_()
    x4 = torch.tensor([[1.7, 3.3], [0.8, 2.45]], dtype=torch.float64, requires_grad=True)

    def fn(prec, pet, s0, u10, u20, x1, x2, x3, x4):
        o1, o2 = gr4j_unit_hydrographs(x4)
        res = GR4JFused.apply(prec, pet, s0, u10, u20, o1, o2, x1, x2, x3)
        # every output, the final stores and the final UH contents
        return (*res[:13], *res[13:])

    assert torch.autograd.gradcheck(
        fn, (prec, pet, s0, u10, u20, x1, x2, x3, x4), eps=1e-6, atol=1e-6, rtol=1e-5
    )


def test_gradcheck_dynamic_parameters():
    n, t, m = 2, 8, 1
    g = torch.Generator().manual_seed(5)
    prec = torch.rand(n, t, generator=g, dtype=torch.float64) * 15
    pet = torch.rand(n, t, generator=g, dtype=torch.float64) * 4 + 0.1
    s0 = torch.tensor([[[50.0], [20.0]], [[30.0], [60.0]]], dtype=torch.float64)
    u10 = torch.zeros(n, m, 9, dtype=torch.float64)
    u20 = torch.zeros(n, m, 19, dtype=torch.float64)
    o1, o2 = gr4j_unit_hydrographs(torch.tensor([[1.7], [2.6]], dtype=torch.float64))
    x1 = (200 + 100 * torch.rand(n, t, m, generator=g, dtype=torch.float64)).requires_grad_()
    x2 = (-1 + 2 * torch.rand(n, t, m, generator=g, dtype=torch.float64)).requires_grad_()
    x3 = torch.tensor([[60.0], [90.0]], dtype=torch.float64, requires_grad=True)

    def fn(x1, x2, x3):
        return GR4JFused.apply(prec, pet, s0, u10, u20, o1, o2, x1, x2, x3)[0]

    assert torch.autograd.gradcheck(fn, (x1, x2, x3), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_mass_balance(backend):
    prec, pet = synthetic_forcing(len(PARAM_SETS), 3 * 365, seed=4)
    forcing = {"precipitation": prec, "pet": pet}
    model = GR4J(backend=backend)
    out = model(forcing, _params(PARAM_SETS))
    resid = model.mass_balance(out, forcing)
    assert resid.abs().max() < 1e-4
    # the same balance written out: ΔS + ΔR + ΔUH = Σ(P − E − Q + F)
    x = _params(PARAM_SETS)
    start = 0.3 * x["x1"] + 0.5 * x["x3"]
    end = out["production_store"][:, -1] + out["routing_store"][:, -1]
    end = end + out["unit_hydrograph_storage"][:, -1]
    flux = prec - out["evapotranspiration"] - out["runoff"] + out["groundwater_exchange"]
    torch.testing.assert_close(end - start, flux.sum(-1), rtol=0, atol=1e-4)
    # with the warm-up dropped
    out_w = model(forcing, _params(PARAM_SETS), warmup_steps=100)
    assert model.mass_balance(out_w, forcing, warmup_steps=100).abs().max() < 1e-4
    assert (out["groundwater_exchange"][2] < 0).any() and (out["groundwater_exchange"][4] > 0).any()


def test_airgr_default_initial_states():
    model = GR4J(nmul=2)
    x1 = torch.tensor([[300.0, 600.0]], dtype=torch.float64)
    x3 = torch.tensor([[80.0, 40.0]], dtype=torch.float64)
    params = {"x1": x1, "x2": torch.zeros(1, 2), "x3": x3, "x4": torch.full((1, 2), 2.0)}
    st = model.init_states(1, dtype=torch.float64, params=params)
    torch.testing.assert_close(st["production_store"], 0.3 * x1)
    torch.testing.assert_close(st["routing_store"], 0.5 * x3)
    assert st["uh1"].shape == (1, 18) and st["uh2"].shape == (1, 38)
    assert not st["uh1"].any() and not st["uh2"].any()
    prec, pet = synthetic_forcing(1, 60)
    forcing = {"precipitation": prec, "pet": pet}
    out = model(forcing, params)
    torch.testing.assert_close(out["storage_initial"], (0.3 * x1 + 0.5 * x3).mean(1))
    torch.testing.assert_close(model(forcing, params, states=st)["runoff"], out["runoff"])
    # without parameters: the spec defaults (x1 = 350 mm, x3 = 90 mm)
    st0 = model.init_states(3)
    assert torch.allclose(st0["production_store"], torch.tensor(105.0))
    assert torch.allclose(st0["routing_store"], torch.tensor(45.0))


def test_contract_call_and_state_continuation():
    prec, pet = synthetic_forcing(4, 300)
    x = {"x1": [350.0, 800.0, 60.0, 1200.0], "x2": [0.0, -2.0, 1.0, -0.5]}
    x |= {"x3": [90.0, 40.0, 200.0, 10.0], "x4": [1.7, 3.4, 0.6, 7.2]}
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    out = GR4J()(forcing={"precipitation": prec, "pet": pet}, params=params)
    assert out["runoff"].shape == (4, 300) and (out["runoff"] >= 0).all()
    # [B, nmul] parameters with identical components give the same runoff
    model = GR4J(nmul=3)
    same = model(
        {"precipitation": prec, "pet": pet}, {k: v[:, None].repeat(1, 3) for k, v in params.items()}
    )
    torch.testing.assert_close(same["runoff"], out["runoff"])
    # two halves chained through the final states (UH contents included) = one run
    first = model({"precipitation": prec[:, :130], "pet": pet[:, :130]}, params, return_states=True)
    second = model(
        {"precipitation": prec[:, 130:], "pet": pet[:, 130:]},
        params,
        states=model.final_states(first),
    )
    torch.testing.assert_close(torch.cat([first["runoff"], second["runoff"]], 1), out["runoff"])
    # the framework's [B, N, T] batches
    both = model(
        {"precipitation": torch.stack([prec, prec]), "pet": torch.stack([pet, pet])}, params
    )
    assert both["runoff"].shape == (2, 4, 300)
    torch.testing.assert_close(both["runoff"][1], out["runoff"])


def test_errors_name_the_variable():
    prec, pet = synthetic_forcing(2, 20)
    params = {k: torch.tensor(v) for k, v in {"x1": [300.0, 500.0], "x2": [0.0, 1.0]}.items()}
    params |= {"x3": torch.tensor([50.0, 80.0]), "x4": torch.tensor([1.5, 2.5])}
    model = GR4J()
    with pytest.raises(ValueError, match="pet"):
        model({"precipitation": prec}, params)
    with pytest.raises(ValueError, match="'x4'.*outside its bounds"):
        model({"precipitation": prec, "pet": pet}, params | {"x4": torch.tensor([1.5, 12.0])})
    with pytest.raises(ValueError, match="'x1'.*outside its bounds"):
        model({"precipitation": prec, "pet": pet}, params | {"x1": torch.tensor([1.0, 300.0])})
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['x3'\]"):
        model({"precipitation": prec, "pet": pet}, {k: v for k, v in params.items() if k != "x3"})
    with pytest.raises(ValueError, match="x4"):
        GR4J(dynamic=("x4",))
    with pytest.raises(ValueError, match="gradient must be one of"):
        GR4J(gradient="adjoint")


def test_registry_and_spec():
    assert get_runoff_model("gr4j") is GR4J
    model = GR4J()
    assert model.forcing_names == ("precipitation", "pet")  # no temperature, no snow
    spec = model.param_spec
    assert {k: (s.low, s.high, s.units) for k, s in spec.items()} == {
        "x1": (10.0, 2000.0, "mm"),
        "x2": (-10.0, 5.0, "mm/day"),
        "x3": (1.0, 500.0, "mm"),
        "x4": (0.5, 10.0, "day"),
    }
    assert model.values_per_node("x4") == 1


def test_bench_gr4j_agrees():
    from gnnhydro.bench.runoff import main, run_bench

    rows = run_bench(5, 30, 2, model="gr4j")
    assert rows[-1]["max_abs_runoff_diff_fused_vs_loop_mm"] < 1e-4
    sens = [r for r in rows if "sensitivities" in str(r.get("path"))]
    assert [r["pass"] for r in sens] == ["forward", "forward+backward"]
    assert main(["--model", "gr4j", "--basins", "4", "--days", "20", "--nmul", "2"]) == 0
