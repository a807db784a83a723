"""Forward sensitivities (``gradient="sensitivity"``) of GR4J and SAC-SMA against reverse mode:
the fused numba adjoint and autograd through the torch loop, gradients with respect to every
parameter and every initial state (unit-hydrograph contents and, with ``snow=True``, the
per-node snow parameters and stores included), and a finite-difference check (``gradcheck``)."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.runoff import GR4J, SACSMA
from gnnhydro.runoff.sensitivity import sensitivity_apply
from tests.runoff.conftest import forcing as make_forcing
from tests.runoff.conftest import params as make_params

MODELS = {"gr4j": GR4J, "sacsma": SACSMA}


def _states(model, params, n: int) -> dict[str, torch.Tensor]:
    """Initial states that are leaves with gradients; GR4J's unit hydrographs non-empty."""
    st = model.init_states(n, dtype=torch.float64, params=params)
    g = torch.Generator().manual_seed(3)
    out = {}
    for k, v in st.items():
        v = v.detach().clone()
        if k.startswith("uh"):
            v = torch.rand(v.shape, generator=g, dtype=torch.float64) * 2.0
        out[k] = v.requires_grad_()
    return out


def _loss(out: dict[str, torch.Tensor], t: int) -> torch.Tensor:
    """Weights every step differently and reads fluxes, stores and final states."""
    w = torch.linspace(0.2, 1.0, t, dtype=torch.float64)
    loss = (out["runoff"] * w).sum() + 0.01 * (out["evapotranspiration"] ** 2).sum()
    loss = loss + 0.001 * out["storage"].sum()
    for k, v in out.items():
        if k.startswith("final_"):
            loss = loss + 0.1 * (v * torch.linspace(0.5, 1.5, v.shape[-1])).sum()
    return loss


def _grads(cls, gradient: str, backend: str, n=4, t=90, nmul=3, snow=False):
    model = cls(nmul, gradient=gradient, backend=backend, snow=snow)
    f = make_forcing(n, t)
    f["temperature"] = f["temperature"] - 2.0  # snow accumulates and melts (with snow=True)
    f = {k: f[k] for k in model.forcing_names}
    p = make_params(model, n, t)
    s = _states(model, p, n)
    out = model(f, p, states=s, return_states=True)
    _loss(out, t).backward()
    return {**{k: v.grad for k, v in p.items()}, **{k: v.grad for k, v in s.items()}}


@pytest.mark.parametrize("snow", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_sensitivity_equals_reverse_mode(name, snow):
    cls = MODELS[name]
    ref = _grads(cls, "autograd", "torch", snow=snow)
    for backend in ("numba", "torch"):
        got = _grads(cls, "sensitivity", backend, snow=snow)
        assert set(got) == set(ref)
        for k in ref:
            assert got[k] is not None, k
            scale = ref[k].abs().max().clamp(min=1e-12)
            err = ((got[k] - ref[k]).abs() / scale).max().item()
            assert err < 1e-6, f"{name} {backend} {k}: relative error {err:.2e}"
    # the numba adjoint agrees as well (both reverse modes against the sensitivities)
    fused = _grads(cls, "autograd", "numba", snow=snow)
    for k in ref:
        torch.testing.assert_close(fused[k], ref[k], rtol=1e-8, atol=1e-10)


def test_gr4j_sensitivity_gradcheck():
    """Finite differences of the sensitivity path (x1–x4 and the stores)."""
    model = GR4J(2, gradient="sensitivity", backend="numba")
    n, t = 2, 25
    f = make_forcing(n, t)
    f = {k: f[k] for k in model.forcing_names}
    p = make_params(model, n, t, seed=5)
    names = sorted(p)

    def fn(*values):
        params = dict(zip(names, values, strict=True))
        out = model(f, params, return_states=True)
        return out["runoff"], out["final_routing_store"]

    assert torch.autograd.gradcheck(fn, tuple(p[k] for k in names), eps=1e-6, atol=1e-6)


def test_sensitivity_rejects_dynamic_parameters():
    with pytest.raises(ValueError, match="static parameters only"):
        GR4J(1, gradient="sensitivity", dynamic=("x1",))
    model = GR4J(1, gradient="sensitivity", backend="torch")
    with pytest.raises(ValueError, match=r"static parameters only; \['x1'\] vary in time"):
        sensitivity_apply(
            model.stepper,
            lambda *a: {},
            {"precipitation": torch.zeros(1, 3), "pet": torch.zeros(1, 3)},
            {"x1": torch.ones(1, 3, 1)},
            {},
        )


def test_unknown_gradient_mode_is_named():
    with pytest.raises(ValueError, match="gradient must be one of"):
        SACSMA(1, gradient="adjoint")
