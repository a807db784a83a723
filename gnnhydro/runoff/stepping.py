"""A runoff model's step in PyTorch, and the per-step loop that runs it.

A :class:`TorchStepper` says how one model advances one time step in PyTorch: its forcing and
state names, how the states are laid out for the step (:attr:`TorchStepper.pack`), what the
step needs from the static parameters (:attr:`TorchStepper.prepare`, e.g. GR4J's unit-hydrograph
ordinates from ``x4``), the step itself, and its per-step outputs.  The same stepper drives

* :func:`run_steps`, the per-step loop differentiated by autograd (the reference of every fused
  kernel, the bench baseline, the CUDA path), and
* :func:`gnnhydro.runoff.sensitivity.sensitivity_apply`, forward sensitivities propagated with
  the states (memory flat in T),

so a model's step is written once in PyTorch.

Layout conventions of a step: rows ``R`` (nodes, or batch members × nodes), components ``m``.
Per-component tensors are ``[R, m]`` or ``[R, m, L]`` (``L`` values per component, e.g. a unit
hydrograph's contents), per-node tensors ``[R, 1]`` or ``[R, 1, L]`` (broadcast over the
components); forcing of a step is ``[R, 1]``.  Every output of a step is per component (or per
node); the loop returns its mean over the components.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TorchStepper", "run_steps", "identity_prepare"]

States = tuple[Tensor, ...]


def identity_prepare(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """:attr:`TorchStepper.prepare` of a model whose step takes its parameters as they are."""
    return dict(params)


@dataclass(frozen=True)
class TorchStepper:
    """One model's time step in PyTorch (module docstring).

    Attributes:
        forcing: forcing names the step reads (each ``[R, 1]`` per step).
        states: state names, in the order of the step's state tuple.
        outputs: names of the per-step outputs (fluxes and state diagnostics).
        step: ``step(states, forcing_t, params_t) -> (states, outputs)``; ``forcing_t``
            ``{name: [R, 1]}``, ``params_t`` the prepared static parameters and this step's
            values of the dynamic ones, ``outputs`` ``{name: [R, m] or [R, 1]}``.
        pack: model-shaped states ``{name: [R, C]}`` -> the step's state tuple.
        unpack: the step's state tuple -> model-shaped states ``{name: [R, C]}``.
        prepare: static parameters ``{name: [R, m]}`` -> what the step reads (the parameters,
            plus anything derived from them once per run).
    """

    forcing: tuple[str, ...]
    states: tuple[str, ...]
    outputs: tuple[str, ...]
    step: Callable[[States, dict[str, Tensor], dict[str, Tensor]], tuple[States, dict]]
    pack: Callable[[Mapping[str, Tensor]], States]
    unpack: Callable[[States], dict[str, Tensor]]
    prepare: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] = identity_prepare


def split_params(
    params: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, ...]]]:
    """Static parameters ``[R, m]`` as they are, dynamic ones ``[R, T, m]`` unbound along time."""
    static = {k: v for k, v in params.items() if v.dim() != 3}
    dynamic = {k: v.unbind(1) for k, v in params.items() if v.dim() == 3}
    return static, dynamic


def run_steps(
    stepper: TorchStepper,
    forcing: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Per-time-step PyTorch loop of ``stepper`` (autograd reference, bench baseline).

    Static parameters are used as they are (no expansion over time); dynamic ones are unbound
    once along time.

    Shapes:
        forcing ``{name: [R, T]}``; params ``[R, m]`` / ``[R, T, m]``; states model-shaped
        ``{name: [R, C]}``; result: every name of ``stepper.outputs`` ``[R, T]`` (mean over
        components) and ``final_<state>`` (the states' model shapes).
    """
    static, dynamic = split_params(params)
    prepared = stepper.prepare(static)
    cols = {k: forcing[k].unsqueeze(-1).unbind(1) for k in stepper.forcing}
    n_steps = forcing[stepper.forcing[0]].shape[1]
    st = stepper.pack(states)
    rec: dict[str, list[Tensor]] = {k: [] for k in stepper.outputs}
    for t in range(n_steps):
        pt = dict(prepared)
        for k, v in dynamic.items():
            pt[k] = v[t]
        st, out = stepper.step(st, {k: c[t] for k, c in cols.items()}, pt)
        for k in stepper.outputs:
            rec[k].append(out[k])
    result = {k: torch.stack(v, dim=-1).mean(dim=1) for k, v in rec.items()}
    for k, v in stepper.unpack(st).items():
        result[f"final_{k}"] = v
    return result
