"""HBVOptions: validation, the HBV constructor's keywords, and one options object giving the same
model on every entry point (torch loop, numba adjoint, numba and triton sensitivities)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (as test_hbv_triton)

import pytest  # noqa: E402
import torch  # noqa: E402

from gnnhydro.runoff import HBV, HBVOptions, hbv_torch_loop  # noqa: E402
from gnnhydro.runoff.kernels import hbv_numba  # noqa: E402

N, T, M = 3, 30, 2
AREA_KM2 = (300.0, 1800.0, 2600.0)  # exchange loss, gain, decaying gain
#: every field away from its default, so that a path ignoring one of them differs
FULL = HBVOptions(eps=0.05, nearzero=0.5, betaet=True, capillary=True, groundwater_exchange=True)


@pytest.mark.parametrize(
    "field,value",
    [("eps", -0.1), ("eps", math.nan), ("eps", math.inf), ("nearzero", -1e-5), ("eps", "0.1")],
)
def test_invalid_option_is_a_one_line_error_naming_the_field(field, value):
    with pytest.raises(ValueError) as err:
        HBVOptions(**{field: value})
    msg = str(err.value)
    assert msg == f"HBVOptions: {field} must be a finite number ≥ 0, got {value!r}"
    assert "\n" not in msg


def test_invalid_flag_and_hbv_keywords():
    with pytest.raises(ValueError, match=r"^HBVOptions: capillary must be a bool, got 'no'$"):
        HBVOptions(capillary="no")
    with pytest.raises(ValueError, match=r"^HBVOptions: eps must be a finite number ≥ 0"):
        HBV(2, smoothing=-0.01)
    with pytest.raises(ValueError, match=r"^HBVOptions: nearzero must"):
        HBV(2, nearzero=-1.0)


def test_hbv_builds_its_options_from_the_keywords():
    model = HBV(2, betaet=True, capillary=1, gradient="sensitivity", nearzero=1e-4)
    assert model.options == HBVOptions(eps=0.01, nearzero=1e-4, betaet=True, capillary=True)
    assert type(model.options.capillary) is bool and type(model.options.eps) is float
    assert (model.smoothing, model.nearzero, model.betaet, model.capillary) == (
        0.01,
        1e-4,
        True,
        True,
    )
    assert not model.groundwater_exchange
    with pytest.raises(AttributeError):
        model.smoothing = 0.1  # one source of truth: the (frozen) options
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.options.eps = 0.1


def test_scalars_are_in_the_numba_kernels_argument_order():
    """The one place the options are unpacked for numba matches every kernel's signature."""
    for kernel in (
        hbv_numba._forward_kernel,
        hbv_numba._adjoint_kernel,
        hbv_numba._sensitivity_kernel,
    ):
        names = list(inspect.signature(kernel.py_func).parameters)
        i = names.index("init") + 1
        assert names[i : i + 5] == ["eps", "nz", "betaet", "cap", "gx"], kernel
    assert FULL.scalars() == (0.05, 0.5, True, True, True)


def test_kernel_entry_points_take_an_options_object(make_forcing):
    f = make_forcing(N, T)
    model = HBV(M)
    args = (f["precipitation"], f["temperature"], f["pet"], {}, model.init_states(N))
    with pytest.raises(TypeError, match="options must be an HBVOptions, got dict"):
        hbv_numba.hbv_numba_apply(*args, options={"eps": 0.0})


def _case(make_forcing, make_params):
    f = make_forcing(N, T, seed=11)
    model = HBV(M, betaet=True, capillary=True, groundwater_exchange=True)
    p = {k: v.detach() for k, v in make_params(model, N, T, seed=12).items()}
    p["rt"] = p["rt"] * 0.05
    p["ac"][0] = 1200.0  # node 0 loses water to the aquifer
    g = torch.Generator().manual_seed(13)
    states = {
        k: v + 5.0 * torch.rand(v.shape, generator=g, dtype=v.dtype)
        for k, v in model.init_states(N, dtype=torch.float64).items()
    }
    states["soil_moisture"][0] = 0.0  # below the floor: nearzero acts
    area = torch.tensor(AREA_KM2, dtype=torch.float64)
    return (f["precipitation"], f["temperature"], f["pet"]), p, states, area


def _run(fn, forcing, p, states, area, options):
    leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
    out = fn(*forcing, leaves, states, options=options, area_km2=area)
    loss = out["runoff"].sum() + out["evapotranspiration"].sum() + out["final_lower_zone"].sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {k: v.detach() for k, v in out.items()}, dict(zip(leaves, grads, strict=True))


def test_one_options_object_gives_the_same_model_on_every_path(make_forcing, make_params):
    forcing, p, states, area = _case(make_forcing, make_params)
    ref_out, ref_g = _run(hbv_torch_loop, forcing, p, states, area, FULL)
    # the case is sensitive to every field: a path that dropped one would not match
    for field, value in [
        ("eps", 0.0),
        ("nearzero", 1e-5),
        ("betaet", False),
        ("capillary", False),
        ("groundwater_exchange", False),
    ]:
        other, _ = _run(
            hbv_torch_loop, forcing, p, states, area, dataclasses.replace(FULL, **{field: value})
        )
        assert not torch.allclose(other["runoff"], ref_out["runoff"], rtol=1e-6, atol=1e-9), field
    paths = {
        "numba": hbv_numba.hbv_numba_apply,
        "numba sensitivity": hbv_numba.hbv_sensitivity_apply,
    }
    triton_forward = None
    if os.environ.get("TRITON_INTERPRET") == "1":  # CPU tensors: the interpreter only
        try:
            from gnnhydro.runoff.kernels import hbv_triton
        except ImportError:
            pass
        else:
            paths["triton sensitivity"] = hbv_triton.hbv_triton_sensitivity_apply
            triton_forward = hbv_triton.hbv_triton_forward
    for name, fn in paths.items():
        out, grads = _run(fn, forcing, p, states, area, FULL)
        for k, v in ref_out.items():
            torch.testing.assert_close(out[k], v, rtol=1e-9, atol=1e-10, msg=f"{name}: {k}")
        for k, v in ref_g.items():
            scale = v.abs().max().clamp_min(1e-12)
            assert ((grads[k] - v).abs().max() / scale) < 1e-6, f"{name}: d/d{k}"
    if triton_forward is not None:
        out = triton_forward(*forcing, p, states, options=FULL, area_km2=area)
        for k, v in ref_out.items():
            torch.testing.assert_close(out[k], v, rtol=1e-9, atol=1e-10, msg=f"triton: {k}")
