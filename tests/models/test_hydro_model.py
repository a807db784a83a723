"""HydroModel: each mode against the operators it chains, computed independently."""

import pytest
import torch

from gnnhydro.graph import RiverGraph
from gnnhydro.models import HydroModel
from gnnhydro.nn import build_parameterizer
from gnnhydro.routing import get_irf, route
from gnnhydro.runoff import HBV
from gnnhydro.units import mm_per_step_to_m3s


def _graph(T: int = 40) -> RiverGraph:
    g = RiverGraph.from_edges(
        [10, 11, 12, 13], downstream=[12, 12, 13, None], area_km2=[50.0, 80.0, 20.0, 30.0]
    )
    gen = torch.Generator().manual_seed(0)
    g.x = torch.rand(4, 3, generator=gen)
    g.x_names = ["a", "b", "c"]
    precip = torch.rand(4, T, generator=gen) * 10
    temp = torch.rand(4, T, generator=gen) * 20 - 5
    pet = torch.rand(4, T, generator=gen) * 3
    g.forcing = torch.stack([precip, temp, pet], dim=-1)
    g.forcing_names = ["precipitation", "temperature", "pet"]
    g.lateral_inflow = torch.rand(4, T, generator=gen)
    g.step_seconds = 86400.0
    return g


def _model(mode: str, nmul: int = 2) -> HydroModel:
    runoff = HBV(nmul=nmul) if mode != "routing" else None
    irf = "muskingum" if mode != "runoff" else None
    specs = {}
    if runoff is not None:
        specs["runoff"] = (dict(runoff.param_spec), nmul)
    if irf is not None:
        specs["routing"] = (dict(get_irf(irf).param_spec), None)
    parameterizer = build_parameterizer("sage", in_channels=3, specs=specs, hidden_channels=8)
    return HydroModel(parameterizer, runoff, irf, mode=mode)


def test_full_mode_chains_runoff_units_and_routing():
    g = _graph()
    model = _model("full")
    out = model(g)
    params = out["params"]
    hbv_params = {k: params[k] for k in model.runoff.param_spec}
    forcing = {n: g.forcing[..., i] for i, n in enumerate(g.forcing_names)}
    runoff = HBV(nmul=2)(forcing, hbv_params)["runoff"]
    lateral = mm_per_step_to_m3s(runoff, g.area_km2, 86400.0)
    expected = route(lateral, g, irf="muskingum", params={"k": params["k"], "x": params["x"]})
    torch.testing.assert_close(out["discharge"], expected)
    # m³/s from mm/day: 1 mm/day over 86.4 km² is 1 m³/s
    torch.testing.assert_close(
        mm_per_step_to_m3s(torch.ones(1, 1), torch.tensor([86.4]), 86400.0), torch.ones(1, 1)
    )
    # gradients reach every parameterizer weight
    out["discharge"][3].sum().backward()
    grads = [p.grad for p in model.parameterizer.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)


def test_routing_mode_routes_given_lateral_inflow():
    g = _graph()
    model = _model("routing")
    out = model(g)
    expected = route(
        g.lateral_inflow,
        g,
        irf="muskingum",
        params={"k": out["params"]["k"], "x": out["params"]["x"]},
    )
    torch.testing.assert_close(out["discharge"], expected)
    assert "runoff" not in out


def test_runoff_mode_is_lumped():
    g = _graph()
    model = _model("runoff")
    out = model(g)
    torch.testing.assert_close(
        out["discharge"], mm_per_step_to_m3s(out["runoff"], g.area_km2, 86400.0)
    )


def test_normalisation_and_bad_inputs():
    g = _graph()
    model = _model("full")
    model.x_mean = torch.zeros(2)
    model.x_std = torch.ones(2)
    with pytest.raises(ValueError, match="columns"):
        model(g)
    with pytest.raises(ValueError, match="mode"):
        HydroModel(model.parameterizer, None, "muskingum", mode="lumped")
    g2 = _graph()
    g2.forcing_names = ["precipitation", "temperature", "evap"]
    with pytest.raises(ValueError, match=r"needs forcing \['pet'\]"):
        _model("full")(g2)


def test_spinup_starts_from_states_after_cycling_the_first_steps():
    g = _graph(T=60)
    model = _model("full")
    model.spinup_steps = 30
    out = model(g)
    params = {k: out["params"][k] for k in model.runoff.param_spec}
    forcing = {n: g.forcing[..., i] for i, n in enumerate(g.forcing_names)}
    hbv = HBV(nmul=2)
    head = {k: v[:, :30] for k, v in forcing.items()}
    states = hbv.final_states(hbv(head, params, return_states=True))
    expected = hbv(forcing, params, states=states)["runoff"]
    torch.testing.assert_close(out["runoff"], expected)
    assert not torch.allclose(out["runoff"], hbv(forcing, params)["runoff"])
    # three cycles: each starts from the states the previous one reached
    model.spinup_cycles = 3
    out3 = model(g)
    for _ in range(2):
        states = hbv.final_states(hbv(head, params, states=states, return_states=True))
    torch.testing.assert_close(out3["runoff"], hbv(forcing, params, states=states)["runoff"])
    assert not torch.allclose(out3["runoff"], out["runoff"])


def test_routing_warm_start_from_a_discharge_series():
    g = _graph()
    g.q_given = torch.rand(4, g.lateral_inflow.size(1)) * 5
    g.q_given[2, 0] = float("nan")
    model = _model("routing")
    model.initial_discharge_from = "q_given"
    out = model(g)
    initial = torch.nan_to_num(g.q_given[:, 0], nan=0.0)
    expected = route(
        g.lateral_inflow,
        g,
        irf="muskingum",
        params={"k": out["params"]["k"], "x": out["params"]["x"]},
        initial_state=initial,
    )
    torch.testing.assert_close(out["discharge"], expected)
    model.initial_discharge_from = "q_missing"
    with pytest.raises(ValueError, match="q_missing"):
        model(g)
