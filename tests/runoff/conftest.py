"""Small synthetic cases shared by the runoff tests."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.runoff import RunoffModel


def forcing(n: int, t: int, *, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prec = torch.rand(n, t, generator=g, dtype=dtype) * 12
    prec = prec * (torch.rand(n, t, generator=g, dtype=dtype) > 0.5)
    temp = torch.randn(n, t, generator=g, dtype=dtype) * 6 + 1
    pet = torch.rand(n, t, generator=g, dtype=dtype) * 3
    return {"precipitation": prec, "temperature": temp, "pet": pet}


def params(
    model: RunoffModel, n: int, t: int, *, seed: int = 1, dynamic=(), dtype=torch.float64
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in model.param_spec.items():
        per_node = model.values_per_node(k) is None  # e.g. the snow parameters with snow=True
        shape = (n, t, model.nmul) if k in dynamic else (n,) if per_node else (n, model.nmul)
        u = 0.05 + 0.9 * torch.rand(*shape, generator=g, dtype=dtype)
        out[k] = (s.low + u * s.span).requires_grad_()
    return out


@pytest.fixture
def make_forcing():
    return forcing


@pytest.fixture
def make_params():
    return params
