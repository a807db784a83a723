"""Training without gradient through the warm-up (``trainer.warmup_gradient=false``).

``HydroModel(batch, detach_steps=d)`` runs the runoff model's first ``d`` steps without autograd
and the rest from the states they reach.  Checked against a reference written here from the
definition with the per-step torch loop (``backend="torch"``): the warm-up under ``no_grad``,
the loss period from its detached final states, then units and routing.
"""

import pytest
import torch

from gnnhydro.datasets.continent import _FixedParameters
from gnnhydro.graph import RiverGraph
from gnnhydro.models import HydroModel
from gnnhydro.routing import get_irf, route
from gnnhydro.runoff import HBV
from gnnhydro.units import mm_per_step_to_m3s

T, D, NMUL = 60, 25, 2


def _graph() -> RiverGraph:
    g = RiverGraph.from_edges(
        [10, 11, 12, 13], downstream=[12, 12, 13, None], area_km2=[50.0, 80.0, 20.0, 30.0]
    )
    gen = torch.Generator().manual_seed(1)
    g.x = torch.rand(4, 3, generator=gen)
    g.x_names = ["a", "b", "c"]
    rain = torch.rand(4, T, generator=gen) * 12 * (torch.rand(4, T, generator=gen) < 0.5)
    temp = torch.rand(4, T, generator=gen) * 20 - 6
    pet = torch.rand(4, T, generator=gen) * 3
    g.forcing = torch.stack([rain, temp, pet], dim=-1).double()
    g.forcing_names = ["precipitation", "temperature", "pet"]
    g.area_km2 = g.area_km2.double()
    g.step_seconds = 86400.0
    return g


def _leaves(runoff: HBV, n: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    specs = {**runoff.param_spec, **get_irf("muskingum").param_spec}
    out = {}
    for name, spec in specs.items():
        shape = (n, NMUL) if runoff.values_per_node(name) and name in runoff.param_spec else (n,)
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        out[name] = (spec.low + (spec.high - spec.low) * (0.15 + 0.7 * u)).requires_grad_(True)
    return out


def _reference(g: RiverGraph, runoff: HBV, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Discharge with the warm-up's runoff detached, from the definition (torch loop)."""
    forcing = {k: g.forcing[..., i] for i, k in enumerate(g.forcing_names)}
    rp = {k: params[k] for k in runoff.param_spec}
    with torch.no_grad():
        head = runoff({k: v[:, :D] for k, v in forcing.items()}, rp, return_states=True)
    seed = {k: v.detach() for k, v in runoff.final_states(head).items()}
    tail = runoff({k: v[:, D:] for k, v in forcing.items()}, rp, states=seed)
    mm = torch.cat([head["runoff"], tail["runoff"]], dim=1)
    if runoff.unit_hydrograph:
        mm = runoff.routed_runoff(mm, rp)
    lateral = mm_per_step_to_m3s(mm, g.area_km2, 86400.0)
    muskingum = {"k": params["k"], "x": params["x"]}
    return route(lateral, g, irf="muskingum", params=muskingum, substeps="auto")


@pytest.mark.parametrize("unit_hydrograph", [False, True])
def test_detached_warmup_equals_the_definition(unit_hydrograph):
    g = _graph()
    params = _leaves(HBV(nmul=NMUL, unit_hydrograph=unit_hydrograph))
    model = HydroModel(
        _FixedParameters(params),
        HBV(nmul=NMUL, unit_hydrograph=unit_hydrograph),
        "muskingum",
        substeps="auto",
    )
    full = model(g)["discharge"]
    cut = model(g, detach_steps=D)["discharge"]
    # the values are those of one run over the whole period
    torch.testing.assert_close(cut, full, rtol=1e-12, atol=1e-12)

    reference_model = HBV(nmul=NMUL, unit_hydrograph=unit_hydrograph, backend="torch")
    expected = _reference(g, reference_model, params)
    torch.testing.assert_close(cut, expected, rtol=1e-10, atol=1e-10)
    names = sorted(params)
    got = torch.autograd.grad(cut[:, D:].sum(), [params[k] for k in names])
    want = torch.autograd.grad(expected[:, D:].sum(), [params[k] for k in names])
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=f"gradient of {name}")
    # and the warm-up really is cut: the slow lower zone's parameters feel the difference
    exact = torch.autograd.grad(full[:, D:].sum(), [params[k] for k in names])
    differs = {k for k, a, b in zip(names, got, exact, strict=True) if not torch.allclose(a, b)}
    assert {"k2", "fc", "beta"} <= differs, differs


def test_detached_warmup_needs_a_warmup_shorter_than_the_run():
    g = _graph()
    params = _leaves(HBV(nmul=NMUL))
    model = HydroModel(_FixedParameters(params), HBV(nmul=NMUL), "muskingum", substeps="auto")
    with pytest.raises(ValueError, match=r"detach_steps must be in \[1, 60\)"):
        model(g, detach_steps=T)
    with torch.no_grad():  # without autograd there is nothing to detach: one plain run
        torch.testing.assert_close(model(g, detach_steps=T)["discharge"], model(g)["discharge"])
