"""Thresholds of conceptual models, exact or smoothed with a documented width ``eps``.

``eps = 0`` gives the exact piecewise functions with PyTorch's gradient conventions
(``clamp`` passes the gradient on the closed interval, ``minimum`` splits it at ties).
``eps > 0`` gives C¹ approximations used for the sensitivity (forward-mode) gradients:

* ``relu_s(x)``: quadratic spline ``0`` (x ≤ 0), ``x²/(2ε)`` (0 < x < ε), ``x − ε/2`` (x ≥ ε);
  width ε in the units of ``x`` (°C for temperature thresholds, mm for storage thresholds).
  It never exceeds ``max(x, 0)``, so a flux taken with it never overdraws its store.
* ``step_s(x)``: smoothstep ``u²(3 − 2u)`` with ``u = clamp(x/ε + ½, 0, 1)`` (rain/snow split
  over ``TT ± ε/2`` °C).
* ``min_s(a, b)`` for ``a, b ≥ 0``: homogeneous smooth minimum ``½(a + b − √((a−b)² + ε²ab))``
  (relative width ε): it stays in ``[0, min(a, b)]`` (a flux never exceeds its store nor its
  potential, and is exactly 0 when either is 0); at ``a = b`` it is ``a(1 − ε/2)``.
* ``clip1_s(x)`` (clamp of a non-negative ratio to ``≤ 1``): ``x − relu_s(x − 1)`` (width ε,
  dimensionless).

Shapes:
    every function is elementwise; inputs broadcast.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["relu_s", "step_s", "min_s", "clip1_s"]


def relu_s(x: Tensor, eps: float) -> Tensor:
    """``max(x, 0)`` (eps = 0) or its quadratic-spline smoothing of width ``eps``."""
    if eps == 0:
        return torch.clamp(x, min=0.0)
    inner = x * x / (2 * eps)
    return torch.where(x <= 0, torch.zeros_like(x), torch.where(x < eps, inner, x - 0.5 * eps))


def step_s(x: Tensor, eps: float) -> Tensor:
    """Heaviside ``x ≥ 0`` (eps = 0, no gradient) or smoothstep over ``[−ε/2, ε/2]``."""
    if eps == 0:
        return (x >= 0).to(x.dtype)
    u = torch.clamp(x / eps + 0.5, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def min_s(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """``min(a, b)`` (eps = 0) or the homogeneous smooth minimum of relative width ``eps``."""
    if eps == 0:
        return torch.minimum(a, b)
    g = (a - b) ** 2 + (eps * eps) * a * b
    pos = g > 0
    r = torch.where(pos, torch.sqrt(torch.where(pos, g, torch.ones_like(g))), torch.zeros_like(g))
    return 0.5 * (a + b - r)


def clip1_s(x: Tensor, eps: float) -> Tensor:
    """``clamp(x, 0, 1)`` (eps = 0) or ``x − relu_s(x − 1)`` for ``x ≥ 0``."""
    if eps == 0:
        return torch.clamp(x, 0.0, 1.0)
    return x - relu_s(x - 1.0, eps)
