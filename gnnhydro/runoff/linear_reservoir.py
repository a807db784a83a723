"""Linear reservoir runoff model: ``dS/dt = P − k·S``, ``Q = k·S`` (exact per-step integration).

With precipitation ``P`` constant within a step of length 1, the step is integrated exactly:

.. math::
    S_{t+1} = S_t\\,e^{-k} + \\frac{P_t}{k}\\,(1 - e^{-k}), \\qquad Q_t = S_t + P_t - S_{t+1},

so that storage changes and runoff close the water balance exactly; for constant ``P`` from
``S_0 = 0`` the storage is ``S(t) = P/k·(1 − e^{−kt})`` (the analytic test).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnnhydro.runoff.base import RunoffModel, register_runoff_model
from gnnhydro.spec import ParamSpec

__all__ = ["LinearReservoir", "linear_reservoir"]


def linear_reservoir(precip: Tensor, k: Tensor, storage0: Tensor) -> tuple[Tensor, Tensor]:
    """Run the exactly integrated linear reservoir.

    Args:
        precip: inflow, mm/step; k: recession coefficient, 1/step (> 0); storage0: mm.

    Shapes:
        precip ``[N, T]``; k ``[N, m]`` or ``[N, T, m]``; storage0 ``[N, m]``;
        returns (runoff ``[N, m, T]`` mm/step, storage ``[N, m, T]`` mm after each step).
    """
    n_steps = precip.shape[1]
    dyn = k.dim() == 3
    s = storage0
    qs, ss = [], []
    for t in range(n_steps):
        kt = k[:, t] if dyn else k
        a = torch.exp(-kt)
        p = precip[:, t : t + 1]
        s_new = s * a + p / kt * (1 - a)
        qs.append(s + p - s_new)
        ss.append(s_new)
        s = s_new
    return torch.stack(qs, -1), torch.stack(ss, -1)


@register_runoff_model("linear_reservoir")
class LinearReservoir(RunoffModel):
    """Single linear reservoir per component (``nmul`` averaged); no evapotranspiration.

    Args:
        nmul: parallel components.
        dynamic: ``("k",)`` (or ``True``) allows a time-varying ``k`` ``[N, T, m]``.

    Shapes:
        forcing ``precipitation`` ``[N, T]`` mm/step; params ``k`` ``[N, m]`` 1/step;
        ``out["runoff"]`` ``[N, T]`` mm/step.
    """

    forcing_names = ("precipitation",)
    state_names = ("storage",)

    def __init__(self, nmul: int = 1, *, dynamic: bool | Sequence[str] = ()) -> None:
        super().__init__(nmul)
        names = ("k",) if dynamic is True else tuple(dynamic or ())
        unknown = sorted(set(names) - {"k"})
        if unknown:
            raise ValueError(f"LinearReservoir: dynamic parameter(s) {unknown} not in ['k']")
        self.param_spec = {
            "k": ParamSpec("k", "1/step", 1e-3, 1.0, 0.1, "k" in names, "recession coefficient")
        }

    def _run(self, forcing, params, states):
        prec = forcing["precipitation"]
        q, s = linear_reservoir(prec, params["k"], states["storage"])
        return {
            "runoff": q.mean(1),
            "evapotranspiration": torch.zeros_like(prec),
            "storage": s.mean(1),
            "storage_initial": states["storage"].mean(1),
            "final_storage": s[..., -1],
        }
