"""Learned forcing correction: closed form, dates, gradients, errors, and its place in HydroModel."""

import math

import numpy as np
import pytest
import torch

from gnnhydro.models import ForcingCorrection, HydroModel
from gnnhydro.models.forcing_correction import day_of_year
from gnnhydro.nn import build_parameterizer
from gnnhydro.routing import get_irf
from gnnhydro.runoff import HBV
from tests.models.test_hydro_model import _graph


def test_day_of_year_of_daily_subdaily_and_batched_dates():
    t = np.array(["1980-01-01", "1980-03-01", "1980-12-31T12:00", "1981-01-01"], "datetime64[ns]")
    # 1980 is a leap year: 1 March is day 60 (0-based), noon on 31 December is 365.5
    torch.testing.assert_close(
        day_of_year(t), torch.tensor([0.0, 60.0, 365.5, 0.0], dtype=torch.float64)
    )
    other = np.array(["1979-07-01", "1979-07-02", "1979-07-03", "1979-07-04"], "datetime64[ns]")
    batch = torch.tensor([0, 0, 1, 1, 1])
    per_node = day_of_year([t, other], batch=batch)
    assert per_node.shape == (5, 4)
    torch.testing.assert_close(per_node[0], day_of_year(t))
    torch.testing.assert_close(
        per_node[4], torch.tensor([181.0, 182, 183, 184], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="batch"):
        day_of_year([t, other])


def test_multiplier_matches_the_closed_form_and_stays_positive():
    fc = ForcingCorrection({"precipitation": "constant", "pet": "seasonal"})
    assert list(fc.param_spec) == [
        "precipitation_factor",
        "pet_factor",
        "pet_cos",
        "pet_sin",
    ]
    # mid-range of every bound is the identity (a fresh sigmoid head starts there)
    for spec in fc.param_spec.values():
        assert (spec.low + spec.high) / 2 == pytest.approx(spec.default)
    doy = torch.tensor([0.0, 91.3125, 182.625, 273.9375], dtype=torch.float64)
    params = {
        "precipitation_factor": torch.tensor([1.2, 0.8], dtype=torch.float64),
        "pet_factor": torch.tensor([1.0, 1.4], dtype=torch.float64),
        "pet_cos": torch.tensor([0.3, -0.1], dtype=torch.float64),
        "pet_sin": torch.tensor([0.0, 0.2], dtype=torch.float64),
    }
    forcing = {
        "precipitation": torch.full((2, 4), 10.0, dtype=torch.float64),
        "temperature": torch.full((2, 4), 5.0, dtype=torch.float64),
        "pet": torch.full((2, 4), 2.0, dtype=torch.float64),
    }
    out = fc(forcing, params, doy)
    torch.testing.assert_close(
        out["precipitation"][:, 0], torch.tensor([12.0, 8.0], dtype=torch.float64)
    )
    torch.testing.assert_close(out["temperature"], forcing["temperature"])
    # quarter-year steps: cos = 1, 0, -1, 0 and sin = 0, 1, 0, -1
    expected = 2.0 * np.array([[1.3, 1.0, 0.7, 1.0], [1.4 * 0.9, 1.4 * 1.2, 1.4 * 1.1, 1.4 * 0.8]])
    np.testing.assert_allclose(out["pet"].numpy(), expected, rtol=1e-12)
    # the extreme harmonic amplitudes cannot make a multiplier negative
    worst = {"pet_factor": torch.tensor([0.5]), "pet_cos": torch.tensor([0.3])}
    worst["pet_sin"] = torch.tensor([0.3])
    days = torch.linspace(0, 365.25, 1000)
    lowest = fc.multiplier("pet", worst, days).min()
    assert lowest == pytest.approx(0.5 * (1 - 0.3 * math.sqrt(2)), abs=1e-5)
    assert lowest > 0


def test_gradients_are_exact():
    fc = ForcingCorrection({"precipitation": "seasonal", "pet": "constant"})
    doy = torch.linspace(0.0, 365.0, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    precip = torch.rand(3, 6, generator=gen, dtype=torch.float64)
    pet = torch.rand(3, 6, generator=gen, dtype=torch.float64)
    names = list(fc.param_spec)

    def corrected(*values):
        out = fc({"precipitation": precip, "pet": pet}, dict(zip(names, values, strict=True)), doy)
        return out["precipitation"], out["pet"]

    inputs = [torch.rand(3, generator=gen, dtype=torch.float64).requires_grad_() for _ in names]
    assert torch.autograd.gradcheck(corrected, inputs)


def test_bad_configuration_names_the_cause():
    with pytest.raises(ValueError, match="temperature"):
        ForcingCorrection({"temperature": "constant"})
    with pytest.raises(ValueError, match="monthly"):
        ForcingCorrection({"pet": "monthly"})
    with pytest.raises(ValueError, match="no variable"):
        ForcingCorrection({})
    fc = ForcingCorrection({"pet": "seasonal"})
    params = {n: torch.ones(2) for n in fc.param_spec}
    with pytest.raises(ValueError, match="dates"):
        fc({"pet": torch.ones(2, 3)}, params, None)
    with pytest.raises(ValueError, match="'pet'"):
        fc({"precipitation": torch.ones(2, 3)}, params, torch.zeros(3))


def _corrected_model() -> HydroModel:
    runoff = HBV(nmul=2)
    correction = ForcingCorrection({"precipitation": "seasonal", "pet": "seasonal"})
    specs = {
        "runoff": (dict(runoff.param_spec), 2),
        "forcing": (dict(correction.param_spec), None),
        "routing": (dict(get_irf("muskingum").param_spec), None),
    }
    parameterizer = build_parameterizer("sage", in_channels=3, specs=specs, hidden_channels=8)
    return HydroModel(
        parameterizer, runoff, "muskingum", forcing_correction=correction, spinup_steps=10
    )


def test_hydro_model_runs_the_physics_on_the_corrected_forcing():
    torch.manual_seed(0)
    g = _graph(T=30)
    g.time = np.arange("1980-02-20", "1980-03-21", dtype="datetime64[D]").astype("datetime64[ns]")
    model = _corrected_model()
    assert set(model.param_specs) >= {"pet_factor", "precipitation_sin", "fc", "k"}
    out = model(g)
    params = out["params"]
    assert params["pet_factor"].shape == (4,)
    # the same physics (spin-up included) on forcing scaled by hand, without a correction
    doy = day_of_year(g.time).float()
    scaled = g.clone()
    forcing = g.forcing.clone()
    for i, var in ((0, "precipitation"), (2, "pet")):
        angle = 2 * math.pi * doy / 365.25
        mult = params[f"{var}_factor"][:, None] * (
            1
            + params[f"{var}_cos"][:, None] * torch.cos(angle)
            + params[f"{var}_sin"][:, None] * torch.sin(angle)
        )
        forcing[..., i] = forcing[..., i] * mult
    scaled.forcing = forcing.detach()
    plain = HydroModel(model.parameterizer, model.runoff, "muskingum", spinup_steps=10)
    torch.testing.assert_close(out["discharge"], plain(scaled)["discharge"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["forcing"]["pet"], forcing[..., 2])
    # the correction's parameters are trained by the loss at the outlet
    out["discharge"][3].sum().backward()
    head = model.parameterizer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_routing_mode_refuses_a_forcing_correction():
    with pytest.raises(ValueError, match="runoff model"):
        HydroModel(
            _corrected_model().parameterizer,
            None,
            "muskingum",
            mode="routing",
            forcing_correction=ForcingCorrection({"pet": "constant"}),
        )
