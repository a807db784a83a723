"""RiverGraph: a river network as a PyTorch Geometric ``Data`` object.

Edges point upstream→downstream, so PyG's default ``flow="source_to_target"`` with
``aggr="add"`` sums the inflows at a confluence. ``edge_weight`` holds split fractions (1 on a
tree; on a DAG with bifurcations the fractions leaving a node sum to 1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from gnnhydro.graph import topology
from gnnhydro.graph.errors import (
    CycleError,
    DuplicateIdError,
    EmptyNetworkError,
    InvalidAttributeError,
    SelfLoopError,
    SplitFractionError,
    UnknownIdError,
    format_ids,
)

__all__ = ["RiverGraph", "normalize_id"]

#: Downstream values that mean "this node is an outlet" (unless the value is itself a node id).
DEFAULT_OUTLET_MARKERS: tuple = (None, "", -1, 0)

#: Per-node physical attributes validated as finite and non-negative.
_PHYSICAL_ATTRS = ("area_km2", "length_m")


def normalize_id(value: Any) -> Hashable:
    """Canonical form of a node id: numpy/integral floats → ``int``, bytes → ``str``, str stripped."""
    if isinstance(value, bytes):
        value = value.decode().strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
        return float(value)
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class RiverGraph(Data):
    r"""A river network: nodes are reaches (or catchments), edges point downstream.

    Args:
        edge_index: ``[2, E]`` upstream→downstream node indices.
        edge_weight: ``[E]`` split fractions (default: ones).
        node_id: original ids (ints or strings) in node order; default ``0..N-1``.
        num_nodes: number of nodes (inferred from ``node_id`` when given).
        x: ``[N, F]`` static attributes, named by ``x_names``.
        area_km2: ``[N]`` local contributing area [km²].
        length_m: ``[N]`` reach length [m].
        slope: ``[N]`` reach slope [m/m].
        pos: ``[N, 2]`` (lon, lat) [degrees].
        geometry: source geometries (shapely) in node order, kept for export; not a tensor.
        crs: coordinate reference system of ``geometry``/``pos`` (e.g. ``"EPSG:4326"``).
        validate: check the network (always on in the builders).
        **kwargs: further attributes (forcing, observations, ...).

    Shapes:
        edge_index ``[2, E]``; edge_weight ``[E]``; x ``[N, F]``; area_km2/length_m/slope ``[N]``;
        pos ``[N, 2]``.

    Topology (levels, order, outlets, headwaters, stage plans) is computed once on first use and
    cached; it is recomputed if ``edge_index`` is replaced.
    """

    def __init__(
        self,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        node_id: Sequence[Hashable] | None = None,
        num_nodes: int | None = None,
        x: Tensor | None = None,
        x_names: Sequence[str] | None = None,
        area_km2: Tensor | None = None,
        length_m: Tensor | None = None,
        slope: Tensor | None = None,
        pos: Tensor | None = None,
        geometry: Sequence[Any] | None = None,
        crs: str | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        if node_id is not None:
            node_id = [normalize_id(i) for i in node_id]
            if num_nodes is None:
                num_nodes = len(node_id)
        if edge_index is not None and edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1), dtype=torch.get_default_dtype())
        super().__init__(
            x=x,
            edge_index=edge_index,
            edge_weight=edge_weight,
            pos=pos,
            num_nodes=num_nodes,
            **kwargs,
        )
        for key, value in (
            ("node_id", node_id),
            ("x_names", list(x_names) if x_names is not None else None),
            ("area_km2", area_km2),
            ("length_m", length_m),
            ("slope", slope),
            ("geometry", list(geometry) if geometry is not None else None),
            ("crs", crs),
        ):
            if value is not None:
                setattr(self, key, value)
        if edge_index is not None and node_id is None and num_nodes is not None:
            self.node_id = list(range(num_nodes))
        if validate and edge_index is not None:
            self.validate()

    # ------------------------------------------------------------------ batching
    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key in ("cut_edges",):
            return self.edge_index.size(1)
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key in ("time", "time_index"):
            return None  # time-like metadata: stacked, never concatenated along nodes
        return super().__cat_dim__(key, value, *args, **kwargs)

    # ------------------------------------------------------------------ validation
    def validate(self) -> RiverGraph:
        """Check the network; raise a ``ValueError`` subclass naming the offending ids."""
        n = self.num_nodes
        ids = self.node_id
        if not n:
            raise EmptyNetworkError("river network is empty: it has no nodes")
        if len(ids) != n:
            raise ValueError(f"node_id has {len(ids)} entries but the graph has {n} nodes")
        seen: dict = {}
        dups = [i for i in ids if i in seen or seen.setdefault(i, True) is None]
        if dups:
            raise DuplicateIdError(f"duplicate node ids: {format_ids(sorted(set(dups), key=str))}")
        ei = self.edge_index
        if ei.dim() != 2 or ei.size(0) != 2:
            raise ValueError(f"edge_index must be [2, E], got {list(ei.shape)}")
        if ei.numel() and (ei.min() < 0 or ei.max() >= n):
            raise ValueError(f"edge_index refers to nodes outside 0..{n - 1}")
        loops = (ei[0] == ei[1]).nonzero().flatten()
        if loops.numel():
            raise SelfLoopError(
                f"self loops (a reach draining into itself) at ids {format_ids([ids[int(i)] for i in ei[0, loops]])}"
            )
        cycle = topology.find_cycle(ei, n)
        if cycle is not None:
            shown = [ids[i] for i in cycle[:20]] + (
                [ids[cycle[0]]] if len(cycle) <= 20 else ["..."]
            )
            raise CycleError(
                f"network has a cycle through {len(cycle)} node(s): {' -> '.join(map(str, shown))}"
            )
        self._validate_split_fractions()
        for name in _PHYSICAL_ATTRS:
            value = getattr(self, name, None)
            if value is None:
                continue
            value = torch.as_tensor(value)
            if value.shape[0] != n:
                raise InvalidAttributeError(f"{name} has {value.shape[0]} values for {n} nodes")
            bad = (torch.isnan(value) | (value < 0)).nonzero().flatten()
            if bad.numel():
                raise InvalidAttributeError(
                    f"{name} is negative or NaN at ids {format_ids([ids[int(i)] for i in bad])}"
                )
        return self

    def _validate_split_fractions(self) -> None:
        w = self.edge_weight
        ids = self.node_id
        if w is None or w.numel() == 0:
            return
        if w.shape != (self.edge_index.size(1),):
            raise SplitFractionError(
                f"edge_weight must have one split fraction per edge, got shape {list(w.shape)}"
            )
        src = self.edge_index[0]
        bad = (torch.isnan(w) | (w < 0)).nonzero().flatten()
        if bad.numel():
            raise SplitFractionError(
                f"split fractions negative or NaN on edges leaving ids "
                f"{format_ids([ids[int(src[i])] for i in bad])}"
            )
        total = torch.zeros(self.num_nodes, dtype=torch.float64).index_add_(0, src, w.double())
        has_out = torch.zeros(self.num_nodes, dtype=torch.bool)
        has_out[src] = True
        wrong = (has_out & ((total - 1.0).abs() > 1e-5)).nonzero().flatten()
        if wrong.numel():
            detail = ", ".join(f"{ids[int(i)]!r}: {float(total[i]):g}" for i in wrong[:20])
            raise SplitFractionError(
                f"split fractions leaving a node must sum to 1; ids {format_ids([ids[int(i)] for i in wrong])} "
                f"sum to {{{detail}}}"
            )

    # ------------------------------------------------------------------ ids
    def _id_lookup(self) -> dict:
        ids = self.node_id
        cache = self.__dict__.get("_id_cache")
        if cache is None or cache[0] is not ids or cache[1] != len(ids):
            cache = (ids, len(ids), {i: k for k, i in enumerate(ids)})
            self.__dict__["_id_cache"] = cache
        return cache[2]

    def index_of(self, ids: Iterable[Hashable] | Hashable) -> Tensor:
        """Node indices of the given ids; raises :class:`UnknownIdError` naming unknown ones.

        Shapes:
            result ``[len(ids)]`` int64 (a 0-d tensor for a single id).
        """
        lookup = self._id_lookup()
        single = isinstance(ids, (str, bytes, Integral)) or not isinstance(ids, Iterable)
        items = [normalize_id(ids)] if single else [normalize_id(i) for i in ids]
        missing = [i for i in items if i not in lookup]
        if missing:
            raise UnknownIdError(f"ids not in the network: {format_ids(missing)}")
        out = torch.tensor([lookup[i] for i in items], dtype=torch.long)
        return out[0] if single else out

    def has_id(self, node_id: Hashable) -> bool:
        return normalize_id(node_id) in self._id_lookup()

    # ------------------------------------------------------------------ topology (cached)
    def _topo(self) -> dict:
        ei = self.edge_index
        key = (id(ei), ei.data_ptr(), ei._version, tuple(ei.shape), self.num_nodes)
        cache = self.__dict__.get("_topo_cache")
        if cache is None or cache["key"] != key:
            cache = {"key": key}
            self.__dict__["_topo_cache"] = cache
        return cache

    def _cached(self, name: str, fn):
        cache = self._topo()
        if name not in cache:
            cache[name] = fn()
        return cache[name]

    @property
    def topo_level(self) -> Tensor:
        """``[N]`` topological level: 0 at headwaters, else 1 + max level upstream."""
        return self._cached(
            "level", lambda: topology.topological_levels(self.edge_index, self.num_nodes)
        )

    @property
    def topo_order(self) -> Tensor:
        """``[N]`` node indices sorted by topological level (stable: upstream before downstream)."""
        return self._cached("order", lambda: torch.argsort(self.topo_level, stable=True))

    @property
    def num_levels(self) -> int:
        return int(self.topo_level.max().item()) + 1

    @property
    def in_degree(self) -> Tensor:
        return self._cached(
            "indeg", lambda: torch.bincount(self.edge_index[1], minlength=self.num_nodes)
        )

    @property
    def out_degree(self) -> Tensor:
        return self._cached(
            "outdeg", lambda: torch.bincount(self.edge_index[0], minlength=self.num_nodes)
        )

    @property
    def outlets(self) -> Tensor:
        """Indices of nodes with no downstream edge."""
        return self._cached("outlets", lambda: (self.out_degree == 0).nonzero().flatten())

    @property
    def headwaters(self) -> Tensor:
        """Indices of nodes with no upstream edge."""
        return self._cached("headwaters", lambda: (self.in_degree == 0).nonzero().flatten())

    def accumulate(self, values: Tensor) -> Tensor:
        """Total upstream accumulation (including the node itself), weighted by split fractions.

        A differentiable message-passing sweep (see :func:`topology.accumulate`).

        Shapes:
            values ``[N]`` or ``[N, F]`` → same shape.
        """
        if values.shape[0] != self.num_nodes:
            raise ValueError(
                f"accumulate: values have {values.shape[0]} rows, graph has {self.num_nodes} nodes"
            )
        w = self.edge_weight.to(values.dtype) if self.edge_weight is not None else None
        return topology.accumulate(values, self.edge_index, w, self.topo_level)

    @property
    def upstream_area_km2(self) -> Tensor:
        """``[N]`` total upstream contributing area including the local one [km²]."""
        if getattr(self, "area_km2", None) is None:
            raise ValueError("upstream_area_km2 needs area_km2 (local contributing area)")
        return self._cached(
            "upstream_area", lambda: self.accumulate(self.area_km2.double()).to(self.area_km2.dtype)
        )

    def upstream_nodes(self, node: int | Hashable, *, by_id: bool = False) -> Tensor:
        """Indices of the basin upstream of ``node`` (including it); ``by_id`` looks ``node`` up by id."""
        index = int(self.index_of(node)) if by_id else int(node)
        return topology.upstream_nodes(self.edge_index, self.num_nodes, index)

    def stage_plan(
        self, max_nodes: int | None = None, max_paths: int | None = None
    ) -> topology.StagePlan:
        """A cached :class:`~gnnhydro.graph.topology.StagePlan` within the given budgets."""
        return self._cached(
            ("stage_plan", max_nodes, max_paths),
            lambda: topology.stage_plan(
                self.edge_index,
                self.num_nodes,
                self.topo_level,
                edge_weight=self.edge_weight,
                max_nodes=max_nodes,
                max_paths=max_paths,
            ),
        )

    def subgraph_nodes(self, nodes: Tensor) -> RiverGraph:
        """The sub-network induced by ``nodes`` (kept in the given order), with node attributes."""
        nodes = torch.as_tensor(nodes, dtype=torch.long)
        n = self.num_nodes
        mapping = torch.full((n,), -1, dtype=torch.long)
        mapping[nodes] = torch.arange(nodes.numel())
        keep = (mapping[self.edge_index[0]] >= 0) & (mapping[self.edge_index[1]] >= 0)
        edge_index = mapping[self.edge_index[:, keep]]
        kwargs: dict[str, Any] = {}
        for key, value in self._store.items():
            if key in ("edge_index", "edge_weight", "num_nodes", "node_id", "geometry"):
                continue
            if isinstance(value, Tensor) and value.dim() and value.size(0) == n:
                kwargs[key] = value[nodes]
            elif key not in ("node_id", "geometry"):
                kwargs[key] = value
        geometry = getattr(self, "geometry", None)
        out = RiverGraph(
            edge_index=edge_index,
            edge_weight=self.edge_weight[keep] if self.edge_weight is not None else None,
            node_id=[self.node_id[int(i)] for i in nodes],
            geometry=[geometry[int(i)] for i in nodes] if geometry is not None else None,
            validate=False,
            **kwargs,
        )
        return out

    # ------------------------------------------------------------------ builders (see builders.py)
    @classmethod
    def from_edges(cls, *args: Any, **kwargs: Any) -> RiverGraph:
        from gnnhydro.graph.builders import from_edges

        return from_edges(*args, **kwargs)

    @classmethod
    def from_networkx(cls, G: Any, **kwargs: Any) -> RiverGraph:
        from gnnhydro.graph.builders import from_networkx

        return from_networkx(G, **kwargs)

    @classmethod
    def from_dataframe(
        cls,
        df: Any,
        id_col: str = "id",
        downstream_col: str = "downstream_id",
        area_col: str | None = None,
        **kwargs: Any,
    ) -> RiverGraph:
        from gnnhydro.graph.builders import from_dataframe

        return from_dataframe(
            df, id_col=id_col, downstream_col=downstream_col, area_col=area_col, **kwargs
        )

    @classmethod
    def from_rapid(cls, path: Any, **kwargs: Any) -> RiverGraph:
        from gnnhydro.graph.builders import from_rapid

        return from_rapid(path, **kwargs)

    @classmethod
    def from_routelink(cls, path: Any, **kwargs: Any) -> RiverGraph:
        from gnnhydro.graph.builders import from_routelink

        return from_routelink(path, **kwargs)

    @classmethod
    def from_prms(cls, path: Any, **kwargs: Any) -> RiverGraph:
        from gnnhydro.graph.builders import from_prms

        return from_prms(path, **kwargs)

    def to_networkx(self) -> Any:
        from gnnhydro.graph.builders import to_networkx

        return to_networkx(self)

    def to_geodataframe(self, columns: dict[str, Any] | None = None) -> Any:
        from gnnhydro.graph.builders import to_geodataframe

        return to_geodataframe(self, columns=columns)

    def to_dataframe(self) -> Any:
        """A pandas table with ``id``, ``downstream_id`` (first downstream, None at outlets) and the
        per-node attributes."""
        gdf = self.to_geodataframe()
        return gdf.drop(columns="geometry")
