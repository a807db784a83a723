"""Exact, differentiable, staged LTI river routing (impulse-response registry and router)."""

from gnnhydro.routing.irf import (
    IRF_REGISTRY,
    DiffusiveWave,
    ExplicitKernel,
    ImpulseResponse,
    KernelIRF,
    LinearStorage,
    Muskingum,
    MuskingumCunge,
    NashCascade,
    PureLag,
    RecursiveIRF,
    RoutingContext,
    available_irfs,
    get_irf,
    muskingum_coefficients,
    register_irf,
)
from gnnhydro.routing.lti import LTIRouter, RouteOptions, RoutingState, route

__all__ = [
    "route",
    "RouteOptions",
    "LTIRouter",
    "RoutingState",
    "IRF_REGISTRY",
    "register_irf",
    "get_irf",
    "available_irfs",
    "ImpulseResponse",
    "RecursiveIRF",
    "KernelIRF",
    "RoutingContext",
    "Muskingum",
    "MuskingumCunge",
    "LinearStorage",
    "PureLag",
    "NashCascade",
    "DiffusiveWave",
    "ExplicitKernel",
    "muskingum_coefficients",
]
