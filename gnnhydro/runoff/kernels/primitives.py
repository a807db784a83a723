"""Threshold primitives of the numba kernels, each returning its value and derivatives.

``eps = 0``: the exact kinks (the derivative of ``min`` at a tie is ½, ½); ``eps > 0``: the C¹
smoothings of :mod:`gnnhydro.runoff.smooth`, with the same formulas as the torch functions there.
Compiled once (float64) and inlined by LLVM into every kernel (``forceinline``).
"""

from __future__ import annotations

import numpy as np

from gnnhydro._numba import njit

__all__ = ["relu_d", "step_d", "min_d"]

_jit = njit(fastmath=False, error_model="numpy", forceinline=True)


@_jit
def relu_d(x, eps):
    """``max(x, 0)`` (smoothed over ``[0, eps]``) and its derivative."""
    if eps == 0.0:
        if x >= 0.0:
            return x, 1.0
        return 0.0, 0.0
    if x <= 0.0:
        return 0.0, 0.0
    if x < eps:
        return x * x / (2.0 * eps), x / eps
    return x - 0.5 * eps, 1.0


@_jit
def step_d(x, eps):
    """Heaviside ``H(x)`` (a smoothstep over ``[−eps/2, eps/2]``) and its derivative."""
    if eps == 0.0:
        if x >= 0.0:
            return 1.0, 0.0
        return 0.0, 0.0
    u = x / eps + 0.5
    if u <= 0.0:
        return 0.0, 0.0
    if u >= 1.0:
        return 1.0, 0.0
    return u * u * (3.0 - 2.0 * u), 6.0 * u * (1.0 - u) / eps


@_jit
def min_d(a, b, eps):
    """``min(a, b)`` (smoothed) and its derivatives with respect to ``a`` and ``b``."""
    if eps == 0.0:
        if a < b:
            return a, 1.0, 0.0
        if a > b:
            return b, 0.0, 1.0
        return a, 0.5, 0.5
    e2 = eps * eps
    g = (a - b) * (a - b) + e2 * a * b
    if g > 0.0:
        r = np.sqrt(g)
        dra = (2.0 * (a - b) + e2 * b) / (2.0 * r)
        drb = (-2.0 * (a - b) + e2 * a) / (2.0 * r)
        return 0.5 * (a + b - r), 0.5 * (1.0 - dra), 0.5 * (1.0 - drb)
    return 0.5 * (a + b), 0.5, 0.5
