"""HBV against the established δHBV 1.0 reference case (../shared/reference/hbv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gnnhydro.runoff import HBV, gamma_unit_hydrograph, uh_convolve
from gnnhydro.runoff.hbv import HBV_PARAM_SPECS, UH_PARAM_SPECS
from gnnhydro.spec import to_bounds

REF = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "hbv" / "case_seed0.npz"


@pytest.fixture(scope="module")
def case():
    if not REF.exists():
        pytest.skip(f"reference case not found at {REF}")
    return dict(np.load(REF))


def _inputs(d, dtype=torch.float64):
    forcing = {
        "precipitation": torch.tensor(d["P"].T, dtype=dtype),
        "temperature": torch.tensor(d["Tair"].T, dtype=dtype),
        "pet": torch.tensor(d["PET"].T, dtype=dtype),
    }
    names = [str(n)[3:].lower() for n in d["param_names"]]
    params = {n: torch.tensor(d[f"param_par{n.upper()}"], dtype=dtype) for n in names}
    return forcing, params


PAIRS = [
    ("runoff", "out_streamflow_no_rout"),
    ("surface_flow", "out_srflow_no_rout"),
    ("interflow", "out_ssflow_no_rout"),
    ("baseflow", "out_gwflow_no_rout"),
    ("evapotranspiration", "out_AET_hydro"),
    ("recharge", "out_recharge"),
    ("excess", "out_excs"),
    ("tosoil", "out_tosoil"),
    ("percolation", "out_percolation"),
]


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_outputs_match_reference(case, backend):
    forcing, params = _inputs(case)
    model = HBV(nmul=int(case["nmul"]), backend=backend)
    out = model(forcing, params, return_states=True)
    assert out["runoff"].shape == (8, 365)
    for ours, ref in PAIRS:
        np.testing.assert_allclose(out[ours].numpy(), case[ref].T, atol=1e-4, err_msg=ours)
    # SWE of the reference is the snowpack (float32 accumulation of ~100 mm: atol 5e-4)
    np.testing.assert_allclose(out["snowpack"].numpy(), case["out_SWE"].T, atol=5e-4)
    for ours, ref in [
        ("snowpack", "SNOWPACK"),
        ("meltwater", "MELTWATER"),
        ("soil_moisture", "SM"),
        ("upper_zone", "SUZ"),
        ("lower_zone", "SLZ"),
    ]:
        np.testing.assert_allclose(
            out[f"final_{ours}"].numpy(), case[f"final_state_{ref}"], atol=5e-4, rtol=1e-5
        )


def test_unit_hydrograph_matches_reference(case):
    forcing, params = _inputs(case)
    a = torch.tensor(case["uh_shape_a"])
    theta = torch.tensor(case["uh_scale_theta"])
    w = gamma_unit_hydrograph(a, theta, int(case["routing_len"]))
    torch.testing.assert_close(w.sum(-1), torch.ones(8, dtype=w.dtype))
    model = HBV(nmul=2, unit_hydrograph=True)
    params["route_a"] = torch.tensor(case["param_route_a"])
    params["route_b"] = torch.tensor(case["param_route_b"])
    out = model(forcing, params)
    np.testing.assert_allclose(out["runoff_routed"].numpy(), case["out_streamflow"].T, atol=1e-4)
    np.testing.assert_allclose(
        uh_convolve(out["runoff"], w).numpy(), out["runoff_routed"].numpy(), atol=1e-12
    )


@pytest.mark.parametrize(
    "backend,dtype", [("torch", torch.float64), ("numba", torch.float64), ("numba", torch.float32)]
)
def test_gradient_matches_reference(case, backend, dtype):
    forcing, _ = _inputs(case, dtype)
    m = int(case["nmul"])
    names = [str(n)[3:].lower() for n in case["param_names"]]
    raw = torch.tensor(case["raw_params"], dtype=dtype, requires_grad=True)
    params = {
        n: to_bounds(raw[:, i * m : (i + 1) * m], HBV_PARAM_SPECS[n]) for i, n in enumerate(names)
    }
    params["route_a"] = to_bounds(raw[:, -2], UH_PARAM_SPECS["route_a"])
    params["route_b"] = to_bounds(raw[:, -1], UH_PARAM_SPECS["route_b"])
    out = HBV(nmul=m, unit_hydrograph=True, backend=backend)(forcing, params)
    loss = out["runoff_routed"].mean()
    loss.backward()
    assert abs(loss.item() - float(case["loss"])) < 1e-6
    ref = case["grad_raw_params"]
    np.testing.assert_allclose(raw.grad.numpy(), ref, atol=1e-6 * np.abs(ref).max() + 1e-9, rtol=0)


def test_public_contract(case):
    forcing, params = _inputs(case, torch.float32)
    model = HBV(nmul=2)
    assert set(model.param_spec) == {
        "beta", "fc", "k0", "k1", "k2", "lp", "perc", "uzl", "tt", "cfmax", "cfr", "cwh"
    }  # fmt: skip
    assert model.param_spec["fc"].units == "mm"
    assert (model.param_spec["fc"].low, model.param_spec["fc"].high) == (50.0, 1000.0)
    out = model(forcing, params)
    assert out["runoff"].dtype == torch.float32
    np.testing.assert_allclose(out["runoff"].numpy(), case["out_streamflow_no_rout"].T, atol=1e-4)
