"""Errors raised when a river network is invalid. All are ``ValueError`` subclasses whose
messages name the offending ids."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "NetworkError",
    "EmptyNetworkError",
    "DuplicateIdError",
    "UnknownDownstreamError",
    "SelfLoopError",
    "CycleError",
    "SplitFractionError",
    "InvalidAttributeError",
    "UnknownIdError",
    "format_ids",
]


def format_ids(ids: Sequence, limit: int = 20) -> str:
    """``[a, b, c, ... (+n more)]`` — a bounded, readable list of ids for error messages."""
    ids = list(ids)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in ids[:limit])
    more = f", ... (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return f"[{shown}{more}]"


class NetworkError(ValueError):
    """Base class: the river network is invalid."""


class EmptyNetworkError(NetworkError):
    """The network has no nodes."""


class DuplicateIdError(NetworkError):
    """The same node id appears more than once."""


class UnknownDownstreamError(NetworkError):
    """A downstream id is not a node of the network."""


class SelfLoopError(NetworkError):
    """A node drains into itself."""


class CycleError(NetworkError):
    """The network contains a cycle (it must be a directed acyclic graph)."""


class SplitFractionError(NetworkError):
    """Split fractions leaving a node do not sum to 1 (or are negative/NaN)."""


class InvalidAttributeError(NetworkError):
    """A physical attribute (area, length, ...) is negative or NaN."""


class UnknownIdError(NetworkError, KeyError):
    """Ids looked up in a network that has no such nodes."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
