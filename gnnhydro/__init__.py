"""gnnhydro: graph-neural-network-centric differentiable hydrology on PyTorch Geometric."""

from gnnhydro.graph import RiverGraph

__version__ = "0.1.0"

__all__ = ["RiverGraph", "__version__"]
