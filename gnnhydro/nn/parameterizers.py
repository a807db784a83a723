"""Parameterizers: static attributes (+ river topology) → physical parameters by NAME.

A parameterizer embeds normalised node attributes ``x`` with a stack of graph convolutions over
the river network and maps the embeddings through :class:`~gnnhydro.nn.heads.ParameterHeads` to
bounded physical parameters (via :func:`gnnhydro.spec.to_bounds`).

:class:`GNNParameterizer` is a template base in the style of PyG's ``BasicGNN``: the base owns the
input projection, layer stacking, normalisation, activation, dropout, residual connections,
jumping knowledge, message direction and the heads; a subclass only implements
:meth:`GNNParameterizer.init_conv`. Registered names (:func:`build_parameterizer`):
``"sage"``, ``"gatv2"``, ``"gcn"``, ``"gin"``, ``"mlp"``.

**Message direction.** ``edge_index`` is stored upstream → downstream.
``direction="downstream"`` passes messages along the edges as given (a reach hears its upstream
neighbours); ``"upstream"`` flips them (a reach hears its downstream neighbour);
``"both"`` uses two convolutions with separate weights per layer, one per direction, whose outputs
are summed (``combine="sum"``) or concatenated and projected by a linear layer
(``combine="cat"``).

**Parameter groups.** One parameterizer can serve several consumers, e.g. a runoff model with
``nmul`` components and a router with one value per reach::

    p = build_parameterizer(
        "sage", in_channels=F,
        specs={"runoff": (hbv.param_spec, 16), "routing": (irf.param_spec, None)},
    )
    params = p(x, edge_index)        # flat {name: tensor}: "fc" [N, 16], ..., "route_a" [N]
    p.param_groups                   # {"runoff": ("beta", "fc", ...), "routing": ("route_a", ...)}
    p.split_groups(params)["routing"]  # {"route_a": [N], ...}

Names must be unique across groups (the output dict is flat). With a single ``dict[str,
ParamSpec]`` the only group is called ``"params"`` and its ``nmul`` is the ``nmul`` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GCNConv, GINConv, GINEConv, GraphNorm, SAGEConv

from gnnhydro.nn.heads import ParameterHeads
from gnnhydro.registry import Registry
from gnnhydro.spec import ParamSpec

__all__ = [
    "GNNParameterizer",
    "SAGEParameterizer",
    "GATv2Parameterizer",
    "GCNParameterizer",
    "GINParameterizer",
    "MLPParameterizer",
    "DirectionalConv",
    "register_parameterizer",
    "build_parameterizer",
    "get_parameterizer",
    "PARAMETERIZERS",
    "list_parameterizers",
    "normalize_spec_groups",
]

SpecGroups = dict[str, tuple[dict[str, ParamSpec], int | None]]

PARAMETERIZERS: Registry[type[GNNParameterizer]] = Registry("parameterizer")


def register_parameterizer(
    name: str,
) -> Callable[[type[GNNParameterizer]], type[GNNParameterizer]]:
    """Class decorator registering a :class:`GNNParameterizer` subclass under ``name``."""
    return PARAMETERIZERS.register(name)


def list_parameterizers() -> list[str]:
    """Names of the registered parameterizers."""
    return PARAMETERIZERS.names()


def get_parameterizer(name: str) -> type[GNNParameterizer]:
    """The parameterizer class registered as ``name`` (``ValueError`` listing the others)."""
    return PARAMETERIZERS.get(name)


def build_parameterizer(name: str, **kwargs: Any) -> GNNParameterizer:
    """Instantiate the parameterizer registered as ``name`` with ``kwargs``.

    Example: ``build_parameterizer("gatv2", in_channels=8, specs=spec, edge_dim=2)``.
    """
    return get_parameterizer(name)(**kwargs)


def normalize_spec_groups(
    specs: Mapping[str, Any], nmul: int | None = 1, default_group: str = "params"
) -> SpecGroups:
    """Normalise the ``specs`` argument of a parameterizer to ``{group: (specs, nmul)}``.

    Accepted forms:

    * ``{name: ParamSpec}`` → ``{default_group: (specs, nmul)}``;
    * ``{group: (specs, nmul_or_None)}``;
    * ``{group: {name: ParamSpec}}`` (the group uses the ``nmul`` argument).

    Raises a ``ValueError`` on mixed forms or parameter names repeated across groups.
    """
    if not specs:
        raise ValueError("parameterizer: specs is empty")
    values = list(specs.values())
    if all(isinstance(v, ParamSpec) for v in values):
        return {default_group: (dict(specs), nmul)}
    if any(isinstance(v, ParamSpec) for v in values):
        raise ValueError(
            "parameterizer: specs mixes ParamSpec values with groups; give either "
            "{name: ParamSpec} or {group: (specs, nmul)}"
        )
    groups: SpecGroups = {}
    owner: dict[str, str] = {}
    for group, value in specs.items():
        if isinstance(value, Mapping):
            group_specs, group_nmul = value, nmul
        elif isinstance(value, tuple | list) and len(value) == 2:
            group_specs, group_nmul = value
        else:
            raise ValueError(
                f"parameterizer: specs[{group!r}] must be (dict[str, ParamSpec], nmul | None) "
                f"or dict[str, ParamSpec], got {type(value).__name__}"
            )
        if not isinstance(group_specs, Mapping) or not all(
            isinstance(s, ParamSpec) for s in group_specs.values()
        ):
            raise ValueError(f"parameterizer: group {group!r} must map names to ParamSpec")
        for n in group_specs:
            if n in owner:
                raise ValueError(
                    f"parameterizer: parameter {n!r} appears in groups {owner[n]!r} and "
                    f"{group!r}; names must be unique across groups (the output dict is flat)"
                )
            owner[n] = group
        groups[group] = (dict(group_specs), group_nmul)
    return groups


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}

_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,  # per node over channels
    "graph": GraphNorm,  # per graph of a batch (needs `batch`)
}


class DirectionalConv(nn.Module):
    """Apply convolutions along the edges (``"downstream"``), against them (``"upstream"``), or both.

    Args:
        convs: ``{"downstream": conv, "upstream": conv}`` (one or both keys).
        channels: output width of each conv (for ``combine="cat"``).
        combine: ``"sum"`` or ``"cat"`` (concatenate + linear) when both directions are present.
        use_edge_attr: pass ``edge_attr`` to the convs.

    Shapes:
        x ``[N, C_in]``, edge_index ``[2, E]`` (upstream → downstream), edge_attr ``[E, D]`` →
        ``[N, channels]``.
    """

    def __init__(
        self,
        convs: Mapping[str, nn.Module],
        channels: int,
        combine: str = "sum",
        use_edge_attr: bool = False,
    ) -> None:
        super().__init__()
        bad = sorted(set(convs) - {"downstream", "upstream"})
        if bad or not convs:
            raise ValueError(f"DirectionalConv: keys must be 'downstream'/'upstream', got {bad}")
        if combine not in ("sum", "cat"):
            raise ValueError(f"DirectionalConv: combine must be 'sum' or 'cat', got {combine!r}")
        self.convs = nn.ModuleDict(dict(convs))
        self.combine = combine
        self.use_edge_attr = use_edge_attr
        self.lin = (
            nn.Linear(len(convs) * channels, channels)
            if combine == "cat" and len(convs) > 1
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.convs.values():
            conv.reset_parameters()
        if self.lin is not None:
            self.lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        outs = []
        for direction, conv in self.convs.items():
            ei = edge_index if direction == "downstream" else edge_index.flip(0)
            if self.use_edge_attr:
                outs.append(conv(x, ei, edge_attr=edge_attr))
            else:
                outs.append(conv(x, ei))
        if len(outs) == 1:
            return outs[0]
        if self.lin is not None:
            return self.lin(torch.cat(outs, dim=-1))
        return torch.stack(outs).sum(0)


class GNNParameterizer(nn.Module):
    r"""Template base of graph parameterizers (subclasses implement :meth:`init_conv`).

    .. math::
        h^{(0)} = \phi(W_{in} x), \quad
        h^{(l)} = h^{(l-1)} + \mathrm{drop}(\phi(\mathrm{norm}(\mathrm{conv}_l(h^{(l-1)},
        \mathcal{E})))), \quad \theta = \mathrm{heads}(\mathrm{jk}(h^{(0)}, \dots, h^{(L)}))

    (without ``residual`` the ``h^{(l-1)} +`` is dropped).

    Args:
        in_channels: number of (normalised) static attributes ``F``.
        specs: parameter specs (see :func:`normalize_spec_groups`): ``{name: ParamSpec}`` or
            ``{group: (specs, nmul | None)}``.
        nmul: components per parameter for the single-group form (``None`` → ``[N]`` outputs).
        dynamic: names of time-varying parameters (any group); they need ``dynamic_input``.
        hidden_channels: embedding width (default ``64``).
        num_layers: number of graph convolutions (default ``2``; ``0`` = no message passing).
        dropout: dropout probability after each layer (default ``0``).
        act: activation name (``relu``, ``elu``, ``gelu``, ``silu``, ``tanh``, ``leaky_relu``).
        norm: ``"batch"``, ``"layer"`` (per node), ``"graph"`` (PyG ``GraphNorm``, per graph of a
            batch) or ``None`` (default).
        direction: ``"downstream"`` (default), ``"upstream"`` or ``"both"``.
        combine: how ``"both"`` directions are merged: ``"sum"`` (default) or ``"cat"``.
        edge_dim: number of edge attributes (e.g. length, slope), only for convolutions that
            support them (:attr:`supports_edge_attr`); otherwise a ``ValueError``.
        residual: add each layer's input to its output (default ``True``).
        jk: jumping knowledge: ``None``/``"last"`` (default), ``"cat"`` (concatenate all layers
            + linear) or ``"max"`` (element-wise max over layers).
        dynamic_channels, temporal, temporal_hidden, kernel_size: temporal encoder of the
            dynamic parameters (see :class:`~gnnhydro.nn.heads.ParameterHeads`).
        **conv_kwargs: passed to :meth:`init_conv`.

    Attributes:
        param_groups: ``{group: (names...)}``; :meth:`group_of` gives a name's group.
        specs: flat ``{name: ParamSpec}`` over all groups.

    Shapes:
        x ``[N, F]`` normalised attributes; edge_index ``[2, E]`` upstream → downstream;
        edge_attr ``[E, edge_dim]``; dynamic_input ``[N, T, Fd]``; batch ``[N]`` →
        ``{name: [N, m] | [N] | [N, T, m] | [N, T]}`` in each spec's units.
    """

    registry_name: ClassVar[str] = ""
    #: whether :meth:`init_conv` builds convolutions that consume ``edge_attr``
    supports_edge_attr: ClassVar[bool] = False
    #: whether the model passes messages over edges (``False`` for the MLP ablation)
    uses_topology: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        specs: Mapping[str, Any],
        *,
        nmul: int | None = 1,
        dynamic: Iterable[str] | None = None,
        hidden_channels: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        act: str = "relu",
        norm: str | None = None,
        direction: str = "downstream",
        combine: str = "sum",
        edge_dim: int | None = None,
        residual: bool = True,
        jk: str | None = None,
        dynamic_channels: int | None = None,
        temporal: str = "lstm",
        temporal_hidden: int = 32,
        kernel_size: int = 7,
        **conv_kwargs: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if in_channels < 1 or hidden_channels < 1 or num_layers < 0:
            raise ValueError(
                f"{name}: need in_channels ≥ 1, hidden_channels ≥ 1, num_layers ≥ 0; got "
                f"{in_channels}, {hidden_channels}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        if act not in _ACTIVATIONS:
            raise ValueError(f"{name}: unknown act {act!r}; available {sorted(_ACTIVATIONS)}")
        if norm is not None and norm not in _NORMS:
            raise ValueError(f"{name}: unknown norm {norm!r}; available {sorted(_NORMS)} or None")
        if direction not in ("downstream", "upstream", "both"):
            raise ValueError(
                f"{name}: direction must be 'downstream', 'upstream' or 'both', got {direction!r}"
            )
        if jk not in (None, "last", "cat", "max"):
            raise ValueError(f"{name}: jk must be None, 'last', 'cat' or 'max', got {jk!r}")
        if conv_kwargs and not self.uses_topology:  # no convolution would read them
            raise ValueError(
                f"{name}: unknown option(s) {', '.join(sorted(conv_kwargs))} (a topology-free "
                "parameterizer has no graph convolution to pass them to)"
            )
        if edge_dim is not None and not self.supports_edge_attr:
            raise ValueError(
                f"{name} does not use edge attributes (edge_dim={edge_dim}); use 'gatv2' or "
                "'gin' (GINE) for edge features, or drop edge_dim"
            )
        self.in_channels = int(in_channels)
        self.hidden_channels = int(hidden_channels)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.norm_name = norm
        self.direction = direction if self.uses_topology else "downstream"
        self.edge_dim = edge_dim
        self.residual = bool(residual)
        self.jk_mode = jk or "last"

        groups = normalize_spec_groups(specs, nmul)
        dyn = set(dynamic or ())
        all_names = {n for s, _ in groups.values() for n in s}
        unknown = sorted(dyn - all_names)
        if unknown:
            raise ValueError(f"{name}: dynamic parameter(s) {unknown} not in {sorted(all_names)}")
        self.param_groups: dict[str, tuple[str, ...]] = {
            g: tuple(s) for g, (s, _) in groups.items()
        }
        self.specs: dict[str, ParamSpec] = {
            n: sp for s, _ in groups.values() for n, sp in s.items()
        }
        self._group_of = {n: g for g, names in self.param_groups.items() for n in names}

        self.lin_in = nn.Linear(in_channels, hidden_channels)
        self.act = _ACTIVATIONS[act]()
        directions = ("downstream", "upstream") if self.direction == "both" else (self.direction,)
        self.convs = nn.ModuleList(
            DirectionalConv(
                {
                    d: self.init_conv(hidden_channels, hidden_channels, **conv_kwargs)
                    for d in directions
                },
                hidden_channels,
                combine,
                use_edge_attr=edge_dim is not None,
            )
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(
            _NORMS[norm](hidden_channels) if norm is not None else nn.Identity()
            for _ in range(num_layers)
        )
        self.jk_lin = (
            nn.Linear((num_layers + 1) * hidden_channels, hidden_channels)
            if self.jk_mode == "cat"
            else None
        )
        self.heads = nn.ModuleDict(
            {
                g: ParameterHeads(
                    hidden_channels,
                    s,
                    n,
                    dyn & set(s),
                    dynamic_channels=dynamic_channels,
                    temporal=temporal,
                    temporal_hidden=temporal_hidden,
                    kernel_size=kernel_size,
                )
                for g, (s, n) in groups.items()
            }
        )
        self.reset_parameters()

    # ------------------------------------------------------------------ template
    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        """Build one convolution ``[N, in_channels] → [N, out_channels]`` (subclasses implement).

        The module is called as ``conv(x, edge_index)`` or, when the parameterizer has
        ``edge_dim``, ``conv(x, edge_index, edge_attr=edge_attr)``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def group_of(self, name: str) -> str:
        """Group that parameter ``name`` belongs to (``ValueError`` when unknown)."""
        if name not in self._group_of:
            raise ValueError(f"unknown parameter {name!r}; known: {sorted(self._group_of)}")
        return self._group_of[name]

    def split_groups(self, params: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
        """Split a flat ``{name: tensor}`` (as returned by :meth:`forward`) into groups."""
        return {g: {n: params[n] for n in names} for g, names in self.param_groups.items()}

    def graph_inputs(self, batch: Any, x: Tensor) -> dict[str, Tensor | None]:
        """What :meth:`forward` receives from a graph ``batch`` besides the dynamic input:
        the normalised attributes ``x``, the river ``edge_index`` and, with ``edge_dim``, the
        river edge attributes (length, slope). Subclasses that pass messages on another graph
        or read more of the batch override it."""
        from gnnhydro.graph.regional import river_edge_attributes

        return {
            "x": x,
            "edge_index": batch.edge_index,
            "edge_attr": river_edge_attributes(batch) if self.edge_dim is not None else None,
        }

    def reset_parameters(self) -> None:
        self.lin_in.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for norm in self.norms:
            if hasattr(norm, "reset_parameters"):
                norm.reset_parameters()
        if self.jk_lin is not None:
            self.jk_lin.reset_parameters()
        for head in self.heads.values():
            head.reset_parameters()

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, x: Tensor, edge_index: Tensor | None, edge_attr: Tensor | None) -> None:
        name = type(self).__name__
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name}: x must be [N, {self.in_channels}], got {list(x.shape)}")
        bad = ~torch.isfinite(x)
        if bad.any():
            rows = torch.nonzero(bad.any(dim=1)).flatten()[:10].tolist()
            cols = torch.nonzero(bad.any(dim=0)).flatten().tolist()
            raise ValueError(
                f"{name}: x contains NaN/inf at node indices {rows} (attribute columns {cols}); "
                "fill or impute attributes before the parameterizer"
            )
        if not self.uses_topology or self.num_layers == 0:
            return
        if edge_index is None or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            shape = None if edge_index is None else list(edge_index.shape)
            raise ValueError(f"{name}: edge_index must be [2, E], got {shape}")
        if self.edge_dim is not None:
            if edge_attr is None:
                raise ValueError(
                    f"{name}: built with edge_dim={self.edge_dim}, so edge_attr "
                    f"[E, {self.edge_dim}] is required"
                )
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.unsqueeze(-1)
            if edge_attr.shape != (edge_index.shape[1], self.edge_dim):
                raise ValueError(
                    f"{name}: edge_attr must be [E={edge_index.shape[1]}, {self.edge_dim}], got "
                    f"{list(edge_attr.shape)}"
                )

    def embed(
        self,
        x: Tensor,
        edge_index: Tensor | None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        """Node embeddings ``[N, hidden_channels]`` (everything except the heads).

        ``edge_attr`` is ignored by parameterizers built without ``edge_dim``.
        """
        self._check_inputs(x, edge_index, edge_attr)
        if self.edge_dim is None:
            edge_attr = None
        elif edge_attr is not None and edge_attr.dim() == 1:
            edge_attr = edge_attr.unsqueeze(-1)
        h = self.act(self.lin_in(x))
        xs = [h]
        for conv, norm in zip(self.convs, self.norms):
            out = conv(h, edge_index, edge_attr)
            out = norm(out, batch) if isinstance(norm, GraphNorm) else norm(out)
            out = self.act(out)
            out = nn.functional.dropout(out, p=self.dropout, training=self.training)
            h = h + out if self.residual else out
            xs.append(h)
        if self.jk_mode == "cat":
            return self.jk_lin(torch.cat(xs, dim=-1))
        if self.jk_mode == "max":
            return torch.stack(xs).amax(dim=0)
        return h

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        dynamic_input: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Physical parameters by name (flat dict over all groups, in spec order)."""
        return self.apply_heads(self.embed(x, edge_index, edge_attr, batch), dynamic_input)

    def apply_heads(self, h: Tensor, dynamic_input: Tensor | None = None) -> dict[str, Tensor]:
        """Every group's heads on embeddings ``h`` ``[N, hidden]``: the flat
        ``{name: [N, m] | [N] | [N, T, m] | [N, T]}`` in spec order."""
        out: dict[str, Tensor] = {}
        for head in self.heads.values():
            out.update(head(h, dynamic_input))
        return out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, hidden_channels={self.hidden_channels}, "
            f"num_layers={self.num_layers}, direction={self.direction!r}, "
            f"groups={ {g: len(n) for g, n in self.param_groups.items()} }"
        )


@register_parameterizer("sage")
class SAGEParameterizer(GNNParameterizer):
    """GraphSAGE parameterizer (Hamilton et al., 2017, "Inductive Representation Learning on
    Large Graphs"), PyG ``SAGEConv``. ``conv_kwargs``: ``aggr`` (default ``"mean"``).
    Edge attributes are not supported."""

    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return SAGEConv(in_channels, out_channels, **kwargs)


@register_parameterizer("gatv2")
class GATv2Parameterizer(GNNParameterizer):
    """GATv2 parameterizer (Brody et al., 2022, "How Attentive are Graph Attention Networks?"),
    PyG ``GATv2Conv`` with self-loops; uses edge attributes when ``edge_dim`` is given.
    ``conv_kwargs``: ``heads`` (default ``1``, averaged: ``concat=False``), ``attn_dropout``."""

    supports_edge_attr = True

    def init_conv(
        self, in_channels: int, out_channels: int, heads: int = 1, attn_dropout: float = 0.0
    ) -> nn.Module:
        return GATv2Conv(
            in_channels,
            out_channels,
            heads=heads,
            concat=False,
            dropout=attn_dropout,
            edge_dim=self.edge_dim,
            add_self_loops=True,
        )


@register_parameterizer("gcn")
class GCNParameterizer(GNNParameterizer):
    """GCN parameterizer (Kipf & Welling, 2017), PyG ``GCNConv`` (self-loops, symmetric
    normalisation). Edge attributes are not supported."""

    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return GCNConv(in_channels, out_channels, **kwargs)


@register_parameterizer("gin")
class GINParameterizer(GNNParameterizer):
    """GIN parameterizer (Xu et al., 2019, "How Powerful are Graph Neural Networks?"), PyG
    ``GINConv`` with a 2-layer MLP and trainable ε; with ``edge_dim`` the GINE variant
    (Hu et al., 2020, PyG ``GINEConv``) adds projected edge attributes to the messages."""

    supports_edge_attr = True

    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        mlp = nn.Sequential(
            nn.Linear(in_channels, out_channels),
            nn.ReLU(),
            nn.Linear(out_channels, out_channels),
        )
        if self.edge_dim is not None:
            return GINEConv(mlp, train_eps=True, edge_dim=self.edge_dim, **kwargs)
        return GINConv(mlp, train_eps=True, **kwargs)


class _NodeLinear(nn.Module):
    """A linear layer with a conv's call signature that ignores the graph."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor | None = None, **_: Any) -> Tensor:
        return self.lin(x)


@register_parameterizer("mlp")
class MLPParameterizer(GNNParameterizer):
    """Topology-free ablation: the same stack with per-node linear layers instead of
    convolutions (``edge_index`` and ``edge_attr`` are accepted and ignored; ``direction`` has
    no effect)."""

    uses_topology = False

    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return _NodeLinear(in_channels, out_channels)
