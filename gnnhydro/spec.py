"""Parameter specifications: the one place where physical parameters get names, units and bounds.

Every physical operator in gnnhydro (runoff models, impulse-response functions) declares its
parameters as a ``dict[str, ParamSpec]``. Parameterizers look parameters up by NAME in these
specs and map unconstrained network outputs into the physical range with :func:`to_bounds`;
nothing in the package bounds a parameter by column position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ParamSpec", "to_bounds", "from_bounds", "check_in_bounds"]


@dataclass(frozen=True)
class ParamSpec:
    """Name, units, physical bounds and default of one model parameter.

    Args:
        name: lower-case parameter name (``"k"``, ``"fc"``, ``"beta"``).
        units: physical units as a string (``"mm"``, ``"1/day"``, ``"time steps"``, ``"-"``).
        low: lower physical bound (inclusive).
        high: upper physical bound (inclusive).
        default: a physically sensible default inside ``[low, high]``.
        dynamic: whether the parameter may vary in time (``[N, T]`` instead of ``[N]``).
        description: one line saying what the parameter is.
    """

    name: str
    units: str
    low: float
    high: float
    default: float
    dynamic: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.default <= self.high:
            raise ValueError(
                f"ParamSpec {self.name!r}: default {self.default} outside bounds "
                f"[{self.low}, {self.high}] {self.units}"
            )

    @property
    def span(self) -> float:
        return self.high - self.low


def to_bounds(raw: Tensor, spec: ParamSpec) -> Tensor:
    """Map an unconstrained tensor to ``spec``'s physical range: ``low + sigmoid(raw)·(high−low)``.

    Shapes:
        raw: any shape; the result has the same shape, in ``spec.units``.
    """
    return spec.low + torch.sigmoid(raw) * spec.span


def from_bounds(value: Tensor, spec: ParamSpec, eps: float = 1e-6) -> Tensor:
    """Inverse of :func:`to_bounds` (logit of the position inside the bounds), clamped by ``eps``."""
    unit = ((value - spec.low) / spec.span).clamp(eps, 1 - eps)
    return torch.log(unit) - torch.log1p(-unit)


def check_in_bounds(
    params: Mapping[str, Tensor], specs: Mapping[str, ParamSpec], *, owner: str, rtol: float = 1e-6
) -> None:
    """Raise a ``ValueError`` naming any parameter that is missing, unknown, NaN or out of bounds."""
    missing = sorted(set(specs) - set(params))
    if missing:
        raise ValueError(f"{owner}: missing parameter(s) {missing}; expected {sorted(specs)}")
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; expected {sorted(specs)}")
    for name, spec in specs.items():
        value = torch.as_tensor(params[name])
        if torch.isnan(value).any():
            raise ValueError(f"{owner}: parameter {name!r} contains NaN")
        tol = rtol * max(abs(spec.low), abs(spec.high), 1.0)
        lo, hi = value.min().item(), value.max().item()
        if lo < spec.low - tol or hi > spec.high + tol:
            raise ValueError(
                f"{owner}: parameter {name!r} has values in [{lo:g}, {hi:g}] outside its bounds "
                f"[{spec.low:g}, {spec.high:g}] {spec.units}"
            )
