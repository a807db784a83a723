"""Learned forcing correction: per-node multipliers on precipitation and PET, optionally seasonal.

Gridded forcing carries biases that no runoff parameter can absorb: gauge undercatch of snow,
orographic under- or over-estimation, a temperature-based PET formula (Hargreaves) whose seasonal
cycle differs from the real one. Calibrated models correct them: HBV has PCORR/SFCF, the National
Hydrologic Model carries calibrated monthly rain, snow and temperature adjustments per HRU. Here
the parameterizer predicts the correction from catchment attributes like any other parameter, so
it is learned at gauged nodes and transferred to ungauged ones.

For every corrected variable ``v`` (``precipitation`` or ``pet``, both in mm/step) the corrected
forcing is

.. math::
    v'_{n,t} = v_{n,t}\\,F_{v,n}\\,\\bigl(1 + A_{v,n}\\cos\\omega d_t + B_{v,n}\\sin\\omega d_t\\bigr),
    \\qquad \\omega = 2\\pi / 365.25\\ \\text{day}^{-1}

with ``d_t`` the day of the year of step ``t`` (0 on 1 January, fractional for sub-daily steps),
``F`` the mean factor (``{v}_factor``) and ``A``, ``B`` the first seasonal harmonic
(``{v}_cos``, ``{v}_sin``; kind ``"seasonal"`` only; kind ``"constant"`` has ``F`` alone). The
bounds keep the multiplier positive (``|A|, |B| ≤ 0.3`` ⇒ ``1 + A cos + B sin ≥ 0.57``) and the
mid-range of every bound is the identity (``F = 1``, ``A = B = 0``), which is where a freshly
initialised sigmoid head starts. Temperature is never scaled (it is not a ratio quantity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gnnhydro.spec import ParamSpec

__all__ = ["ForcingCorrection", "CORRECTABLE", "KINDS", "day_of_year"]

#: Forcing variables that may be corrected, with the bounds of their mean factor (-).
CORRECTABLE: dict[str, tuple[float, float]] = {
    "precipitation": (0.7, 1.3),
    "pet": (0.5, 1.5),
}
KINDS = ("constant", "seasonal")
#: Bound of the seasonal harmonic amplitudes ``A`` and ``B`` (-).
HARMONIC_BOUND = 0.3
DAYS_PER_YEAR = 365.25


def day_of_year(time: Any, *, batch: Tensor | None = None, num_nodes: int | None = None) -> Tensor:
    """Day of the year (0 on 1 January 00:00, fractional) of every time step.

    Args:
        time: ``datetime64`` values ``[T]``, or a list of ``B`` such arrays (a batch of windows
            that cover different dates).
        batch: ``[N]`` window index of every node (``Batch.batch``) when ``time`` is a list.
        num_nodes: number of nodes (only with a list).

    Shapes:
        returns ``[T]`` for one time axis, ``[N, T]`` (float64, days) for a list of them.
    """
    if isinstance(time, (list, tuple)) and len(time) and np.ndim(time[0]) == 1:
        per_window = torch.stack([day_of_year(t) for t in time])  # [B, T]
        if batch is None:
            if len(time) != 1:
                raise ValueError(
                    "day_of_year: a list of time axes needs the node → window index (batch)"
                )
            batch = torch.zeros(int(num_nodes or 1), dtype=torch.long)
        return per_window[batch.cpu()]
    index = pd.DatetimeIndex(np.asarray(time, dtype="datetime64[ns]"))
    start = index.to_period("Y").to_timestamp()
    days = (index - start) / pd.Timedelta(days=1)
    return torch.as_tensor(np.asarray(days, dtype=np.float64))


class ForcingCorrection(nn.Module):
    """Per-node (optionally seasonal) multipliers on forcing variables (module docstring).

    Args:
        variables: ``{forcing name: kind}`` with names from :data:`CORRECTABLE` and kinds
            ``"constant"`` (factor only) or ``"seasonal"`` (factor and first harmonic).

    Shapes:
        forcing values ``[N, T]`` (mm/step); params ``[N]`` each; ``day_of_year`` ``[T]`` or
        ``[N, T]`` (days); the returned forcing has the input shapes.
    """

    def __init__(self, variables: Mapping[str, str]) -> None:
        super().__init__()
        unknown = sorted(set(variables) - set(CORRECTABLE))
        if unknown:
            raise ValueError(
                f"forcing correction: variable(s) {unknown} cannot be corrected; "
                f"choose from {sorted(CORRECTABLE)} (temperature is not a ratio quantity)"
            )
        bad = {v: k for v, k in variables.items() if k not in KINDS}
        if bad:
            raise ValueError(f"forcing correction: kind(s) {bad} not in {KINDS}")
        if not variables:
            raise ValueError("forcing correction: no variable given")
        self.variables = dict(variables)
        spec: dict[str, ParamSpec] = {}
        for var, kind in self.variables.items():
            low, high = CORRECTABLE[var]
            spec[f"{var}_factor"] = ParamSpec(
                f"{var}_factor", "-", low, high, 1.0, False, f"mean multiplier of {var}"
            )
            if kind == "seasonal":
                for part in ("cos", "sin"):
                    spec[f"{var}_{part}"] = ParamSpec(
                        f"{var}_{part}",
                        "-",
                        -HARMONIC_BOUND,
                        HARMONIC_BOUND,
                        0.0,
                        False,
                        f"{part} amplitude of the annual cycle of the {var} multiplier",
                    )
        self.param_spec = spec

    @property
    def seasonal(self) -> bool:
        return any(k == "seasonal" for k in self.variables.values())

    def extra_repr(self) -> str:
        return f"variables={self.variables}"

    def multiplier(
        self, var: str, params: Mapping[str, Tensor], doy: Tensor | None = None
    ) -> Tensor:
        """The multiplier of ``var``: ``[N, 1]`` (constant) or ``[N, T]`` (seasonal)."""
        factor = params[f"{var}_factor"].unsqueeze(-1)
        if self.variables[var] == "constant":
            return factor
        if doy is None:
            raise ValueError(
                f"forcing correction: the seasonal correction of {var!r} needs the dates of the "
                "time steps (the data have no `time`)"
            )
        angle = (2.0 * math.pi / DAYS_PER_YEAR) * doy.to(factor.device, factor.dtype)
        cos, sin = torch.cos(angle), torch.sin(angle)
        a = params[f"{var}_cos"].unsqueeze(-1)
        b = params[f"{var}_sin"].unsqueeze(-1)
        return factor * (1.0 + a * cos + b * sin)

    def forward(
        self,
        forcing: Mapping[str, Tensor],
        params: Mapping[str, Tensor],
        day_of_year: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``forcing`` with the corrected variables replaced (others passed through)."""
        out = dict(forcing)
        for var in self.variables:
            if var not in out:
                raise ValueError(
                    f"forcing correction of {var!r}: the runoff model's forcing has only "
                    f"{sorted(out)}"
                )
            out[var] = out[var] * self.multiplier(var, params, day_of_year)
        return out
