"""Fused kernels (numba CPU, triton GPU) for runoff models."""
