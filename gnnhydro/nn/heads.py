"""Bounded parameter heads: node embeddings → physical parameters by NAME.

A :class:`ParameterHeads` module turns node embeddings ``h`` ``[N, C]`` (and, for time-varying
parameters, a per-node dynamic input sequence ``[N, T, Fd]``) into a dict of physical parameters
keyed by the names of a ``dict[str, ParamSpec]``. Every value is mapped into its physical range by
:func:`gnnhydro.spec.to_bounds` (``low + sigmoid(raw)·(high − low)``); nothing here re-implements
that scaling, and nothing is looked up by column position.

Output shapes per name (``m = nmul``):

* static, ``nmul = m``: ``[N, m]`` (``m`` parallel components, e.g. HBV's ``nmul``);
* static, ``nmul = None``: ``[N]`` (one scalar per reach, e.g. routing parameters);
* dynamic, ``nmul = m``: ``[N, T, m]``; dynamic, ``nmul = None``: ``[N, T]``.

Dynamic parameters come from a small causal temporal encoder (:class:`TemporalEncoder`, an LSTM
or a causal 1-D convolution) over the dynamic input (e.g. normalised forcing); its features at
step ``t`` depend only on inputs up to ``t``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnhydro.spec import ParamSpec, from_bounds, to_bounds

__all__ = ["ParameterHeads", "TemporalEncoder"]

#: position inside the bounds below/above which the initial bias is clipped (keeps the sigmoid
#: away from saturation when a default sits on a bound).
_INIT_MARGIN = 0.02


class TemporalEncoder(nn.Module):
    """Causal per-node encoder of a dynamic input sequence.

    ``kind="lstm"``: a single-layer LSTM run over time for every node independently.
    ``kind="conv"``: two causal 1-D convolutions (left-padded by ``kernel_size − 1``) with a
    ReLU between them; the receptive field is ``2·(kernel_size − 1) + 1`` steps.

    Args:
        in_channels: number of dynamic input features ``Fd``.
        hidden_channels: number of output features ``H`` per step (default ``32``).
        kind: ``"lstm"`` (default) or ``"conv"``.
        kernel_size: temporal kernel size of ``"conv"`` (default ``7``).

    Shapes:
        input ``[N, T, Fd]`` → output ``[N, T, H]``.
    """

    def __init__(
        self, in_channels: int, hidden_channels: int = 32, kind: str = "lstm", kernel_size: int = 7
    ) -> None:
        super().__init__()
        if kind not in ("lstm", "conv"):
            raise ValueError(f"TemporalEncoder: kind must be 'lstm' or 'conv', got {kind!r}")
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"TemporalEncoder: in_channels ({in_channels}) and hidden_channels "
                f"({hidden_channels}) must be ≥ 1"
            )
        self.in_channels = int(in_channels)
        self.hidden_channels = int(hidden_channels)
        self.kind = kind
        self.kernel_size = int(kernel_size)
        if kind == "lstm":
            self.lstm = nn.LSTM(in_channels, hidden_channels, batch_first=True)
        else:
            if self.kernel_size < 1:
                raise ValueError(f"TemporalEncoder: kernel_size must be ≥ 1, got {kernel_size}")
            self.conv1 = nn.Conv1d(in_channels, hidden_channels, self.kernel_size)
            self.conv2 = nn.Conv1d(hidden_channels, hidden_channels, self.kernel_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def forward(self, dynamic_input: Tensor) -> Tensor:
        if dynamic_input.dim() != 3 or dynamic_input.shape[-1] != self.in_channels:
            raise ValueError(
                f"TemporalEncoder: dynamic_input must be [N, T, {self.in_channels}], got "
                f"{list(dynamic_input.shape)}"
            )
        if self.kind == "lstm":
            out, _ = self.lstm(dynamic_input)
            return out
        pad = self.kernel_size - 1
        z = dynamic_input.transpose(1, 2)  # [N, Fd, T]
        z = F.relu(self.conv1(F.pad(z, (pad, 0))))
        z = self.conv2(F.pad(z, (pad, 0)))
        return z.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, kind={self.kind!r}"


class ParameterHeads(nn.Module):
    r"""Linear heads mapping node embeddings to bounded physical parameters, keyed by name.

    For each static parameter ``p`` with spec ``s_p``:

    .. math::
        \theta_p = \mathrm{to\_bounds}(W_p h + b_p) = s_p.\mathrm{low}
            + \sigma(W_p h + b_p)\,(s_p.\mathrm{high} - s_p.\mathrm{low}),

    and for each dynamic parameter, with temporal features :math:`z_t` of the dynamic input,

    .. math::
        \theta_{p,t} = \mathrm{to\_bounds}(W_p h + U_p z_t + b_p).

    The biases start at :func:`gnnhydro.spec.from_bounds` of each spec's ``default`` (clipped to
    2 %–98 % of the range), so an untrained model predicts roughly the defaults.

    Args:
        in_channels: embedding width ``C``.
        specs: ``{name: ParamSpec}`` of the parameters to produce (order kept in the output).
        nmul: components per parameter ``m`` (``[N, m]`` outputs) or ``None`` for per-node
            scalars (``[N]`` outputs). Default ``1``.
        dynamic: names of time-varying parameters (each must have ``spec.dynamic=True``);
            ``None`` or empty: all static.
        dynamic_channels: number of dynamic input features ``Fd`` (required when ``dynamic``).
        temporal: temporal encoder kind, ``"lstm"`` (default) or ``"conv"``.
        temporal_hidden: temporal feature width ``H`` (default ``32``).
        kernel_size: kernel size of the ``"conv"`` encoder (default ``7``).

    Shapes:
        h ``[N, C]``; dynamic_input ``[N, T, Fd]`` (only when there are dynamic parameters) →
        ``{name: [N, m] | [N] (static), [N, T, m] | [N, T] (dynamic)}`` in each spec's units.
    """

    def __init__(
        self,
        in_channels: int,
        specs: Mapping[str, ParamSpec],
        nmul: int | None = 1,
        dynamic: Iterable[str] | None = None,
        *,
        dynamic_channels: int | None = None,
        temporal: str = "lstm",
        temporal_hidden: int = 32,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        if not specs:
            raise ValueError("ParameterHeads: specs is empty")
        for key, spec in specs.items():
            if not isinstance(spec, ParamSpec):
                raise ValueError(
                    f"ParameterHeads: specs[{key!r}] must be a ParamSpec, got {type(spec).__name__}"
                )
            if key != spec.name:
                raise ValueError(
                    f"ParameterHeads: specs key {key!r} differs from its ParamSpec name "
                    f"{spec.name!r}"
                )
        if nmul is not None and int(nmul) < 1:
            raise ValueError(f"ParameterHeads: nmul must be ≥ 1 or None, got {nmul}")
        dyn = set(dynamic or ())
        unknown = sorted(dyn - set(specs))
        if unknown:
            raise ValueError(f"ParameterHeads: dynamic parameter(s) {unknown} not in {list(specs)}")
        not_allowed = sorted(n for n in dyn if not specs[n].dynamic)
        if not_allowed:
            raise ValueError(
                f"ParameterHeads: parameter(s) {not_allowed} are declared static "
                f"(ParamSpec.dynamic=False) and cannot be time-varying"
            )
        if dyn and dynamic_channels is None:
            raise ValueError(
                f"ParameterHeads: dynamic parameter(s) {sorted(dyn)} need dynamic_channels "
                "(the number of dynamic input features)"
            )
        self.in_channels = int(in_channels)
        self.specs: dict[str, ParamSpec] = dict(specs)
        self.nmul = None if nmul is None else int(nmul)
        self.width = 1 if nmul is None else int(nmul)
        self.static_names: tuple[str, ...] = tuple(n for n in specs if n not in dyn)
        self.dynamic_names: tuple[str, ...] = tuple(n for n in specs if n in dyn)
        w = self.width
        self.static_lin = (
            nn.Linear(in_channels, w * len(self.static_names)) if self.static_names else None
        )
        if self.dynamic_names:
            assert dynamic_channels is not None
            self.temporal = TemporalEncoder(
                dynamic_channels, temporal_hidden, temporal, kernel_size
            )
            self.dynamic_lin = nn.Linear(in_channels, w * len(self.dynamic_names))
            self.dynamic_time_lin = nn.Linear(temporal_hidden, w * len(self.dynamic_names), False)
        else:
            self.temporal = None
            self.dynamic_lin = None
            self.dynamic_time_lin = None
        self.reset_parameters()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def _default_bias(self, names: tuple[str, ...]) -> Tensor:
        init = []
        for n in names:
            logit = from_bounds(torch.tensor(self.specs[n].default), self.specs[n], _INIT_MARGIN)
            init.append(logit.expand(self.width))
        return torch.cat(init)

    def reset_parameters(self) -> None:
        """Re-initialise weights; biases start at each parameter's default (see class docs)."""
        with torch.no_grad():
            if self.static_lin is not None:
                self.static_lin.reset_parameters()
                self.static_lin.bias.copy_(self._default_bias(self.static_names))
            if self.dynamic_lin is not None:
                self.temporal.reset_parameters()
                self.dynamic_lin.reset_parameters()
                self.dynamic_time_lin.reset_parameters()
                self.dynamic_lin.bias.copy_(self._default_bias(self.dynamic_names))

    def _split(self, raw: Tensor, names: tuple[str, ...], out: dict[str, Tensor]) -> None:
        # raw [..., len(names)·w]; each name owns a contiguous block of w columns.
        for i, n in enumerate(names):
            value = to_bounds(raw[..., i * self.width : (i + 1) * self.width], self.specs[n])
            out[n] = value.squeeze(-1) if self.nmul is None else value

    def forward(self, h: Tensor, dynamic_input: Tensor | None = None) -> dict[str, Tensor]:
        if h.dim() != 2 or h.shape[1] != self.in_channels:
            raise ValueError(
                f"ParameterHeads: h must be [N, {self.in_channels}], got {list(h.shape)}"
            )
        raw_out: dict[str, Tensor] = {}
        if self.static_lin is not None:
            self._split(self.static_lin(h), self.static_names, raw_out)
        if self.dynamic_lin is not None:
            if dynamic_input is None:
                raise ValueError(
                    f"ParameterHeads: dynamic parameter(s) {list(self.dynamic_names)} need "
                    "dynamic_input [N, T, Fd]"
                )
            if dynamic_input.dim() != 3 or dynamic_input.shape[0] != h.shape[0]:
                raise ValueError(
                    f"ParameterHeads: dynamic_input must be [N={h.shape[0]}, T, Fd], got "
                    f"{list(dynamic_input.shape)}"
                )
            z = self.temporal(dynamic_input)  # [N, T, H]
            raw = self.dynamic_lin(h).unsqueeze(1) + self.dynamic_time_lin(z)  # [N, T, D·w]
            self._split(raw, self.dynamic_names, raw_out)
        return {n: raw_out[n] for n in self.specs}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, static={list(self.static_names)}, "
            f"dynamic={list(self.dynamic_names)}, nmul={self.nmul}"
        )
