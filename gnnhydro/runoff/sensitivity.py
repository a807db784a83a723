"""Forward sensitivities of any runoff model with a :class:`~gnnhydro.runoff.stepping.TorchStepper`.

The loss gradient with respect to static parameters ``θ`` and initial states ``s₀`` is
``dL/dθ = Σ_t ḡ_t · ∂y_t/∂θ + ḡ_final · ∂s_T/∂θ``.  Instead of a reverse sweep over a tape
(memory O(T)), the sensitivities ``S_t = ∂s_t/∂(θ, s₀)`` are propagated forward with the states
(``S_{t+1} = J_s S_t + J_θ``; Vrugt et al., 2026, arXiv 2602.06429) and the products
``ḡ_t · ∂y_t/∂θ`` are summed on the fly: nothing per step is kept, so memory is flat in T.

How: PyTorch forward-mode AD (dual tensors) through the model's own torch step, so the Jacobian
products are exact and the step is written once.  Cells are independent, so one tangent
direction per parameter *name* (not per node) suffices: direction ``d`` seeds every node's (and
component's) value of one parameter, and each cell's tangent is that cell's own sensitivity.
The directions run together as replicas of the rows (``[Q·R, …]``, Q = parameters + initial
state values that need a gradient), one pass over time.

The forward runs the model's fast path (a fused kernel, without autograd); the backward re-runs
the torch step with the sensitivities.  Static parameters only (a per-step parameter would be T
directions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from gnnhydro.runoff.stepping import TorchStepper

__all__ = ["sensitivity_apply", "ForwardSensitivity"]

FastFn = Callable[[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]], dict[str, Tensor]]


def _tangent(x: Tensor) -> Tensor | None:
    return fwad.unpack_dual(x).tangent


def _directions(x: Tensor) -> int:
    """Tangent directions of a packed tensor ``[R, c, *rest]``: one per trailing index."""
    n = 1
    for d in x.shape[2:]:
        n *= int(d)
    return n


def _replicate(x: Tensor, n_rep: int) -> Tensor:
    """``x`` ``[R, …]`` repeated ``n_rep`` times along the rows ``[n_rep·R, …]``."""
    return x.repeat((n_rep,) + (1,) * (x.dim() - 1))


def _seed(x: Tensor, q0: int, count: int, n_rep: int) -> Tensor:
    """Replicate ``x`` ``[R, c, *rest]`` ``n_rep`` times along rows, as a dual tensor whose
    replica ``q0 + d`` has tangent one at trailing index ``d`` (every row and component)."""
    rep = _replicate(x.detach(), n_rep)
    rows, c = x.shape[0], x.shape[1]
    tan = torch.zeros_like(rep)
    flat = tan.view(n_rep, rows, c, count)
    for d in range(count):
        flat[q0 + d, :, :, d] = 1.0
    return fwad.make_dual(rep, tan)


def _zero_dual(x: Tensor) -> Tensor:
    """``x`` as a dual tensor with a (materialised) zero tangent.  An operation between a dual
    and a plain tensor takes PyTorch's zero-tangent path (``_efficientzerotensor``), which costs
    ~0.3–0.5 ms per operation on CPU in torch 2.13 (Python meta kernels), against ~15 µs for
    two duals; so everything that enters the step is made dual."""
    return fwad.make_dual(x, torch.zeros_like(x))


def _as_packed(x: Tensor) -> Tensor:
    """A parameter ``[R, m]`` as ``[R, m, 1]``, ``[R]`` (per node) as ``[R, 1, 1]``: one
    direction."""
    if x.dim() == 1:
        return x[:, None, None]
    return x.unsqueeze(-1) if x.dim() == 2 else x


class ForwardSensitivity(torch.autograd.Function):
    """Forward: the fast path without autograd.  Backward: forward sensitivities through the
    torch step (module docstring).

    Inputs: the stepper, the fast function, forcing / parameter / state names, then the forcing
    ``[R, T]``, the static parameters ``[R, m]`` and the model-shaped initial states
    ``[R, C]``.  Outputs: the stepper's per-step outputs ``[R, T]``, then the final states.
    """

    @staticmethod
    def forward(ctx, stepper, fast, fnames, pnames, snames, *tensors):
        nf, npar = len(fnames), len(pnames)
        plain = [t.detach() for t in tensors]  # the fast path records no tape for a backward
        forcing = dict(zip(fnames, plain[:nf], strict=True))
        params = dict(zip(pnames, plain[nf : nf + npar], strict=True))
        states = dict(zip(snames, plain[nf + npar :], strict=True))
        with torch.no_grad():
            out = fast(forcing, params, states)
        ctx.stepper = stepper
        ctx.names = (fnames, pnames, snames)
        ctx.save_for_backward(*(t.detach() for t in tensors))
        keys = (*stepper.outputs, *(f"final_{s}" for s in snames))
        return tuple(out[k] for k in keys)

    @staticmethod
    def backward(ctx, *grads):
        stepper: TorchStepper = ctx.stepper
        fnames, pnames, snames = ctx.names
        saved = ctx.saved_tensors
        nf, npar = len(fnames), len(pnames)
        forcing = dict(zip(fnames, saved[:nf], strict=True))
        params = dict(zip(pnames, saved[nf : nf + npar], strict=True))
        states = dict(zip(snames, saved[nf + npar :], strict=True))
        need = ctx.needs_input_grad[5:]
        want_p = [pnames[i] for i in range(npar) if need[nf + i]]
        want_s = [snames[i] for i in range(len(snames)) if need[nf + npar + i]]
        n_out = len(stepper.outputs)
        g_out = dict(zip(stepper.outputs, grads[:n_out], strict=True))
        g_fin = dict(zip(snames, grads[n_out:], strict=True))
        grads_p, grads_s = _sensitivities(stepper, forcing, params, states, want_p, want_s,
                                          g_out, g_fin)  # fmt: skip
        res: list[Tensor | None] = [None] * (5 + nf)
        res += [grads_p.get(k) for k in pnames]
        res += [grads_s.get(k) for k in snames]
        return tuple(res)


@torch.no_grad()
def _sensitivities(
    stepper: TorchStepper,
    forcing: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
    want_p: list[str],
    want_s: list[str],
    g_out: Mapping[str, Tensor | None],
    g_fin: Mapping[str, Tensor | None],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``dL/dθ`` ``{name: [R, m]}`` and ``dL/ds₀`` ``{name: [R, C]}`` by forward sensitivities."""
    rows = next(iter(forcing.values())).shape[0]
    packed = dict(zip(stepper.states, stepper.pack(states), strict=True))
    counts_p = {k: _directions(_as_packed(params[k])) for k in want_p}
    counts_s = {k: _directions(packed[k]) for k in want_s}
    n_rep = sum(counts_p.values()) + sum(counts_s.values())
    if n_rep == 0:
        return {}, {}
    m = max(v.shape[1] for v in packed.values())
    offsets: dict[str, int] = {}
    q = 0
    for key, c in [*(("p:" + k, c) for k, c in counts_p.items()),
                   *(("s:" + k, c) for k, c in counts_s.items())]:  # fmt: skip
        offsets[key] = q
        q += c
    acc = torch.zeros((n_rep * rows, m), dtype=next(iter(params.values())).dtype)
    with fwad.dual_level():
        p_rep = {}
        for k, v in params.items():
            if k in counts_p:
                seeded = _seed(_as_packed(v), offsets["p:" + k], counts_p[k], n_rep)
                p_rep[k] = seeded.reshape((n_rep * v.shape[0], *v.shape[1:]))
            else:
                p_rep[k] = _zero_dual(_replicate(v, n_rep))
        st = []
        for k in stepper.states:
            v = packed[k]
            if k in counts_s:
                st.append(_seed(v, offsets["s:" + k], counts_s[k], n_rep))
            else:
                st.append(_zero_dual(_replicate(v, n_rep)))
        st = tuple(st)
        prepared = stepper.prepare(p_rep)
        f_rep = {k: forcing[k] for k in stepper.forcing}
        n_steps = f_rep[stepper.forcing[0]].shape[1]
        seeds = {k: g for k, g in g_out.items() if g is not None}
        for t in range(n_steps):
            ft = {k: _zero_dual(_replicate(v[:, t : t + 1], n_rep)) for k, v in f_rep.items()}
            st, out = stepper.step(st, ft, prepared)
            for k, g in seeds.items():
                tan = _tangent(out[k])
                if tan is not None:
                    acc += tan * (_replicate(g[:, t], n_rep) / m).unsqueeze(-1)
        final = dict(zip(stepper.states, st, strict=True))
        g_packed = {}
        if any(g is not None for g in g_fin.values()):
            model_shaped = {
                k: (g_fin[k] if g_fin.get(k) is not None else torch.zeros_like(states[k]))
                for k in stepper.states
            }
            g_packed = dict(zip(stepper.states, stepper.pack(model_shaped), strict=True))
        for k in stepper.states:
            if k not in g_packed or g_fin.get(k) is None:
                continue
            tan = _tangent(final[k])
            if tan is None:
                continue
            g = _replicate(g_packed[k], n_rep)
            contrib = (tan * g).reshape(n_rep * rows, tan.shape[1], -1).sum(-1)
            if contrib.shape[1] == m:
                acc += contrib
            else:  # a per-node state: its loss term is not any one component's
                acc[:, :1] += contrib
    acc = acc.view(n_rep, rows, m)

    def gather(key: str, like: Tensor, count: int) -> Tensor:
        """The gradient of a packed tensor like ``like`` ``[R, c, *rest]`` from ``acc``."""
        q0 = offsets[key]
        parts = acc[q0 : q0 + count]  # [count, R, m]
        if like.shape[1] == 1:
            parts = parts.sum(-1, keepdim=True)
        return parts.permute(1, 2, 0).reshape(like.shape)

    grads_p = {}
    for k in want_p:
        grads_p[k] = gather("p:" + k, _as_packed(params[k]), counts_p[k]).reshape(params[k].shape)
    grads_s = {}
    if want_s:
        grads_packed = {k: torch.zeros_like(v) for k, v in packed.items()}
        for k in want_s:
            grads_packed[k] = gather("s:" + k, packed[k], counts_s[k])
        unpacked = stepper.unpack(tuple(grads_packed[k] for k in stepper.states))
        grads_s = {k: unpacked[k] for k in want_s}
    return grads_p, grads_s


def sensitivity_apply(
    stepper: TorchStepper,
    fast: FastFn,
    forcing: Mapping[str, Tensor],
    params: Mapping[str, Tensor],
    states: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Run ``fast`` (the model's fast path) with a backward by forward sensitivities.

    Args:
        stepper: the model's torch step.
        fast: ``fast(forcing, params, states)`` returning the stepper's outputs ``[R, T]`` and
            ``final_<state>`` (a fused kernel, or :func:`~gnnhydro.runoff.stepping.run_steps`).
        forcing, params, states: as the model's ``_run`` receives them; parameters static.

    Shapes:
        forcing ``[R, T]``; params ``[R, m]``; states model-shaped; result: the stepper's
        outputs ``[R, T]`` and ``final_<state>``.  Gradients flow to the parameters and the
        initial states, not to the forcing.
    """
    dyn = sorted(k for k, v in params.items() if v.dim() == 3)
    if dyn:
        raise ValueError(
            f"gradient='sensitivity' supports static parameters only; {dyn} vary in time"
        )
    fnames = tuple(stepper.forcing)
    pnames = tuple(params)
    snames = tuple(stepper.states)
    tensors = (
        *(forcing[k] for k in fnames),
        *(params[k] for k in pnames),
        *(states[k] for k in snames),
    )
    res = ForwardSensitivity.apply(stepper, fast, fnames, pnames, snames, *tensors)
    n_out = len(stepper.outputs)
    out = dict(zip(stepper.outputs, res[:n_out], strict=True))
    for k, v in zip(snames, res[n_out:], strict=True):
        out[f"final_{k}"] = v
    return out
