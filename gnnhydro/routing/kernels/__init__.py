"""Routing kernels: fused numba kernels (CPU), triton kernels (CUDA) and a pure-torch path."""
