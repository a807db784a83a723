"""Regionalization parameterizers that use what the training gauges know, and the classical
baselines they are measured against.

``"regional"`` (:class:`RegionalParameterizer`)
    Gauge-informed message passing: node inputs are the static attributes, the training gauges'
    hydrological signatures (:mod:`gnnhydro.datasets.signatures`; at gauge nodes, zero
    elsewhere) and their availability mask; GATv2 attention layers pass them over the regional
    edge set (:func:`gnnhydro.graph.regional.regional_edges`: river edges both ways + ``k``
    nearest centroids, with distance, relation and area ratio as edge attributes), so
    spatial-proximity transfer (Oudin et al. 2008) combined with attribute similarity (Merz &
    Blöschl 2005) is learned end to end.
``"global"`` (:class:`GlobalParameterizer`)
    One learned parameter set for every node (the lumped "regional calibration" baseline).
``"donor"`` (:class:`DonorParameterizer`)
    Classical spatial proximity: every training gauge's basin has its own free parameters,
    learned jointly; a node inside a training basin takes that basin's parameters, any other
    node the inverse-distance (1/d²) weighted parameters of the ``k`` nearest training basins.

These read the gauge context that :func:`gnnhydro.training.gauge_context.attach_gauge_context`
puts on the graph (``gauge_signatures``, ``signature_mask``, ``donor_row``, ``donor_weight``);
it is computed from the training gauges in the training period only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gnnhydro.datasets.signatures import SIGNATURE_NAMES
from gnnhydro.graph.regional import REGIONAL_EDGE_FEATURES, regional_edges
from gnnhydro.nn.parameterizers import (
    GATv2Parameterizer,
    GNNParameterizer,
    register_parameterizer,
)

__all__ = ["RegionalParameterizer", "GlobalParameterizer", "DonorParameterizer"]

#: columns a regional parameterizer adds to the attributes: signatures and availability
GAUGE_INPUT_CHANNELS = len(SIGNATURE_NAMES) + 1
#: with ``proximity``: the signatures transferred from the nearest other training basins and the
#: log10 distance to the nearest (:func:`gnnhydro.training.gauge_context.proximity_signatures`)
PROXIMITY_INPUT_CHANNELS = len(SIGNATURE_NAMES) + 1


def _require(batch: Any, key: str, name: str) -> Tensor:
    value = getattr(batch, key, None)
    if value is None:
        raise ValueError(
            f"parameterizer {name!r} needs the training gauges' context (graph.{key}); "
            "gnnhydro train and predict attach it from the training gauges "
            "(gauge_table.csv of the run)"
        )
    return value


@register_parameterizer("regional")
class RegionalParameterizer(GATv2Parameterizer):
    """Gauge-informed graph parameterizer over river and spatial neighbour edges.

    The layers are :class:`~gnnhydro.nn.parameterizers.GATv2Parameterizer`'s, with the regional
    edge attributes.

    Args (besides :class:`~gnnhydro.nn.parameterizers.GNNParameterizer`'s):
        in_channels: number of static attributes ``F`` (the gauge inputs are added to them).
        river_edges: message passing along the river edges, both ways (default ``True``).
        spatial_edges: message passing from the ``k_neighbours`` nearest catchment centroids
            within ``max_distance_km`` (default 8, 100 km): ``True``, ``False`` or ``"auto"``
            (the default: when the graph has node positions ``pos``).
        signatures: feed the training gauges' signatures and availability (default ``True``;
            ``False`` makes it a pure graph-construction ablation).
        signature_dropout: in training, each gauge's signatures are hidden (mask 0) with this
            probability in every step (default 0.5), so the model learns to predict a basin
            whose own gauge it does not see — the situation of every held-out basin; without
            it the model leans on each training gauge's own signatures and transfers poorly.
        proximity: also feed every node the signatures of the nearest training gauges whose basin
            does not hold it (inverse-squared-distance weighted) and the distance to the nearest
            (default ``False``): classical proximity transfer as an input, the same in training
            and at held-out basins, which the message passing then refines.
        donor_residual: give every training basin a free embedding residual (learned jointly,
            initialised at 0) and add to each node's embedding, before the heads, the residuals
            of its donor basins (default ``False``): what the attributes and signatures miss,
            transferred in space from the gauges around — regression plus interpolation of its
            residuals (Merz & Blöschl 2005). ``"basin"``: a node inside a training basin takes
            that basin's residual, any other node the inverse-squared-distance weighted
            residuals of the nearest training basins (``graph.donor_row`` / ``donor_weight``,
            as ``donor``), so each residual is what its own gauge needs. ``"others"``: every
            node takes those of the nearest training basins that do not hold it
            (``graph.proximity_row`` / ``proximity_weight``, as ``proximity``), as a held-out
            basin does.
        residual_dropout: in training, each basin's residual is hidden (0) with this probability
            in every step (default 0.5), so the rest of the model learns to predict without it.
        num_donors: number of training gauges (rows of the residual table; set by the model
            builder from the run's training gauges), needed with ``donor_residual``.
        heads: attention heads per layer (averaged).

    ``direction`` is fixed (the edge set holds both directions, told apart by the relation
    attribute); river edge attributes (length, slope) are not used.

    Shapes:
        batch.x ``[N, F]``, batch.gauge_signatures ``[N, 8]``, batch.signature_mask ``[N]`` →
        ``{name: [N, m] | [N]}``.
    """

    supports_edge_attr = True
    needs_gauge_context: ClassVar[bool] = True
    #: its spatial edges cross basins: gauge-basin samples would cut them
    crosses_basins: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        specs: Any,
        *,
        river_edges: bool = True,
        spatial_edges: bool | str = "auto",
        k_neighbours: int = 8,
        max_distance_km: float = 100.0,
        signatures: bool = True,
        signature_dropout: float = 0.5,
        proximity: bool = False,
        donor_residual: bool | str = False,
        residual_dropout: float = 0.5,
        num_donors: int | None = None,
        heads: int = 2,
        edge_dim: int | None = None,
        direction: str = "downstream",
        **kwargs: Any,
    ) -> None:
        del edge_dim, direction  # its own edge set and attributes
        if spatial_edges not in (True, False, "auto"):
            raise ValueError(
                f"regional: spatial_edges must be true, false or auto, got {spatial_edges!r}"
            )
        self.river_edges, self.spatial_edges = bool(river_edges), spatial_edges
        self.k_neighbours, self.max_distance_km = int(k_neighbours), float(max_distance_km)
        if not 0.0 <= float(signature_dropout) < 1.0:
            raise ValueError(
                f"regional: signature_dropout must be in [0, 1), got {signature_dropout}"
            )
        self.signatures = bool(signatures)
        self.signature_dropout = float(signature_dropout)
        self.attribute_channels = int(in_channels)
        self.proximity = bool(proximity)
        extra = GAUGE_INPUT_CHANNELS if self.signatures else 0
        extra += PROXIMITY_INPUT_CHANNELS if self.proximity else 0
        super().__init__(
            in_channels + extra,
            specs,
            edge_dim=len(REGIONAL_EDGE_FEATURES),
            direction="downstream",
            heads=int(heads),
            **kwargs,
        )
        if donor_residual not in (False, "basin", "others"):
            raise ValueError(
                f"regional: donor_residual must be false, basin or others, got {donor_residual!r}"
            )
        if not 0.0 <= float(residual_dropout) < 1.0:
            raise ValueError(
                f"regional: residual_dropout must be in [0, 1), got {residual_dropout}"
            )
        self.donor_residual = donor_residual
        self.residual_dropout = float(residual_dropout)
        self.residual_table: nn.Parameter | None = None
        if self.donor_residual:
            if num_donors is None or int(num_donors) < 1:
                raise ValueError(
                    f"regional: donor_residual needs the number of training gauges (num_donors ≥ "
                    f"1), got {num_donors}"
                )
            self.residual_table = nn.Parameter(torch.zeros(int(num_donors), self.hidden_channels))
        self._edges: dict[tuple, tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]] = {}

    def edges_of(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The regional edge set of ``batch`` and its attributes (built once per graph).

        Cached by the graph's content (a batch's graph offsets, river edges and positions,
        compared in full), not by tensor identity: every training step collates new tensors of
        the same windows' graph (a k-nearest-neighbour search of 1200 nodes, ~13 ms, otherwise).
        """
        pos = getattr(batch, "pos", None)
        river = batch.edge_index.detach().cpu()
        where = None if pos is None else pos.detach().cpu()
        ptr = getattr(batch, "ptr", None)  # a batch's graphs: neighbours within each
        key = (
            int(batch.num_nodes),
            None if ptr is None else tuple(int(v) for v in ptr),
            tuple(river.shape),
            None if where is None else tuple(where.shape),
        )
        hit = self._edges.get(key)
        if hit is not None and _same(hit[0], river) and _same(hit[1], where):
            return hit[2]
        if len(self._edges) > 8:
            self._edges.clear()
        cpu = batch if batch.edge_index.device.type == "cpu" else batch.cpu()
        spatial = pos is not None if self.spatial_edges == "auto" else self.spatial_edges
        edges = regional_edges(
            cpu,
            river=self.river_edges,
            spatial=spatial,
            k=self.k_neighbours,
            max_distance_km=self.max_distance_km,
        )
        self._edges[key] = (river.clone(), None if where is None else where.clone(), edges)
        return edges

    def graph_inputs(self, batch: Any, x: Tensor) -> dict[str, Tensor | None]:
        edge_index, edge_attr = self.edges_of(batch)
        if self.signatures:
            signatures = _require(batch, "gauge_signatures", "regional").to(x)
            mask = _require(batch, "signature_mask", "regional").to(x)
            if self.training and self.signature_dropout > 0:  # train as held-out gauges are seen
                keep = (torch.rand(mask.shape, device=x.device) >= self.signature_dropout).to(x)
                signatures, mask = signatures * keep.unsqueeze(-1), mask * keep
            x = torch.cat([x, signatures, mask.unsqueeze(-1)], dim=-1)
        if self.proximity:
            near = _require(batch, "proximity_signatures", "regional").to(x)
            distance = _require(batch, "proximity_distance", "regional").to(x)
            x = torch.cat([x, near, distance.unsqueeze(-1)], dim=-1)
        inputs: dict[str, Tensor | None] = {
            "x": x,
            "edge_index": edge_index.to(x.device),
            "edge_attr": edge_attr.to(x.device),
        }
        if self.donor_residual:
            prefix = "donor" if self.donor_residual == "basin" else "proximity"
            inputs["donor_row"] = _require(batch, f"{prefix}_row", "regional").to(x.device)
            inputs["donor_weight"] = _require(batch, f"{prefix}_weight", "regional").to(x)
        return inputs

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        dynamic_input: Tensor | None = None,
        batch: Tensor | None = None,
        donor_row: Tensor | None = None,
        donor_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Physical parameters by name; with ``donor_residual`` the embedding gets the
        weighted residuals of the rows ``donor_row`` ``[N, k]`` (weights ``[N, k]``)."""
        h = self.embed(x, edge_index, edge_attr, batch)
        if self.residual_table is not None:
            table = self.residual_table
            if self.training and self.residual_dropout > 0:  # hide whole basins' residuals
                keep = torch.rand(table.shape[0], 1, device=table.device) >= self.residual_dropout
                table = table * keep.to(table)
            h = h + _weighted_rows(table, donor_row, donor_weight, "regional")
        return self.apply_heads(h, dynamic_input)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", river_edges={self.river_edges}, spatial_edges={self.spatial_edges}, "
            f"k_neighbours={self.k_neighbours}, max_distance_km={self.max_distance_km:g}, "
            f"signatures={self.signatures}, proximity={self.proximity}, "
            f"donor_residual={self.donor_residual!r}"
        )


def _weighted_rows(values: Tensor, rows: Tensor | None, weight: Tensor | None, name: str) -> Tensor:
    """Each node's weighted mean of per-training-basin ``values`` over its donor ``rows``.

    Shapes:
        values ``[G, ...]``, rows ``[N, k]`` int64 (< G), weight ``[N, k]`` → ``[N, ...]``.
    """
    if rows is None or weight is None:
        raise ValueError(f"parameterizer {name!r} needs donor_row and donor_weight")
    if rows.numel() and int(rows.max()) >= values.shape[0]:
        raise ValueError(
            f"parameterizer {name!r}: donor_row refers to training gauge {int(rows.max())} but "
            f"the model has {values.shape[0]}"
        )
    picked = values[rows]  # [N, k, ...]
    w = weight.to(values).reshape(weight.shape + (1,) * (picked.dim() - 2))
    return (picked * w).sum(dim=1)


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """Whether two cached inputs are equal (both absent counts)."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


class _ConstantEmbedding(GNNParameterizer):
    """Shared base of parameterizers whose embeddings do not come from the attributes."""

    uses_topology = False

    def __init__(self, in_channels: int, specs: Any, **kwargs: Any) -> None:
        kwargs.pop("edge_dim", None)
        kwargs.pop("direction", None)
        kwargs["num_layers"] = 0
        super().__init__(in_channels, specs, **kwargs)

    def init_conv(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        raise NotImplementedError  # no layers


@register_parameterizer("global")
class GlobalParameterizer(_ConstantEmbedding):
    """One learned parameter set for all nodes: a learned embedding ``[hidden]`` through the
    heads (attributes are accepted and ignored).

    Shapes:
        x ``[N, F]`` → ``{name: [N, m] | [N]}``, equal on every node.
    """

    def __init__(self, in_channels: int, specs: Any, **kwargs: Any) -> None:
        super().__init__(in_channels, specs, **kwargs)
        self.embedding = nn.Parameter(torch.zeros(1, self.hidden_channels))

    def embed(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> Tensor:
        return self.embedding.expand(x.shape[0], -1)


@register_parameterizer("donor")
class DonorParameterizer(_ConstantEmbedding):
    """Spatial-proximity donors: free parameters per training basin, inverse-distance weighted
    to the nodes outside them (``graph.donor_row`` / ``graph.donor_weight``).

    Args (besides the base's):
        num_donors: number of training gauges (basins with their own parameters).
        donors: nearest basins an ungauged node averages (the context's ``k``; default 4).

    Shapes:
        batch.donor_row ``[N, k]`` int64 (rows of the training gauges), batch.donor_weight
        ``[N, k]`` (rows sum to 1) → ``{name: [N, m] | [N]}``.
    """

    needs_gauge_context: ClassVar[bool] = True

    def __init__(
        self, in_channels: int, specs: Any, *, num_donors: int, donors: int = 4, **kwargs: Any
    ) -> None:
        if kwargs.get("dynamic"):
            raise ValueError(
                "parameterizer 'donor' has no time-varying parameters (model.runoff.dynamic)"
            )
        if int(num_donors) < 1:
            raise ValueError(
                f"parameterizer 'donor' needs at least one training gauge, got {num_donors}"
            )
        super().__init__(in_channels, specs, **kwargs)
        self.num_donors, self.donors = int(num_donors), int(donors)
        self.embedding = nn.Parameter(torch.zeros(self.num_donors, self.hidden_channels))

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        dynamic_input: Tensor | None = None,
        batch: Tensor | None = None,
        donor_row: Tensor | None = None,
        donor_weight: Tensor | None = None,
    ) -> dict[str, Tensor]:
        basin_params = self.apply_heads(self.embedding)
        return {  # [G, m] | [G] → [N, m] | [N]
            name: _weighted_rows(value, donor_row, donor_weight, "donor")
            for name, value in basin_params.items()
        }

    def graph_inputs(self, batch: Any, x: Tensor) -> dict[str, Tensor | None]:
        return {
            "x": x,
            "donor_row": _require(batch, "donor_row", "donor").to(x.device),
            "donor_weight": _require(batch, "donor_weight", "donor").to(x.device),
        }
