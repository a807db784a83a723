"""LSTM runoff model: a data-driven alternative behind the runoff-model interface (as DiffHydro).

Forcing variables per node are stacked into ``[N, T, F]``, standardised with fixed (or fitted)
means/scales, passed through an ``nn.LSTM`` and a linear head; ``softplus`` keeps runoff ≥ 0.
It has no physical parameters (``param_spec`` is empty: pass ``params={}``) and no water
balance (its weights are trained, not conserved).

Reference: Kratzert et al. (2019), HESS 23, 5089–5110.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gnnhydro.runoff.base import RunoffModel, register_runoff_model

__all__ = ["LSTMRunoff"]


@register_runoff_model("lstm")
class LSTMRunoff(RunoffModel):
    """LSTM mapping forcing to runoff (mm/step).

    Args:
        forcing_names: forcing variables used as inputs.
        hidden_size: LSTM hidden units.
        num_layers: stacked LSTM layers.
        dropout: dropout between layers.
        input_mean, input_std: per-variable standardisation (defaults 0 and 1).

    Shapes:
        forcing ``[N, T]`` per variable (or ``[B, N, T]``); ``out["runoff"]`` ``[N, T]``.
    """

    state_names = ("h", "c")

    def __init__(
        self,
        forcing_names: Sequence[str] = ("precipitation", "temperature", "pet"),
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(nmul=1)
        self.forcing_names = tuple(forcing_names)
        f = len(self.forcing_names)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(f, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden_size, 1)
        self.register_buffer("input_mean", torch.tensor(input_mean or [0.0] * f))
        self.register_buffer("input_std", torch.tensor(input_std or [1.0] * f))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lstm.reset_parameters()
        self.head.reset_parameters()

    def init_states(self, num_nodes: int, *, dtype=torch.float32, device=None):
        shape = (num_nodes, self.num_layers * self.hidden_size)
        return {s: torch.zeros(shape, dtype=dtype, device=device) for s in self.state_names}

    def _static_shape(self, name: str, num_nodes: int) -> tuple[int, ...]:
        return (num_nodes,)

    def forward(self, forcing, params=None, *, states=None, warmup_steps=0, return_states=False):
        flat, lead = self.check_forcing(forcing)
        if params:
            raise ValueError(f"LSTMRunoff: unknown parameter(s) {sorted(params)}; expects none")
        x = torch.stack([flat[k] for k in self.forcing_names], dim=-1)
        x = (x - self.input_mean.to(x)) / self.input_std.to(x)
        n = x.shape[0]
        hc = None
        if states is not None:
            h = states["h"].reshape(n, self.num_layers, self.hidden_size).transpose(0, 1)
            c = states["c"].reshape(n, self.num_layers, self.hidden_size).transpose(0, 1)
            hc = (h.contiguous().to(x), c.contiguous().to(x))
        self.lstm.to(x.dtype)
        self.head.to(x.dtype)
        y, (h, c) = self.lstm(x, hc)
        q = nn.functional.softplus(self.head(y)).squeeze(-1)
        w = int(warmup_steps)
        out = {"runoff": q[:, w:].reshape(*lead, q.shape[1] - w)}
        if return_states:
            out["final_h"] = h.transpose(0, 1).reshape(*lead, -1)
            out["final_c"] = c.transpose(0, 1).reshape(*lead, -1)
        return out

    def final_states(self, out):
        return {"h": out["final_h"], "c": out["final_c"]}
