"""Fused triton HBV kernels (forward; forward-sensitivity backward) against the torch loop and
the numba sensitivity kernel, on CPU under TRITON_INTERPRET=1 (or on CUDA when available and the
interpreter is switched off)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from gnnhydro.runoff import HBV, HBVOptions  # noqa: E402

triton = pytest.importorskip("triton")

N, T, M = 3, 12, 2
WEIGHTED = ("runoff", "evapotranspiration", "soil_moisture", "recharge", "swe")
AREA_KM2 = (300.0, 1800.0, 2600.0)  # exchange loss, gain, decaying gain


@pytest.fixture
def device() -> torch.device:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("triton needs a GPU or TRITON_INTERPRET=1")
    return torch.device("cuda")


@pytest.mark.parametrize(
    "opts", [{}, {"smoothing": 0.05, "betaet": True, "capillary": True}], ids=["default", "options"]
)
def test_triton_forward_matches_torch_loop(opts, make_forcing, make_params, device):
    f = make_forcing(N, T, seed=7)
    ref = HBV(nmul=M, backend="torch", **opts)
    p = {k: v.detach() for k, v in make_params(ref, N, T, seed=8).items()}
    with torch.no_grad():
        out_r = ref(f, p, return_states=True)
        fd = {k: v.to(device) for k, v in f.items()}
        pd = {k: v.to(device) for k, v in p.items()}
        out_t = HBV(nmul=M, backend="triton", **opts)(fd, pd, return_states=True)
    for k in out_r:
        torch.testing.assert_close(out_t[k].cpu(), out_r[k], rtol=1e-9, atol=1e-9, msg=k)


def _case(model, dtype, seed, make_forcing, make_params):
    """Forcing, parameters and (non-trivial, differentiable) initial states, made in float64."""
    f = {k: v.to(dtype) for k, v in make_forcing(N, T, seed=seed).items()}
    if model.groundwater_exchange:
        f["upstream_area_km2"] = torch.tensor(AREA_KM2, dtype=dtype)
    p = {k: v.detach().to(dtype) for k, v in make_params(model, N, T, seed=seed + 1).items()}
    g = torch.Generator().manual_seed(seed + 2)
    st = {
        k: (v + 5.0 * torch.rand(v.shape, generator=g, dtype=torch.float64).to(dtype))
        for k, v in model.init_states(N, dtype=dtype).items()
    }
    if model.groundwater_exchange:
        # node 0 loses water (AC > A): component 0 less than its lower zone holds, component 1
        # more (both sides of min_s); nodes 1 and 2 gain (A > AC, A > 2500 km²)
        p["rt"] = p["rt"] * 0.02
        p["rt"][0, 1] = 15.0
        p["ac"][0] = 1200.0
        st["lower_zone"] = st["lower_zone"] + 50.0
        st["lower_zone"][0, 1] = 0.5
    return f, p, st


def _grads(model, f, p, st, device, keys=WEIGHTED, finals=True):
    f = {k: v.to(device) for k, v in f.items()}
    p = {k: v.to(device).requires_grad_() for k, v in p.items()}
    st = {k: v.to(device).requires_grad_() for k, v in st.items()}
    out = model(f, p, states=st, return_states=True)
    g = torch.Generator().manual_seed(5)
    loss = sum(
        (out[k] * torch.randn(out[k].shape, generator=g, dtype=torch.float64).to(out[k])).sum()
        for k in keys
    )
    if finals:
        loss = loss + out["final_lower_zone"].sum() + out["final_snowpack"].sum()
    grads = torch.autograd.grad(loss, [*p.values(), *st.values()])
    return {k: v.detach().cpu() for k, v in out.items()}, [x.cpu() for x in grads], [*p, *st]


SENS_OPTIONS = [
    {},
    {"smoothing": 0.0},
    {"betaet": True, "capillary": True},
    {"groundwater_exchange": True, "betaet": True},
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("opts", SENS_OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_triton_sensitivity_matches_numba(opts, dtype, make_forcing, make_params, device):
    """Outputs and ∂loss/∂(θ, s₀) of the triton sensitivity path = the numba sensitivity path
    (same smoothed equations, both computed in float64; loss over fluxes, states and finals)."""
    ref = HBV(nmul=M, gradient="sensitivity", backend="numba", **opts)
    f, p, st = _case(ref, dtype, 11, make_forcing, make_params)
    out_n, g_n, names = _grads(ref, f, p, st, torch.device("cpu"))
    tri = HBV(nmul=M, gradient="sensitivity", backend="triton", **opts)
    out_t, g_t, _ = _grads(tri, f, p, st, device)
    for k in out_n:
        assert out_t[k].dtype == dtype
        torch.testing.assert_close(out_t[k], out_n[k], rtol=1e-6, atol=1e-9, msg=k)
    rel = 1e-5 if dtype == torch.float64 else 1e-4
    for name, a, b in zip(names, g_n, g_t, strict=True):
        assert b.dtype == dtype and b.is_contiguous(), name
        scale = a.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale) < rel, name


def test_triton_sensitivity_matches_autograd_runoff_only(make_forcing, make_params, device):
    """Independent reference: reverse-mode autograd of the per-step torch loop on the same
    smoothed model (float64), with an upstream gradient on the runoff alone."""
    opts = {"smoothing": 0.01, "capillary": True}
    ref = HBV(nmul=M, backend="torch", **opts)
    f, p, st = _case(ref, torch.float64, 21, make_forcing, make_params)
    kw = {"keys": ("runoff",), "finals": False}
    out_r, g_r, names = _grads(ref, f, p, st, torch.device("cpu"), **kw)
    tri = HBV(nmul=M, gradient="sensitivity", backend="triton", **opts)
    out_t, g_t, _ = _grads(tri, f, p, st, device, **kw)
    torch.testing.assert_close(out_t["runoff"], out_r["runoff"], rtol=1e-9, atol=1e-12)
    for name, a, b in zip(names, g_r, g_t, strict=True):
        scale = a.abs().max().clamp_min(1e-12)
        assert ((a - b).abs().max() / scale) < 1e-9, name


def test_triton_sensitivity_native_float32(make_forcing, make_params, device):
    """compute_dtype=None computes in float32: close to the float64 computation, not equal."""
    from gnnhydro.runoff.kernels.hbv_triton import hbv_triton_sensitivity_apply

    model = HBV(nmul=M, gradient="sensitivity")
    f, p, st = _case(model, torch.float32, 31, make_forcing, make_params)
    args = [f[k].to(device) for k in ("precipitation", "temperature", "pet")]
    res = {}
    for cdt in (torch.float64, None):
        pr = {k: v.to(device).requires_grad_() for k, v in p.items()}
        sd = {k: v.to(device) for k, v in st.items()}
        out = hbv_triton_sensitivity_apply(
            *args, pr, sd, options=HBVOptions(eps=0.01), compute_dtype=cdt
        )
        (gk2,) = torch.autograd.grad(out["runoff"].sum(), [pr["k2"]])
        res[cdt] = (out["runoff"].detach().cpu(), gk2.cpu())
    (q64, g64), (q32, g32) = res[torch.float64], res[None]
    assert (q32 - q64).abs().max() < 1e-5 * q64.abs().max()
    assert (g32 - g64).abs().max() < 1e-3 * g64.abs().max()


def test_triton_sensitivity_rejects_unsupported(make_forcing, make_params):
    from gnnhydro.runoff.kernels.hbv_triton import hbv_triton_sensitivity_apply

    model = HBV(nmul=M, dynamic=("k0",))
    f = make_forcing(N, T)
    p = make_params(model, N, T, dynamic=("k0",))
    args = [f[k] for k in ("precipitation", "temperature", "pet")]
    with pytest.raises(ValueError, match=r"dynamic.*\['k0'\]"):
        hbv_triton_sensitivity_apply(
            *args, p, model.init_states(N, dtype=torch.float64), options=model.options
        )
    with pytest.raises(ValueError, match="groundwater_exchange needs area_km2"):
        hbv_triton_sensitivity_apply(
            *args, {k: v for k, v in p.items() if k != "k0"},
            model.init_states(N, dtype=torch.float64),
            options=HBVOptions(groundwater_exchange=True),
        )  # fmt: skip
