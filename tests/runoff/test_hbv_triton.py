"""Fused triton HBV kernel against the torch loop, on CPU under TRITON_INTERPRET=1."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from gnnhydro.runoff import HBV  # noqa: E402

triton = pytest.importorskip("triton")


@pytest.mark.parametrize(
    "opts", [{}, {"smoothing": 0.05, "betaet": True, "capillary": True}], ids=["default", "options"]
)
def test_triton_forward_matches_torch_loop(opts, make_forcing, make_params):
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("triton needs a GPU or TRITON_INTERPRET=1")
    n, t, m = 3, 12, 2
    f = make_forcing(n, t, seed=7)
    ref = HBV(nmul=m, backend="torch", **opts)
    p = {k: v.detach() for k, v in make_params(ref, n, t, seed=8).items()}
    with torch.no_grad():
        out_r = ref(f, p, return_states=True)
        out_t = HBV(nmul=m, backend="triton", **opts)(f, p, return_states=True)
    for k in out_r:
        torch.testing.assert_close(out_t[k], out_r[k], rtol=1e-9, atol=1e-9, msg=k)
