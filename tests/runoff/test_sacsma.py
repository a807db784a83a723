"""SAC-SMA against an independent reference written here from the NWS ``SAC1`` algorithm
(Burnash 1995; the operational subroutine without frozen ground), its fused numba kernel
against the per-step torch loop, gradients, mass balance and the public contract."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from gnnhydro.runoff import SACSMA, get_runoff_model
from gnnhydro.runoff.kernels.sacsma_numba import SACSMAFused
from gnnhydro.runoff.sacsma import DYNAMIC_CAPABLE, PARAM_NAMES, SACSMA_OUTPUTS, SACSMA_STATES


# ------------------------------------------------------------------ independent reference
def reference_sacsma(precip, pet, par, init=0.5, hits=None):
    """Plain-Python SAC1 day by day (float64), following the subroutine's statement order
    (its GO TOs written as if/else).  Returns per-day channel inflow, total ET, non-channel
    baseflow, the ADIMC raise and the stores after each day."""
    hits = Counter() if hits is None else hits
    uztwm, uzfwm, uzk = par["uztwm"], par["uzfwm"], par["uzk"]
    pctim, adimp, riva = par["pctim"], par["adimp"], par["riva"]
    zperc, rexp, pfree = par["zperc"], par["rexp"], par["pfree"]
    lztwm, lzfsm, lzfpm = par["lztwm"], par["lzfsm"], par["lzfpm"]
    lzsk, lzpk, side, rserv = par["lzsk"], par["lzpk"], par["side"], par["rserv"]
    uztwc, uzfwc, lztwc = init * uztwm, init * uzfwm, init * lztwm
    lzfsc, lzfpc, adimc = init * lzfsm, init * lzfpm, init * (uztwm + lztwm)
    rec = {k: [] for k in ("q", "et", "bfncc", "adj", "storage", *SACSMA_STATES)}
    for pxv, edmnd in zip(precip, pet, strict=True):
        # ET from the upper zone
        e1 = edmnd * (uztwc / uztwm)
        red = edmnd - e1
        uztwc = uztwc - e1
        e2 = 0.0
        go_225 = False
        if uztwc < 0.0:
            hits["e1_capped"] += 1
            e1 = e1 + uztwc
            uztwc = 0.0
            red = edmnd - e1
            if uzfwc < red:
                e2 = uzfwc
                uzfwc = 0.0
                red = red - e2
                go_225 = True
            else:
                e2 = red
                uzfwc = uzfwc - e2
                red = 0.0
        if not go_225 and (uztwc / uztwm) < (uzfwc / uzfwm):
            hits["uz_transfer"] += 1
            uzrat = (uztwc + uzfwc) / (uztwm + uzfwm)
            uztwc = uztwm * uzrat
            uzfwc = uzfwm * uzrat
        # ET from the lower zone
        e3 = red * (lztwc / (uztwm + lztwm))
        lztwc = lztwc - e3
        if lztwc < 0.0:
            e3 = e3 + lztwc
            lztwc = 0.0
        ratlzt = lztwc / lztwm
        saved = rserv * (lzfpm + lzfsm)
        ratlz = (lztwc + lzfpc + lzfsc - saved) / (lztwm + lzfpm + lzfsm - saved)
        if ratlzt < ratlz:
            hits["resupply"] += 1
            delta = (ratlz - ratlzt) * lztwm
            lztwc = lztwc + delta
            lzfsc = lzfsc - delta
            if lzfsc < 0.0:
                lzfpc = lzfpc + lzfsc
                lzfsc = 0.0
        # ET from ADIMP
        e5 = e1 + (red + e2) * ((adimc - e1 - uztwc) / (uztwm + lztwm))
        adimc = adimc - e5
        if adimc < 0.0:
            e5 = e5 + adimc
            adimc = 0.0
        e5 = e5 * adimp
        # excess over tension water
        twx = pxv + uztwc - uztwm
        if twx < 0.0:
            uztwc = uztwc + pxv
            twx = 0.0
        else:
            uztwc = uztwm
        adimc = adimc + pxv - twx
        roimp = pxv * pctim
        sbf = ssur = sif = sperc = sdro = spbf = 0.0
        ninc = int(1.0 + 0.2 * (uzfwc + twx))
        hits[f"ninc>{min(ninc, 3) - 1}"] += 1
        dinc = (1.0 / ninc) * 1.0
        pinc = twx / ninc
        duz = 1.0 - ((1.0 - uzk) ** dinc)
        dlzp = 1.0 - ((1.0 - lzpk) ** dinc)
        dlzs = 1.0 - ((1.0 - lzsk) ** dinc)
        parea = 1.0 - adimp - pctim
        for _ in range(ninc):
            adsur = 0.0
            ratio = (adimc - uztwc) / lztwm
            if ratio < 0.0:
                ratio = 0.0
            addro = pinc * (ratio**2)
            bf = lzfpc * dlzp
            lzfpc = lzfpc - bf
            if not lzfpc > 0.0001:
                bf = bf + lzfpc
                lzfpc = 0.0
            sbf += bf
            spbf += bf
            bf = lzfsc * dlzs
            lzfsc = lzfsc - bf
            if not lzfsc > 0.0001:
                bf = bf + lzfsc
                lzfsc = 0.0
            sbf += bf
            if (pinc + uzfwc) > 0.01:
                percm = lzfpm * dlzp + lzfsm * dlzs
                perc = percm * (uzfwc / uzfwm)
                defr = 1.0 - ((lztwc + lzfpc + lzfsc) / (lztwm + lzfpm + lzfsm))
                perc = perc * (1.0 + zperc * (max(defr, 0.0) ** rexp))
                if not perc < uzfwc:
                    hits["perc_all"] += 1
                    perc = uzfwc
                else:
                    hits["perc_rate"] += 1
                uzfwc = uzfwc - perc
                check = lztwc + lzfpc + lzfsc + perc - lztwm - lzfpm - lzfsm
                if check > 0.0:
                    hits["perc_deficiency"] += 1
                    perc = perc - check
                    uzfwc = uzfwc + check
                sperc += perc
                delta = uzfwc * duz
                sif += delta
                uzfwc = uzfwc - delta
                perct = perc * (1.0 - pfree)
                if (perct + lztwc) > lztwm:
                    hits["tension_full"] += 1
                    percf = perct + lztwc - lztwm
                    lztwc = lztwm
                else:
                    lztwc = lztwc + perct
                    percf = 0.0
                percf = percf + perc * pfree
                if percf != 0.0:
                    hpl = lzfpm / (lzfpm + lzfsm)
                    ratlp = lzfpc / lzfpm
                    ratls = lzfsc / lzfsm
                    fracp = (hpl * 2.0 * (1.0 - ratlp)) / ((1.0 - ratlp) + (1.0 - ratls))
                    if fracp > 1.0:
                        fracp = 1.0
                    percp = percf * fracp
                    percs = percf - percp
                    lzfsc = lzfsc + percs
                    if lzfsc > lzfsm:
                        hits["lzfs_full"] += 1
                        percs = percs - lzfsc + lzfsm
                        lzfsc = lzfsm
                    lzfpc = lzfpc + (percf - percs)
                    if lzfpc > lzfpm:
                        hits["lzfp_full"] += 1
                        excess = lzfpc - lzfpm
                        lztwc = lztwc + excess
                        lzfpc = lzfpm
                if pinc != 0.0:
                    if (pinc + uzfwc) > uzfwm:
                        hits["surface"] += 1
                        sur = pinc + uzfwc - uzfwm
                        uzfwc = uzfwm
                        ssur = ssur + sur * parea
                        adsur = sur * (1.0 - addro / pinc)
                        ssur = ssur + adsur * adimp
                    else:
                        uzfwc = uzfwc + pinc
            else:
                hits["dry"] += 1
                uzfwc = uzfwc + pinc
            adimc = adimc + pinc - addro - adsur
            if adimc > (uztwm + lztwm):
                hits["adimc_full"] += 1
                addro = addro + adimc - (uztwm + lztwm)
                adimc = uztwm + lztwm
            sdro = sdro + addro * adimp
        eused = e1 + e2 + e3
        sif = sif * parea
        tbf = sbf * parea
        bfcc = tbf * (1.0 / (1.0 + side))
        bfncc = tbf - bfcc
        tci = roimp + sdro + ssur + sif + bfcc
        e4 = (edmnd - eused) * riva
        tci = tci - e4
        if tci < 0.0:
            hits["riparian_cap"] += 1
            e4 = e4 + tci
            tci = 0.0
        tet = eused * parea + e5 + e4
        adj = 0.0
        if adimc < uztwc:
            hits["adimc_raise"] += 1
            adj = (uztwc - adimc) * adimp
            adimc = uztwc
        stores = (uztwc, uzfwc, lztwc, lzfsc, lzfpc, adimc)
        for k, v in zip(SACSMA_STATES, stores, strict=True):
            rec[k].append(v)
        rec["q"].append(tci)
        rec["et"].append(tet)
        rec["bfncc"].append(bfncc)
        rec["adj"].append(adj)
        rec["storage"].append(parea * sum(stores[:5]) + adimp * adimc)
    return {k: np.array(v) for k, v in rec.items()}


def synthetic_forcing(n: int, days: int, seed: int = 0):
    """Seasonal daily forcing (mm/day), ``[n, days]`` float64: storms up to ~100 mm, zero-PET
    winter days, a 120 mm storm every 97 days and a few hot days with PET above the smallest
    UZTWM (the e2 branch)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(days, dtype=torch.float64)
    season = torch.sin(2 * math.pi * (t - 100) / 365.25)
    wet = torch.rand(n, days, generator=g, dtype=torch.float64) < 0.4
    u = torch.rand(n, days, generator=g, dtype=torch.float64)
    prec = wet * (-9.0 * torch.log1p(-0.999 * u))
    prec[:, 200::97] += 120.0
    pet = torch.clamp(3.0 + 3.0 * season + 0.5 * torch.randn(n, days, generator=g), min=0.0)
    hot = torch.rand(n, days, generator=g) < 0.02
    pet = torch.where(hot, pet + 9.0, pet)
    return prec, pet.to(torch.float64)


_BASE = dict(
    uztwm=50.0, uzfwm=40.0, uzk=0.3, pctim=0.01, adimp=0.1, riva=0.0, zperc=40.0, rexp=2.0,
    lztwm=130.0, lzfsm=25.0, lzfpm=60.0, lzsk=0.1, lzpk=0.01, pfree=0.1, side=0.0, rserv=0.3,
)  # fmt: skip
#: typical NWS values; a flashy small-storage basin with riparian ET and non-channel baseflow;
#: a deep slow one; a small slowly draining lower zone that fills up; extremes
PARAM_SETS = [
    _BASE,
    _BASE
    | dict(
        uztwm=10.0,
        uzfwm=5.0,
        uzk=0.7,
        pctim=0.08,
        adimp=0.35,
        riva=0.15,
        side=0.4,
        lztwm=20.0,
        lzfsm=8.0,
        lzfpm=15.0,
        zperc=300.0,
        rexp=4.5,
    ),  # fmt: skip
    _BASE
    | dict(
        uztwm=250.0,
        uzfwm=120.0,
        uzk=0.12,
        lztwm=450.0,
        lzfsm=300.0,
        lzfpm=900.0,
        lzsk=0.02,
        lzpk=0.002,
        pfree=0.6,
        rserv=0.0,
    ),  # fmt: skip
    _BASE
    | dict(
        zperc=200.0,
        rexp=1.0,
        lztwm=15.0,
        lzfsm=6.0,
        lzfpm=12.0,
        lzsk=0.02,
        lzpk=0.002,
        pfree=0.5,
        uzfwm=20.0,
        uztwm=12.0,
        riva=0.05,
    ),  # fmt: skip
    _BASE
    | dict(
        pctim=0.0,
        adimp=0.0,
        riva=0.2,
        side=0.5,
        rserv=0.4,
        zperc=150.0,
        rexp=3.0,
        uzk=0.5,
        lzsk=0.25,
    ),  # fmt: skip
]


def _params(sets, dtype=torch.float64):
    return {k: torch.tensor([s[k] for s in sets], dtype=dtype) for k in PARAM_NAMES}


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_matches_independent_reference(backend):
    prec, pet = synthetic_forcing(len(PARAM_SETS), 3 * 365)
    out = SACSMA(backend=backend)({"precipitation": prec, "pet": pet}, _params(PARAM_SETS))
    hits: Counter = Counter()
    for i, par in enumerate(PARAM_SETS):
        ref = reference_sacsma(prec[i].tolist(), pet[i].tolist(), par, hits=hits)
        for key, name in [
            ("q", "runoff"),
            ("et", "evapotranspiration"),
            ("bfncc", "baseflow_nonchannel"),
            ("adj", "adimp_adjustment"),
            ("storage", "storage"),
            *((s, s) for s in SACSMA_STATES),
        ]:
            np.testing.assert_allclose(out[name][i].numpy(), ref[key], rtol=0, atol=1e-4)
        assert out["runoff"][i].sum() > 50.0  # not trivially dry
    # every branch of the algorithm is taken somewhere (but LZFPC and ADIMC overflowing their
    # capacities, which these cases never reach)
    for branch in ["e1_capped", "uz_transfer", "resupply", "perc_all", "perc_rate", "dry",
                   "perc_deficiency", "tension_full", "lzfs_full", "surface", "riparian_cap",
                   "ninc>1", "ninc>2"]:  # fmt: skip
        assert hits[branch] > 0, branch


def _dynamic(params, names, days):
    """``params`` with ``names`` varying in time ``[N, T, m]``: each value times
    ``1 + 0.3·sin(…)`` (its own period and phase), clipped to the bounds."""
    spec = SACSMA().param_spec
    t = torch.arange(days, dtype=torch.float64)
    out = dict(params)
    for i, k in enumerate(names):
        wave = 1.0 + 0.3 * torch.sin(2 * math.pi * t / (37.0 + 11.0 * i) + i)
        v = params[k][:, None, :] * wave[None, :, None]
        out[k] = v.clamp(spec[k].low, spec[k].high)
    return out


def _case(days=320, seed=0, dynamic=()):
    """The parameter sets in pairs as two components per node (every branch is reached);
    ``dynamic`` of them varying in time."""
    n = len(PARAM_SETS)
    prec, pet = synthetic_forcing(n, days, seed)
    prec[:, ::19] = 0.0
    sets = [PARAM_SETS[i] for i in range(n)]
    others = [PARAM_SETS[(i + 2) % n] for i in range(n)]
    params = {k: torch.stack([_params(sets)[k], _params(others)[k]], -1) for k in PARAM_NAMES}
    return {"precipitation": prec, "pet": pet}, _dynamic(params, dynamic, days)


def _grads(backend, forcing, params, nmul, batch=False, dynamic=()):
    f = {k: v.clone().requires_grad_() for k, v in forcing.items()}
    if batch:  # [B, N, T] forcing: two members with scaled precipitation
        f = {k: torch.stack([v, 0.7 * v]).detach().requires_grad_() for k, v in forcing.items()}
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    model = SACSMA(nmul, backend=backend, dynamic=dynamic)
    out = model(f, p, warmup_steps=10, return_states=True)
    w = torch.linspace(0.5, 1.5, out["runoff"].shape[-1], dtype=torch.float64)
    loss = (out["runoff"] * w).sum() + 0.3 * out["evapotranspiration"].sum()
    loss = loss + 0.1 * out["storage"].sum() + 0.2 * out["final_lzfpc"].sum()
    loss = loss + 0.05 * out["baseflow_nonchannel"].sum() + 0.07 * out["uzfwc"].sum()
    loss.backward()
    grads = {k: v.grad for k, v in p.items()} | {k: v.grad for k, v in f.items()}
    return out, grads


@pytest.mark.parametrize(
    ("dynamic", "batch"),
    [((), False), ((), True), (DYNAMIC_CAPABLE, False), (("uzk", "rexp", "side"), True)],
)
def test_numba_matches_torch_loop(dynamic, batch):
    forcing, params = _case(dynamic=dynamic)
    out_t, g_t = _grads("torch", forcing, params, 2, batch, dynamic)
    out_n, g_n = _grads("numba", forcing, params, 2, batch, dynamic)
    assert out_n.keys() == out_t.keys()
    for k in out_t:
        torch.testing.assert_close(out_n[k], out_t[k], rtol=1e-10, atol=1e-10)
    for k in g_t:
        torch.testing.assert_close(g_n[k], g_t[k], rtol=1e-10, atol=1e-10)
        assert g_t[k].abs().max() > 0, k  # every parameter and forcing matters here
        if k in params:
            assert g_n[k].shape == params[k].shape, k
    for k in dynamic:  # per-day gradients [N, T, m], non-zero on most days
        assert g_n[k].shape == (len(PARAM_SETS), 320, 2)
        assert (g_n[k].abs().amax(dim=(0, 2))[:300] > 0).float().mean() > 0.5, k


def test_gradcheck_fused_kernel():
    n, t, m = 2, 15, 2
    g = torch.Generator().manual_seed(0)
    prec = (torch.rand(n, t, generator=g, dtype=torch.float64) < 0.5) * torch.rand(
        n, t, generator=g, dtype=torch.float64
    ) * 40  # fmt: skip
    pet = torch.rand(n, t, generator=g, dtype=torch.float64) * 5
    params = {}
    for k, s in SACSMA().param_spec.items():
        u = 0.05 + 0.9 * torch.rand(n, m, generator=g, dtype=torch.float64)
        params[k] = s.low + u * s.span
    st = SACSMA(m).init_states(n, dtype=torch.float64, params=params)
    s0 = torch.stack([st[k] for k in SACSMA_STATES])
    prm = torch.stack([params[k] for k in PARAM_NAMES], -1)
    inputs = tuple(x.clone().requires_grad_() for x in (prec, pet, s0, prm))

    def fn(*a):
        return SACSMAFused.apply(*a)  # every output and the final stores

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_fused_kernel_dynamic():
    """Finite differences with per-day values of every time-varying parameter."""
    n, t, m = 2, 12, 2
    g = torch.Generator().manual_seed(3)
    prec = (torch.rand(n, t, generator=g, dtype=torch.float64) < 0.6) * torch.rand(
        n, t, generator=g, dtype=torch.float64
    ) * 40  # fmt: skip
    pet = torch.rand(n, t, generator=g, dtype=torch.float64) * 5
    spec = SACSMA().param_spec
    params = {}
    for k, s in spec.items():
        shape = (n, t, m) if k in DYNAMIC_CAPABLE else (n, m)
        params[k] = (
            s.low + (0.05 + 0.9 * torch.rand(shape, generator=g, dtype=torch.float64)) * s.span
        )
    st = SACSMA(m).init_states(n, dtype=torch.float64, params=params)
    s0 = torch.stack([st[k] for k in SACSMA_STATES])
    zero = torch.zeros(n, m, dtype=torch.float64)
    prm = torch.stack([zero if k in DYNAMIC_CAPABLE else params[k] for k in PARAM_NAMES], -1)
    pdyn = torch.stack([params[k] for k in PARAM_NAMES if k in DYNAMIC_CAPABLE])
    idx = tuple(PARAM_NAMES.index(k) for k in PARAM_NAMES if k in DYNAMIC_CAPABLE)
    inputs = tuple(x.clone().requires_grad_() for x in (prec, pet, s0, prm, pdyn))

    def fn(*a):
        return SACSMAFused.apply(*a, idx)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_time_constant_dynamic_equals_static(backend):
    """Dynamic parameters constant in time: the same run as static ones (bitwise), and their
    per-day gradients sum to the static gradient."""
    forcing, params = _case(days=200, seed=2)
    dyn = ("uzk", "zperc", "rexp", "lzpk", "pfree", "riva", "rserv")
    const = params | {k: params[k][:, None, :].expand(-1, 200, -1) for k in dyn}
    out_s, g_s = _grads(backend, forcing, params, 2)
    out_d, g_d = _grads(backend, forcing, const, 2, dynamic=dyn)
    for k in out_s:
        assert torch.equal(out_d[k], out_s[k]), k
    for k in g_s:
        got = g_d[k].sum(1) if k in dyn else g_d[k]
        torch.testing.assert_close(got, g_s[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_mass_balance_dynamic(backend):
    """Time-varying rates and shapes move water between the stores and out: the balance still
    closes (wide variations, every parameter of DYNAMIC_CAPABLE)."""
    prec, pet = synthetic_forcing(len(PARAM_SETS), 2 * 365, seed=5)
    forcing = {"precipitation": prec, "pet": pet}
    model = SACSMA(backend=backend, dynamic=DYNAMIC_CAPABLE)
    g = torch.Generator().manual_seed(7)
    params = _params(PARAM_SETS)
    params = {k: v[:, None] for k, v in params.items()}
    for k in DYNAMIC_CAPABLE:  # uniform in the bounds, new values every day
        s = model.param_spec[k]
        u = torch.rand(len(PARAM_SETS), 2 * 365, 1, generator=g, dtype=torch.float64)
        params[k] = s.low + u * s.span
    out = model(forcing, params)
    assert model.mass_balance(out, forcing).abs().max() < 1e-4
    assert out["runoff"].sum() > 0 and (out["baseflow_nonchannel"] > 0).any()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_mass_balance(backend):
    prec, pet = synthetic_forcing(len(PARAM_SETS), 3 * 365, seed=4)
    forcing = {"precipitation": prec, "pet": pet}
    model = SACSMA(backend=backend)
    out = model(forcing, _params(PARAM_SETS))
    assert model.mass_balance(out, forcing).abs().max() < 1e-4
    # the same balance written out: ΔS = Σ(P − ET − Q − bfncc + adj)
    x = _params(PARAM_SETS)
    parea = 1 - x["adimp"] - x["pctim"]
    soil = x["uztwm"] + x["uzfwm"] + x["lztwm"] + x["lzfsm"] + x["lzfpm"]
    start = 0.5 * (parea * soil + x["adimp"] * (x["uztwm"] + x["lztwm"]))
    flux = prec - out["evapotranspiration"] - out["runoff"] - out["baseflow_nonchannel"]
    flux = flux + out["adimp_adjustment"]
    torch.testing.assert_close(out["storage"][:, -1] - start, flux.sum(-1), rtol=0, atol=1e-4)
    torch.testing.assert_close(out["storage_initial"], start)
    out_w = model(forcing, _params(PARAM_SETS), warmup_steps=100)
    assert model.mass_balance(out_w, forcing, warmup_steps=100).abs().max() < 1e-4
    assert (out["baseflow_nonchannel"][1] > 0).any() and (out["riparian_et"][1] > 0).any()
    # the components add up to the channel inflow
    parts = ["impervious_runoff", "direct_runoff", "surface_runoff", "interflow"]
    parts += ["baseflow_primary", "baseflow_supplemental"]
    total = sum(out[k] for k in parts) - out["riparian_et"]
    torch.testing.assert_close(out["runoff"], total.clamp(min=0), rtol=0, atol=1e-9)


def test_default_initial_states():
    model = SACSMA(nmul=2)
    params = {k: torch.tensor([[s.low, s.high]], dtype=torch.float64) for k, s in
              model.param_spec.items()}  # fmt: skip
    st = model.init_states(1, dtype=torch.float64, params=params)
    torch.testing.assert_close(st["uztwc"], 0.5 * params["uztwm"])
    torch.testing.assert_close(st["lzfpc"], 0.5 * params["lzfpm"])
    torch.testing.assert_close(st["adimc"], 0.5 * (params["uztwm"] + params["lztwm"]))
    st0 = SACSMA(initial_fill=0.2).init_states(3)  # spec defaults: UZTWM 50, LZTWM 130
    assert torch.allclose(st0["uztwc"], torch.tensor(10.0))
    assert torch.allclose(st0["adimc"], torch.tensor(36.0))
    prec, pet = synthetic_forcing(1, 60)
    forcing = {"precipitation": prec, "pet": pet}
    torch.testing.assert_close(
        model(forcing, params, states=st)["runoff"], model(forcing, params)["runoff"]
    )


def test_contract_call_and_state_continuation():
    prec, pet = synthetic_forcing(4, 300)
    params = _params(PARAM_SETS[:4])
    out = SACSMA()(forcing={"precipitation": prec, "pet": pet}, params=params)
    assert out["runoff"].shape == (4, 300) and (out["runoff"] >= 0).all()
    assert set(SACSMA_OUTPUTS) <= set(out)
    model = SACSMA(nmul=3)
    same = model(
        {"precipitation": prec, "pet": pet}, {k: v[:, None].repeat(1, 3) for k, v in params.items()}
    )
    torch.testing.assert_close(same["runoff"], out["runoff"])
    first = model({"precipitation": prec[:, :130], "pet": pet[:, :130]}, params, return_states=True)
    second = model(
        {"precipitation": prec[:, 130:], "pet": pet[:, 130:]},
        params,
        states=model.final_states(first),
    )
    torch.testing.assert_close(torch.cat([first["runoff"], second["runoff"]], 1), out["runoff"])
    both = model(
        {"precipitation": torch.stack([prec, prec]), "pet": torch.stack([pet, pet])}, params
    )
    assert both["runoff"].shape == (2, 4, 300)
    torch.testing.assert_close(both["runoff"][1], out["runoff"])
    # float32 in, float32 out (the kernel computes in float64)
    out32 = SACSMA()(
        {"precipitation": prec.float(), "pet": pet.float()}, _params(PARAM_SETS[:4], torch.float32)
    )
    assert out32["runoff"].dtype == torch.float32
    torch.testing.assert_close(out32["runoff"].double(), out["runoff"], rtol=0, atol=1e-3)


def test_errors_name_the_variable():
    prec, pet = synthetic_forcing(2, 20)
    params = _params(PARAM_SETS[:2])
    model = SACSMA()
    with pytest.raises(ValueError, match="pet"):
        model({"precipitation": prec}, params)
    with pytest.raises(ValueError, match="'lzpk'.*outside its bounds"):
        model({"precipitation": prec, "pet": pet}, params | {"lzpk": torch.tensor([0.01, 0.5])})
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['rexp'\]"):
        model({"precipitation": prec, "pet": pet}, {k: v for k, v in params.items() if k != "rexp"})
    with pytest.raises(ValueError, match="'uzk'.*shape"):
        model({"precipitation": prec, "pet": pet}, params | {"uzk": torch.full((2, 20), 0.3)})
    for name in ("uztwm", "lzfpm", "adimp", "pctim", "nope"):
        with pytest.raises(ValueError, match=rf"\['{name}'\] cannot be dynamic") as err:
            SACSMA(dynamic=("uzk", name))
        assert "\n" not in str(err.value) and "define the stores" in str(err.value)
    with pytest.raises(ValueError, match="static parameters only"):
        SACSMA(dynamic=("uzk",), gradient="sensitivity")
    with pytest.raises(
        ValueError, match="'uztwm'.*not declared dynamic"
    ):  # [N, T, m] of a static one
        SACSMA(dynamic=("uzk",))(
            {"precipitation": prec, "pet": pet},
            params | {"uzk": torch.full((2, 20, 1), 0.3), "uztwm": torch.full((2, 20, 1), 50.0)},
        )
    with pytest.raises(ValueError, match="gradient must be one of"):
        SACSMA(gradient="adjoint")
    with pytest.raises(ValueError, match="initial state 'adimc'"):
        st = model.init_states(2, dtype=torch.float64)
        model({"precipitation": prec, "pet": pet}, params, states=st | {"adimc": torch.zeros(3)})


def test_registry_and_spec():
    assert get_runoff_model("sacsma") is SACSMA
    model = SACSMA()
    assert model.forcing_names == ("precipitation", "pet")  # no temperature, no snow
    spec = model.param_spec
    assert tuple(spec) == PARAM_NAMES and len(spec) == 16
    assert (spec["uztwm"].low, spec["uztwm"].high, spec["uztwm"].units) == (10.0, 300.0, "mm")
    assert (spec["lzpk"].low, spec["lzpk"].high, spec["lzpk"].units) == (0.001, 0.05, "1/day")
    assert spec["pctim"].high + spec["adimp"].high <= 0.5  # the pervious area stays ≥ 50 %
    assert not any(s.dynamic for s in spec.values())
    dyn = SACSMA(dynamic=DYNAMIC_CAPABLE).param_spec
    assert {k for k, s in dyn.items() if s.dynamic} == set(DYNAMIC_CAPABLE)
    assert set(DYNAMIC_CAPABLE) == {"uzk", "lzsk", "lzpk", "zperc", "rexp", "pfree", "riva",
                                    "side", "rserv"}  # fmt: skip


def test_bench_sacsma_agrees():
    from gnnhydro.bench.runoff import main, run_bench

    rows = run_bench(5, 30, 2, model="sacsma")
    assert rows[-1]["max_abs_runoff_diff_fused_vs_loop_mm"] < 1e-4
    sens = [r for r in rows if "sensitivities" in str(r.get("path"))]
    assert [r["pass"] for r in sens] == ["forward", "forward+backward"]
    assert main(["--model", "sacsma", "--basins", "4", "--days", "20", "--nmul", "2"]) == 0
