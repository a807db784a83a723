"""River networks as PyTorch Geometric graphs: :class:`RiverGraph`, builders, validation,
topology and stage plans, and catchment interpolation."""

from gnnhydro.graph.errors import (
    CycleError,
    DuplicateIdError,
    EmptyNetworkError,
    InvalidAttributeError,
    NetworkError,
    SelfLoopError,
    SplitFractionError,
    UnknownDownstreamError,
    UnknownIdError,
)
from gnnhydro.graph.interpolation import CatchmentInterpolation
from gnnhydro.graph.river_graph import RiverGraph
from gnnhydro.graph.topology import StagePlan

__all__ = [
    "RiverGraph",
    "StagePlan",
    "CatchmentInterpolation",
    "NetworkError",
    "EmptyNetworkError",
    "DuplicateIdError",
    "UnknownDownstreamError",
    "SelfLoopError",
    "CycleError",
    "SplitFractionError",
    "InvalidAttributeError",
    "UnknownIdError",
]
