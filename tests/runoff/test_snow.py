"""The degree-day snow routine shared by HBV, GR4J and SAC-SMA: the torch step and the fused numba
pass against a plain-Python reference written here from the equations (Bergström 1976, as in
HBV), gradients, and GR4J / SAC-SMA with ``snow=True`` (backends agree, water balance with the
snowpack, no temperature = no snow)."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.runoff import GR4J, SACSMA
from gnnhydro.runoff.kernels.snow_numba import SnowFused, snow_numba_apply
from gnnhydro.runoff.snow import NO_SNOW_TEMPERATURE_C, SNOW_PARAMS, degree_day_snow
from tests.runoff.conftest import forcing as make_forcing
from tests.runoff.conftest import params as make_params


def reference_snow(precip, temp, tt, cfmax, cfr, cwh, sp=0.0, mw=0.0):
    """Plain-Python degree-day snow, day by day: liquid water out, snowpack, meltwater."""
    liquid, sps, mws = [], [], []
    for p, ta in zip(precip, temp, strict=True):
        if ta >= tt:
            rain, snow = p, 0.0
        else:
            rain, snow = 0.0, p
        sp += snow
        melt = min(cfmax * max(ta - tt, 0.0), sp)
        sp -= melt
        mw += melt
        refreeze = min(cfr * cfmax * max(tt - ta, 0.0), mw)
        sp += refreeze
        mw -= refreeze
        tosoil = max(mw - cwh * sp, 0.0)
        mw -= tosoil
        liquid.append(rain + tosoil)
        sps.append(sp)
        mws.append(mw)
    return liquid, sps, mws


# four nodes, a winter that builds a pack, freezes back and melts out
TEMP = torch.tensor([-8.0, -3.0, -1.0, 0.5, 2.0, -2.0, -6.0, 1.0, 4.0, 7.0, 9.0, 3.0, -1.0, 6.0])
PREC = torch.tensor([5.0, 12.0, 0.0, 3.0, 8.0, 0.0, 2.0, 0.0, 6.0, 0.0, 0.0, 1.0, 4.0, 0.0])
PARAMS = {  # tt, cfmax, cfr, cwh per node
    "tt": [0.0, -1.5, 1.2, 2.4],
    "cfmax": [3.0, 0.8, 6.5, 9.0],
    "cfr": [0.05, 0.0, 0.09, 0.02],
    "cwh": [0.1, 0.2, 0.0, 0.15],
}


def _case():
    n = len(PARAMS["tt"])
    precip = PREC.double().expand(n, -1).clone()
    temp = (TEMP.double() + torch.arange(n, dtype=torch.float64).unsqueeze(-1) * 0.7).clone()
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in PARAMS.items()}
    return precip, temp, params


def test_torch_and_numba_snow_equal_the_reference():
    precip, temp, params = _case()
    n, t = precip.shape
    zero = torch.zeros(n, 1, dtype=torch.float64)
    fused = snow_numba_apply(precip, temp, params, {"snowpack": zero, "meltwater": zero})
    sp, mw = zero.squeeze(-1), zero.squeeze(-1)
    liquid = []
    for i in range(t):
        sp, mw, rain, tosoil = degree_day_snow(sp, mw, precip[:, i], temp[:, i], params)
        liquid.append(rain + tosoil)
    liquid = torch.stack(liquid, dim=-1)
    for node in range(n):
        ref_liq, ref_sp, ref_mw = reference_snow(
            precip[node].tolist(), temp[node].tolist(), *(PARAMS[k][node] for k in SNOW_PARAMS)
        )
        torch.testing.assert_close(liquid[node], torch.tensor(ref_liq, dtype=torch.float64))
        torch.testing.assert_close(fused["liquid_water"][node], torch.tensor(ref_liq).double())
        torch.testing.assert_close(fused["snowpack"][node], torch.tensor(ref_sp).double())
        torch.testing.assert_close(fused["meltwater"][node], torch.tensor(ref_mw).double())
    # the case exercises every branch: snowfall, melt, refreezing, retention and release
    assert fused["snowpack"].max() > 10
    assert (fused["snowpack"][:, -1] < fused["snowpack"].max(dim=-1).values).all()  # melts
    assert (fused["meltwater"] > 0).any()
    released = fused["liquid_water"] - precip * (temp >= params["tt"].unsqueeze(-1))
    assert (released > 1e-9).any()
    # water balance: what fell = what left as liquid + what is still in the pack
    total = precip.sum(-1) - fused["liquid_water"].sum(-1)
    torch.testing.assert_close(
        total, fused["final_snowpack"][:, 0] + fused["final_meltwater"][:, 0]
    )


def test_fused_snow_gradcheck():
    precip, temp, params = _case()
    prm = torch.stack([params[k] for k in SNOW_PARAMS], dim=-1)
    # away from the kinks: a zero refreezing coefficient or retention, an empty pack
    prm[:, 2:] = prm[:, 2:].clamp(min=0.03)
    prm.requires_grad_()
    s0 = torch.tensor([[5.0, 0.4, 20.0, 1.0], [0.5, 0.1, 1.0, 0.2]], dtype=torch.float64)
    s0.requires_grad_()
    temp = temp.requires_grad_()
    precip = precip.requires_grad_()

    def fn(p, tmp, prm, s0):
        return SnowFused.apply(p, tmp, 0.0, prm, s0)

    assert torch.autograd.gradcheck(fn, (precip, temp, prm, s0), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [GR4J, SACSMA])
def test_models_with_snow_agree_and_close_the_balance(cls):
    n, t = 4, 150
    f = make_forcing(n, t)
    f["temperature"] = f["temperature"] - 3.0  # a cold record: snow accumulates and melts
    res = {}
    for backend in ("numba", "torch"):
        model = cls(3, snow=True, backend=backend)
        assert model.forcing_names[-1] == "temperature" and "snowpack" in model.state_names
        p = make_params(model, n, t)
        assert p["tt"].shape == (n,) and p["x1" if cls is GR4J else "uztwm"].shape == (n, 3)
        out = model(f, p, return_states=True)
        balance = model.mass_balance(out, f).abs().max().item()
        assert balance < 1e-4, f"{cls.__name__} {backend}: water balance {balance:.2e} mm"
        assert out["swe"].max() > 5.0
        (out["runoff"].sum() + 0.1 * out["swe"].sum()).backward()
        res[backend] = (out["runoff"].detach(), {k: v.grad for k, v in p.items()})
    torch.testing.assert_close(res["numba"][0], res["torch"][0], rtol=1e-10, atol=1e-10)
    for k, g in res["torch"][1].items():
        torch.testing.assert_close(res["numba"][1][k], g, rtol=1e-8, atol=1e-10, msg=k)
    assert res["torch"][1]["cfmax"].abs().max() > 0  # the snow parameters receive gradients


@pytest.mark.parametrize("cls", [GR4J, SACSMA])
def test_snow_without_cold_is_the_snow_free_model(cls):
    """At the no-temperature fill every drop is rain and the pack stays empty: the runoff of
    ``snow=True`` is exactly that of the model without snow."""
    n, t = 3, 60
    f = make_forcing(n, t)
    plain = cls(2)
    p = make_params(plain, n, t)
    ref = plain({k: f[k] for k in plain.forcing_names}, p)["runoff"]
    snowy = cls(2, snow=True)
    ps = make_params(snowy, n, t)
    ps.update({k: v for k, v in p.items()})
    warm = dict(f, temperature=torch.full_like(f["pet"], NO_SNOW_TEMPERATURE_C))
    out = snowy(warm, ps)
    torch.testing.assert_close(out["runoff"], ref, rtol=0, atol=1e-12)
    assert float(out["swe"].abs().max()) == 0.0


def test_snow_parameter_shape_is_checked():
    model = GR4J(2, snow=True)
    f = make_forcing(2, 10)
    p = make_params(model, 2, 10)
    p["cfmax"] = torch.full((2, 2), 3.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'cfmax' has shape \[2, 2\], expected \[2\]"):
        model(f, p)
