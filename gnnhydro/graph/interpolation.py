"""Catchment interpolation: differentiable weighted mapping from spatial units (HRUs, grid cells,
sub-catchments) to the nodes (reaches) of a river network."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnhydro.graph.errors import InvalidAttributeError, UnknownIdError, format_ids
from gnnhydro.graph.river_graph import RiverGraph, normalize_id

__all__ = ["CatchmentInterpolation"]


class CatchmentInterpolation(nn.Module):
    r"""Sparse, differentiable mapping from ``U`` spatial units to ``N`` reaches.

    Each pair (unit ``u``, reach ``i``) carries an overlap area :math:`a_{iu}` [km²] (the part of
    unit ``u`` draining to reach ``i``). Then

    .. math::
        \text{sum}_i = \sum_u \frac{a_{iu}}{A_u} v_u \qquad
        \text{mean}_i = \frac{\sum_u a_{iu} v_u}{\sum_u a_{iu}}

    where :math:`A_u` is the unit's total area. Use :meth:`mean` for intensive quantities
    (depths in mm, temperatures in °C: an area-weighted average) and :meth:`sum` for extensive
    ones (volumes in m³, discharges in m³/s: split in proportion to area). ``reach_area_km2``
    (:math:`\sum_u a_{iu}`) is the local contributing area of each reach. Reaches that receive
    no unit (e.g. pure channel segments) get 0 from both operators and area 0.

    Args:
        reach_index: ``[P]`` reach index of each pair.
        unit_index: ``[P]`` unit index of each pair.
        overlap_km2: ``[P]`` overlap area of each pair [km²].
        num_reaches: ``N``. num_units: ``U``.

    Shapes:
        values ``[U, ...]`` (any trailing dims, e.g. ``[U, T]``) → ``[N, ...]``; a leading batch
        ``[B, U, T]`` is accepted with ``dim=1``.
    """

    def __init__(
        self,
        reach_index: Tensor,
        unit_index: Tensor,
        overlap_km2: Tensor,
        num_reaches: int,
        num_units: int,
    ) -> None:
        super().__init__()
        overlap_km2 = torch.as_tensor(overlap_km2, dtype=torch.float64)
        bad = (torch.isnan(overlap_km2) | (overlap_km2 < 0)).nonzero().flatten()
        if bad.numel():
            raise InvalidAttributeError(
                f"overlap areas negative or NaN for units {format_ids(unit_index[bad].tolist())}"
            )
        self.num_reaches = int(num_reaches)
        self.num_units = int(num_units)
        self.register_buffer("reach_index", torch.as_tensor(reach_index, dtype=torch.long))
        self.register_buffer("unit_index", torch.as_tensor(unit_index, dtype=torch.long))
        unit_area = torch.zeros(num_units, dtype=torch.float64).index_add_(
            0, self.unit_index, overlap_km2
        )
        reach_area = torch.zeros(num_reaches, dtype=torch.float64).index_add_(
            0, self.reach_index, overlap_km2
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            share_of_unit = torch.where(
                unit_area[self.unit_index] > 0, overlap_km2 / unit_area[self.unit_index], 0.0
            )
            share_of_reach = torch.where(
                reach_area[self.reach_index] > 0, overlap_km2 / reach_area[self.reach_index], 0.0
            )
        self.register_buffer("overlap_km2", overlap_km2.float())
        self.register_buffer("reach_area_km2", reach_area.float())
        self.register_buffer("unit_area_km2", unit_area.float())
        self.register_buffer("_sum_weight", share_of_unit.float())
        self.register_buffer("_mean_weight", share_of_reach.float())

    @classmethod
    def from_mapping(
        cls,
        graph: RiverGraph,
        unit_to_reach: Sequence[Hashable],
        unit_area_km2: Sequence[float] | Tensor,
        *,
        unmapped: Sequence[Hashable] = (0, -1, None, ""),
    ) -> CatchmentInterpolation:
        """From a one-to-one unit→reach table (e.g. PRMS ``hru_segment`` with HRU areas).

        Args:
            graph: the river network.
            unit_to_reach: per unit, the id of the reach it drains to; values in ``unmapped``
                mean the unit drains to no reach (e.g. PRMS ``hru_segment = 0``) and are left out,
                and counted in ``self.unmapped_units``.
            unit_area_km2: per unit area [km²].
        """
        area = torch.as_tensor(np.asarray(unit_area_km2, dtype=np.float64))
        if area.numel() != len(unit_to_reach):
            raise ValueError(f"{len(unit_to_reach)} units but {area.numel()} areas")
        skip = {normalize_id(v) for v in unmapped}
        units, reaches, missing = [], [], []
        for u, r in enumerate(unit_to_reach):
            r = normalize_id(r)
            if r in skip and not graph.has_id(r):
                continue
            if not graph.has_id(r):
                missing.append(r)
                continue
            units.append(u)
            reaches.append(r)
        if missing:
            raise UnknownIdError(
                f"units drain to reach ids not in the network: {format_ids(sorted(set(missing), key=str))}"
            )
        out = cls(
            graph.index_of(reaches) if reaches else torch.zeros(0, dtype=torch.long),
            torch.tensor(units, dtype=torch.long),
            area[units],
            graph.num_nodes,
            len(unit_to_reach),
        )
        out.unmapped_units = sorted(set(range(len(unit_to_reach))) - set(units))
        return out

    @classmethod
    def from_weights(
        cls,
        graph: RiverGraph,
        reach_ids: Sequence[Hashable],
        unit_index: Sequence[int],
        overlap_km2: Sequence[float],
        num_units: int,
    ) -> CatchmentInterpolation:
        """From explicit overlap pairs (e.g. grid-cell/catchment intersection areas)."""
        return cls(
            graph.index_of(list(reach_ids)),
            torch.as_tensor(np.asarray(unit_index, dtype=np.int64)),
            torch.as_tensor(np.asarray(overlap_km2, dtype=np.float64)),
            graph.num_nodes,
            num_units,
        )

    def _apply(self, values: Tensor, weight: Tensor, dim: int) -> Tensor:  # noqa: D401
        if values.size(dim) != self.num_units:
            raise ValueError(
                f"values have {values.size(dim)} units along dim {dim}, expected {self.num_units}"
            )
        moved = values.movedim(dim, 0)
        w = weight.to(moved.dtype).view(-1, *([1] * (moved.dim() - 1)))
        gathered = moved.index_select(0, self.unit_index) * w
        out = torch.zeros(
            (self.num_reaches, *moved.shape[1:]), dtype=moved.dtype, device=moved.device
        )
        out = out.index_add(0, self.reach_index, gathered)
        return out.movedim(0, dim)

    def mean(self, values: Tensor, dim: int = 0) -> Tensor:
        """Area-weighted mean over the units of each reach (intensive variables: mm, °C)."""
        return self._apply(values, self._mean_weight, dim)

    def sum(self, values: Tensor, dim: int = 0) -> Tensor:
        """Area-proportional sum (extensive variables: m³, m³/s)."""
        return self._apply(values, self._sum_weight, dim)

    def forward(self, values: Tensor, dim: int = 0, how: str = "mean") -> Tensor:
        if how == "mean":
            return self.mean(values, dim)
        if how == "sum":
            return self.sum(values, dim)
        raise ValueError(f"how must be 'mean' or 'sum', got {how!r}")

    def extra_repr(self) -> str:
        return (
            f"units={self.num_units}, reaches={self.num_reaches}, pairs={self.unit_index.numel()}"
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()
