"""Forcing without temperature: runoff models with a snow routine run without snow (all
precipitation liquid, nothing melts), through HydroModel as from a dataset that has none."""

import pytest
import torch

from gnnhydro.graph import RiverGraph
from gnnhydro.models import HydroModel
from gnnhydro.nn import build_parameterizer
from gnnhydro.runoff import HBV, LinearReservoir


def _graph_without_temperature(T: int = 50, isolated: bool = False) -> RiverGraph:
    downstream = [None, None, None] if isolated else [3, 3, None]
    g = RiverGraph.from_edges([1, 2, 3], downstream=downstream, area_km2=[40.0, 60.0, 10.0])
    gen = torch.Generator().manual_seed(3)
    g.x = torch.rand(3, 2, generator=gen)
    precip = torch.rand(3, T, generator=gen) * 12
    pet = torch.rand(3, T, generator=gen) * 3
    g.forcing = torch.stack([precip, pet], dim=-1)
    g.forcing_names = ["precipitation", "pet"]
    g.step_seconds = 86400.0
    return g


def _model(runoff) -> HydroModel:
    specs = {"runoff": (dict(runoff.param_spec), runoff.nmul)}
    parameterizer = build_parameterizer("mlp", in_channels=2, specs=specs, hidden_channels=8)
    return HydroModel(parameterizer, runoff, None, mode="runoff")


@pytest.mark.parametrize("isolated", [False, True])
def test_hbv_without_temperature_has_no_snow(isolated):
    g = _graph_without_temperature(isolated=isolated)
    hbv = HBV(nmul=2)
    model = _model(hbv)
    forcing = model.forcing_dict(g)
    assert set(forcing) == {"precipitation", "temperature", "pet"}
    precip = g.forcing[..., 0]
    # the thresholds over their whole range: snow never forms
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, spec in hbv.param_spec.items():
        u = torch.rand(3, 2, generator=gen, dtype=torch.float64)
        params[name] = (spec.low + u * (spec.high - spec.low)).float()
    params["tt"] = torch.tensor([[2.5, -2.5]] * 3)  # the highest threshold included
    out = hbv(forcing, params)
    # all precipitation falls as rain: the snow stores (0.001 mm at the start) empty at the
    # first step and stay empty, no meltwater reaches the soil afterwards
    assert out["swe"].abs().max().item() < 1e-6
    assert out["tosoil"][:, 1:].abs().max().item() < 1e-6
    # mass balance of the whole column: precipitation = ET + runoff + change in storage
    balance = (
        precip.sum(1)
        - out["evapotranspiration"].sum(1)
        - out["runoff"].sum(1)
        - (out["storage"][:, -1] - out["storage_initial"])
    )
    assert balance.abs().max().item() < 1e-3 * precip.sum(1).max().item()
    # through HydroModel too
    assert torch.isfinite(model(g)["runoff"]).all()


def test_forcing_that_a_model_needs_is_still_required():
    g = _graph_without_temperature()
    g.forcing_names = ["precipitation", "evaporation"]
    with pytest.raises(ValueError, match=r"needs forcing \['pet'\]"):
        _model(HBV(nmul=1)).forcing_dict(g)
    # a model without a snow routine reads only what it needs
    forcing = _model(LinearReservoir()).forcing_dict(_graph_without_temperature())
    assert set(forcing) == {"precipitation"}
