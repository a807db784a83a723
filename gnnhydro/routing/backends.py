"""Routing backends by name, in the manner of torchdiffeq's ``SOLVERS`` dict.

A backend routes lateral inflow through a (sub)network with per-reach first-order recursions
(:meth:`RoutingBackend.recursive`) or finite kernels (:meth:`RoutingBackend.kernel`):

* ``numba`` — fused CPU kernels walking the reaches in topological order, exact adjoints
  (:mod:`gnnhydro.routing.kernels.cpu`);
* ``torch`` — pure torch, level by level (any device, autograd;
  :mod:`gnnhydro.routing.kernels.torch_path`);
* ``triton`` — CUDA level kernels for recursions, the torch level path for kernels
  (:mod:`gnnhydro.routing.kernels.triton_kernels`).

``BACKENDS[name]()`` gives one; :func:`pick_backend` resolves ``"auto"`` for a device.

Shapes:
    lat ``[B, N, T]``; coef ``[1|B, N, 3]``; init_in / init_out ``[B, N]``; h ``[1|B, N, K]``;
    hist ``[B, N, H]``; sup ``[1|B, N, 2]`` int64 lag ranges; edge_weight ``[E]``; result like lat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gnnhydro.routing.kernels import torch_path
from gnnhydro.routing.network import RoutingNetwork

__all__ = ["BACKENDS", "RoutingBackend", "pick_backend"]


class RoutingBackend:
    """Interface of a routing backend (subclasses implement both methods)."""

    name = ""
    #: the stage loop may hand this backend the whole network in staged order at once
    fused_stages = False

    def recursive(
        self,
        lat: Tensor,
        coef: Tensor,
        init_in: Tensor,
        init_out: Tensor,
        edge_weight: Tensor,
        net: RoutingNetwork,
        aggregate: Callable | None,
    ) -> Tensor:
        """``O_t = c0·I_t + c1·I_{t−1} + c2·O_{t−1}`` for every reach, ``I`` = lateral + upstream."""
        raise NotImplementedError

    def kernel(
        self,
        lat: Tensor,
        h: Tensor,
        hist: Tensor,
        sup: Tensor,
        edge_weight: Tensor,
        net: RoutingNetwork,
        aggregate: Callable | None,
    ) -> Tensor:
        """``O_t = Σ_j h_j·I_{t−j}`` for every reach, earlier inflow from ``hist``."""
        raise NotImplementedError


class NumbaBackend(RoutingBackend):
    name = "numba"
    fused_stages = True

    def recursive(self, lat, coef, init_in, init_out, edge_weight, net, aggregate):
        from gnnhydro.routing.kernels.cpu import iir_route_numba

        return iir_route_numba(lat, coef, init_in, init_out, edge_weight, net)

    def kernel(self, lat, h, hist, sup, edge_weight, net, aggregate):
        from gnnhydro.routing.kernels.cpu import fir_route_numba

        return fir_route_numba(lat, h, hist, edge_weight, sup.cpu(), net)


class TorchBackend(RoutingBackend):
    name = "torch"

    def recursive(self, lat, coef, init_in, init_out, edge_weight, net, aggregate):
        def filt(inflow: Tensor, nodes: Tensor) -> Tensor:
            return torch_path.iir_filter(
                inflow, coef[:, nodes], init_in[:, nodes], init_out[:, nodes]
            )

        return torch_path.route_levels(lat, net, edge_weight, filt, aggregate)

    def kernel(self, lat, h, hist, sup, edge_weight, net, aggregate):
        def filt(inflow: Tensor, nodes: Tensor) -> Tensor:
            return torch_path.fir_filter(inflow, h[:, nodes], hist[:, nodes])

        return torch_path.route_levels(lat, net, edge_weight, filt, aggregate)


class TritonBackend(RoutingBackend):
    name = "triton"

    def recursive(self, lat, coef, init_in, init_out, edge_weight, net, aggregate):
        from gnnhydro.routing.kernels.triton_kernels import iir_route_triton

        return iir_route_triton(lat, coef, init_in, init_out, edge_weight, net, aggregate)

    def kernel(self, lat, h, hist, sup, edge_weight, net, aggregate):
        from gnnhydro.routing.kernels.triton_kernels import fir_route_triton

        return fir_route_triton(lat, h, hist, edge_weight, net, aggregate)


BACKENDS: dict[str, type[RoutingBackend]] = {
    "numba": NumbaBackend,
    "torch": TorchBackend,
    "triton": TritonBackend,
}


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:  # pragma: no cover
        return False
    return True


def pick_backend(backend: str, device: torch.device) -> RoutingBackend:
    """The backend named ``backend`` (``"auto"``: triton on CUDA, numba on CPU, else torch);
    raises ``ValueError`` naming the choices for an unknown name or numba on a non-CPU device."""
    if backend == "auto":
        if device.type == "cuda":
            backend = "triton" if _importable("triton") else "torch"
        else:
            backend = "numba" if _importable("numba") else "torch"
    if backend not in BACKENDS:
        names = ", ".join(repr(n) for n in ("auto", *BACKENDS))
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    if backend == "numba" and device.type != "cpu":
        raise ValueError("backend 'numba' needs CPU tensors")
    return BACKENDS[backend]()
