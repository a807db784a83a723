r"""Losses beyond squared errors: robust, flow-duration-curve and recession losses.

They share the conventions of :mod:`gnnhydro.training.losses` (keyword call, ``[..., T]``
inputs flattened to gauges, warm-up dropped, NaN observations masked, series without enough
valid steps skipped with a finite gradient, equal weight per gauge) and its registry, so they
combine with the others by weight in the trainer config::

    trainer.loss: {nse: 1.0, fdc: 0.5, recession: 0.2}

* ``huber`` — Huber or pseudo-Huber on residuals scaled by each gauge's observed spread
  (Huber 1964; the pseudo-Huber (Charbonnier) form is smooth everywhere): quadratic for small
  residuals, linear for large ones, so a few timing errors at peaks do not dominate.
* ``fdc`` — NSE* of the flow-duration curve: squared differences between the simulated and the
  observed flows each sorted in decreasing order, over a segment of exceedance probabilities;
  insensitive to timing, it constrains the distribution of flows (e.g. Westerberg et al. 2011).
* ``fhv``, ``flv``, ``fms`` — absolute FDC signature biases of Yilmaz et al. (2008) as
  fractions (|FHV|/100 …, the definitions of :mod:`gnnhydro.training.metrics`): high-flow
  volume, low-flow volume (log), mid-segment slope (log).
* ``recession`` — squared error of the log recession constant: on the steps where the
  observed hydrograph recedes (at least ``min_length`` consecutive decreases, the first
  ``skip`` steps after each peak dropped), the mean of ``log(Q_{t+1}/Q_t)`` of the simulation
  against that of the observation (exponential recession ``Q_{t+1} = k Q_t``; Tallaksen 1995).

References:
    Huber, P. J. (1964). Robust estimation of a location parameter. Ann. Math. Stat. 35, 73–101.
    Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). A process-based diagnostic approach to
    model evaluation. Water Resour. Res. 44, W09417.
    Westerberg, I. K., et al. (2011). Calibration of hydrological models using flow-duration
    curves. HESS 15, 2205–2227.
    Tallaksen, L. M. (1995). A review of baseflow recession analysis. J. Hydrol. 165, 349–370.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnhydro.training.losses import HydroLoss, _masked_mean, _Prepared, register_loss
from gnnhydro.training.metrics import LOG_FLOOR, REFERENCE_EPS

__all__ = ["HuberLoss", "FDCLoss", "FHVLoss", "FLVLoss", "FMSLoss", "RecessionLoss"]


def _spread(prep: _Prepared, obs_std: Tensor | None) -> Tensor:
    """``[G]`` observed standard deviation per series (``obs_std`` where given), detached."""
    if obs_std is None:
        return prep.std_obs().detach()
    std = torch.as_tensor(obs_std, dtype=prep.sim.dtype, device=prep.sim.device)
    sigma = torch.broadcast_to(std, prep.lead).reshape(-1)
    return torch.where(torch.isfinite(sigma) & (sigma >= 0), sigma, torch.ones_like(sigma))


def _log_flows(x: Tensor) -> Tensor:
    """Natural log with flows ≤ 0 replaced by ``LOG_FLOOR`` (as the metrics do)."""
    return torch.log(torch.where(x > 0, x, torch.full_like(x, LOG_FLOOR)))


def _sorted_flows(prep: _Prepared) -> tuple[Tensor, Tensor]:
    """The simulated and observed flows of every series over its valid steps, each sorted in
    decreasing order (the FDCs); entries at positions ``≥ n_g`` are padding (``-inf``).

    Shapes: ``[G, T']`` each.
    """
    pad = torch.full_like(prep.sim, float("-inf"))
    sim = torch.where(prep.mask, prep.sim, pad).sort(-1, descending=True).values
    obs = torch.where(prep.mask, prep.obs, pad).sort(-1, descending=True).values
    return sim, obs


def _count(fraction: float, n: Tensor) -> Tensor:
    """``max(1, round(fraction·n))`` per series (NumPy's round half to even, as the metrics)."""
    return torch.round(fraction * n).clamp_min(1)


def _rank(prep: _Prepared) -> Tensor:
    """``[1, T']`` 0-based positions along the time axis."""
    return torch.arange(prep.sim.shape[-1], device=prep.sim.device, dtype=prep.sim.dtype)[None]


@register_loss("huber")
class HuberLoss(HydroLoss):
    r"""Huber (or pseudo-Huber) loss of residuals scaled by the observed spread of each gauge.

    .. math::
        r_{g,t} = \frac{\hat q_{g,t} - q_{g,t}}{\sigma_g + \epsilon}, \quad
        \rho(r) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\
            \delta(|r| - \tfrac12\delta) & |r| > \delta \end{cases}
        \quad\text{or}\quad \rho(r) = \delta^2\big(\sqrt{1 + (r/\delta)^2} - 1\big)

    averaged over the valid steps of each gauge, then over gauges. :math:`\sigma_g` as in
    :class:`~gnnhydro.training.losses.NSELoss` (``obs_std`` or the batch's spread), so the loss
    is unit-free; for :math:`|r| \ll \delta` both forms are :math:`\tfrac12 r^2` (half NSE*).

    Args:
        delta: transition :math:`\delta` in units of :math:`\sigma_g` (default 1).
        pseudo: the smooth pseudo-Huber form (default False: Huber's).
        eps: :math:`\epsilon` in discharge units (default 0.1, as NSE*).
    """

    def __init__(self, delta: float = 1.0, pseudo: bool = False, eps: float = 0.1) -> None:
        super().__init__()
        if not delta > 0:
            raise ValueError(f"HuberLoss: delta must be > 0, got {delta}")
        self.delta, self.pseudo, self.eps = float(delta), bool(pseudo), float(eps)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        r = (prep.sim - prep.obs) / (_spread(prep, obs_std)[:, None] + self.eps)
        d = self.delta
        if self.pseudo:
            rho = d * d * (torch.sqrt(1 + (r / d) ** 2) - 1)
        else:
            a = r.abs()
            rho = torch.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))
        per_gauge = torch.where(prep.mask, rho, 0.0).sum(-1) / prep.n.clamp_min(1)
        return _masked_mean(per_gauge, prep.n > 0)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, pseudo={self.pseudo}, eps={self.eps}"


@register_loss("fdc")
class FDCLoss(HydroLoss):
    r"""NSE* of the flow-duration curve over a segment of exceedance probabilities.

    .. math::
        \mathcal{L} = \frac{1}{|G|}\sum_g \frac{1}{|I_g|}\sum_{i \in I_g}
            \frac{(\tilde S_{g,(i)} - \tilde O_{g,(i)})^2}{(\sigma_g + \epsilon)^2}

    :math:`S_{(i)}`, :math:`O_{(i)}`: the :math:`i`-th largest simulated / observed flow over the
    gauge's valid steps (each sorted on its own), :math:`I_g` the ranks whose exceedance
    probability :math:`(i + 1)/(n_g + 1)` lies in ``[lower, upper]``, :math:`\tilde{\cdot}` the
    identity or the natural log (``log=True``, flows ≤ 0 floored at 1e-6), :math:`\sigma_g` the
    spread (ddof 0) of the gauge's observed (transformed) flows in the batch, the whole curve's.

    Args:
        lower, upper: exceedance-probability segment (default the whole curve, ``[0, 1]``).
        log: compare log flows (default False).
        eps: :math:`\epsilon` (default 0.1, in the units of the transformed flows).
    """

    def __init__(
        self, lower: float = 0.0, upper: float = 1.0, log: bool = False, eps: float = 0.1
    ) -> None:
        super().__init__()
        if not 0 <= lower < upper <= 1:
            raise ValueError(f"FDCLoss: need 0 <= lower < upper <= 1, got {lower}, {upper}")
        self.lower, self.upper, self.log, self.eps = float(lower), float(upper), bool(log), eps

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        sim, obs = _sorted_flows(prep)
        valid = _rank(prep) < prep.n[:, None]
        zero = torch.zeros_like(sim)
        sim, obs = torch.where(valid, sim, zero), torch.where(valid, obs, zero)
        if self.log:
            sim, obs = _log_flows(sim), _log_flows(obs)
        p = (_rank(prep) + 1) / (prep.n[:, None] + 1)
        seg = valid & (p >= self.lower) & (p <= self.upper)
        n = seg.sum(-1).to(sim.dtype)
        m = prep.n.clamp_min(1)
        mean = torch.where(valid, obs, zero).sum(-1) / m
        sigma = torch.sqrt(torch.where(valid, (obs - mean[:, None]) ** 2, zero).sum(-1) / m)
        se = torch.where(seg, (sim - obs) ** 2, zero).sum(-1) / n.clamp_min(1)
        return _masked_mean(se / (sigma.detach() + self.eps) ** 2, n > 0)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}, log={self.log}, eps={self.eps}"


@register_loss("fhv")
class FHVLoss(HydroLoss):
    r"""``|FHV| / 100``: absolute bias of the high-flow FDC segment (the ``H = max(1,
    round(h·n))`` largest flows, :func:`gnnhydro.training.metrics.fhv`), averaged over gauges.

    Args:
        h: exceedance probability of the segment (default 0.02).
    """

    def __init__(self, h: float = 0.02) -> None:
        super().__init__()
        if not 0 < h < 1:
            raise ValueError(f"FHVLoss: h must be in (0, 1), got {h}")
        self.h = float(h)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        sim, obs = _sorted_flows(prep)
        seg = _rank(prep) < _count(self.h, prep.n)[:, None]
        zero = torch.zeros_like(sim)
        total_obs = torch.where(seg, obs, zero).sum(-1)
        ok = (prep.n > 0) & (total_obs != 0)
        bias = torch.where(seg, sim - obs, zero).sum(-1) / torch.where(ok, total_obs, 1.0)
        return _masked_mean(bias.abs(), ok)


@register_loss("flv")
class FLVLoss(HydroLoss):
    r"""``|FLV| / 100``: absolute bias of the low-flow FDC segment in log space (the ``L =
    max(1, round(l·n))`` smallest flows relative to their minimum,
    :func:`gnnhydro.training.metrics.flv`), averaged over gauges with a non-constant observed
    low segment.

    Args:
        l: exceedance range of the segment, ``1 − l`` to 1 (default 0.3).
    """

    def __init__(self, l: float = 0.3) -> None:  # noqa: E741 - Yilmaz et al.'s symbol
        super().__init__()
        if not 0 < l < 1:
            raise ValueError(f"FLVLoss: l must be in (0, 1), got {l}")
        self.l = float(l)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        sim, obs = _sorted_flows(prep)
        rank, n = _rank(prep), prep.n[:, None]
        seg = (rank >= n - _count(self.l, prep.n)[:, None]) & (rank < n)
        last = (prep.n - 1).clamp_min(0).long()[:, None]  # the minimum: last valid rank
        zero = torch.zeros_like(sim)
        log_sim = _log_flows(torch.where(seg, sim, zero + 1))
        log_obs = _log_flows(torch.where(seg, obs, zero + 1))
        qsl = torch.where(seg, log_sim - log_sim.gather(-1, last), zero).sum(-1)
        qol = torch.where(seg, log_obs - log_obs.gather(-1, last), zero).sum(-1)
        ok = (prep.n > 0) & (qol > 0)
        bias = (qsl - qol) / (torch.where(ok, qol, 1.0) + REFERENCE_EPS)
        return _masked_mean(bias.abs(), ok)


@register_loss("fms")
class FMSLoss(HydroLoss):
    r"""``|FMS| / 100``: absolute bias of the FDC mid-segment slope in log space, between the
    flows of 0-based ranks ``round(lower·n)`` and ``round(upper·n)`` (capped at ``n − 1``;
    :func:`gnnhydro.training.metrics.fms`), averaged over gauges with a non-flat segment.

    Args:
        lower, upper: exceedance probabilities of the segment (default 0.2, 0.7).
    """

    def __init__(self, lower: float = 0.2, upper: float = 0.7) -> None:
        super().__init__()
        if not 0 < lower < upper < 1:
            raise ValueError(f"FMSLoss: need 0 < lower < upper < 1, got {lower}, {upper}")
        self.lower, self.upper = float(lower), float(upper)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        sim, obs = _sorted_flows(prep)
        cap = (prep.n - 1).clamp_min(0)
        i = torch.minimum(torch.round(self.lower * prep.n), cap).long()[:, None]
        j = torch.minimum(torch.round(self.upper * prep.n), cap).long()[:, None]
        safe_sim = torch.where(torch.isfinite(sim), sim, torch.ones_like(sim))
        safe_obs = torch.where(torch.isfinite(obs), obs, torch.ones_like(obs))
        ls, lo = _log_flows(safe_sim), _log_flows(safe_obs)
        ds = (ls.gather(-1, i) - ls.gather(-1, j)).squeeze(-1)
        do = (lo.gather(-1, i) - lo.gather(-1, j)).squeeze(-1)
        ok = (prep.n > 0) & (do > 0)
        bias = (ds - do) / (torch.where(ok, do, 1.0) + REFERENCE_EPS)
        return _masked_mean(bias.abs(), ok)


def recession_mask(observation: np.ndarray, min_length: int = 5, skip: int = 1) -> np.ndarray:
    """``[G, T−1]`` bool: steps ``t → t+1`` inside observed recessions.

    A recession is a run of at least ``min_length`` consecutive decreases of the (finite,
    positive) observed flow; its first ``skip`` steps after the peak (quick flow) are dropped.

    Shapes: observation ``[G, T]`` (NaN = missing); result ``[G, T−1]``.
    """
    o = np.asarray(observation, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        down = (o[:, 1:] < o[:, :-1]) & np.isfinite(o[:, 1:]) & np.isfinite(o[:, :-1])
        down &= (o[:, 1:] > 0) & (o[:, :-1] > 0)
    out = np.zeros_like(down)
    for g in range(down.shape[0]):
        t, T = 0, down.shape[1]
        while t < T:
            if not down[g, t]:
                t += 1
                continue
            end = t
            while end < T and down[g, end]:
                end += 1
            if end - t >= min_length:
                out[g, t + skip : end] = True
            t = end
    return out


@register_loss("recession")
class RecessionLoss(HydroLoss):
    r"""Squared error of the log recession constant on observed recessions.

    .. math::
        \log k_g = \frac{1}{|R_g|}\sum_{t \in R_g} \log\frac{Q_{g,t+1}}{Q_{g,t}}, \qquad
        \mathcal{L} = \frac{1}{|G|}\sum_g (\log \hat k_g - \log k_g)^2

    :math:`R_g`: the steps of gauge :math:`g` inside observed recessions
    (:func:`recession_mask`: at least ``min_length`` consecutive decreases, the first ``skip``
    dropped), the same steps for simulation and observation; simulated flows ≤ 0 are floored at
    1e-6 before the log. Gauges with fewer than ``min_points`` such steps are skipped.

    Args:
        min_length: shortest run of decreasing observed flow counted as a recession (default 5).
        skip: steps dropped at the start of each recession (default 1).
        min_points: fewest recession steps for a gauge to count (default 5).
    """

    def __init__(self, min_length: int = 5, skip: int = 1, min_points: int = 5) -> None:
        super().__init__()
        if min_length < 1 or skip < 0 or skip >= min_length or min_points < 1:
            raise ValueError(
                f"RecessionLoss: need min_length >= 1, 0 <= skip < min_length, min_points >= 1; "
                f"got {min_length}, {skip}, {min_points}"
            )
        self.min_length, self.skip, self.min_points = int(min_length), int(skip), int(min_points)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        obs_np = torch.where(prep.mask, prep.obs, float("nan")).detach().cpu().numpy()
        steps = recession_mask(obs_np, self.min_length, self.skip)
        mask = torch.as_tensor(steps, device=prep.sim.device)
        count = mask.sum(-1).to(prep.sim.dtype)
        zero = torch.zeros_like(prep.sim[:, 1:])

        def log_k(q: Tensor) -> Tensor:
            lq = _log_flows(q)
            return torch.where(mask, lq[:, 1:] - lq[:, :-1], zero).sum(-1) / count.clamp_min(1)

        ok = count >= self.min_points
        return _masked_mean((log_k(prep.sim) - log_k(prep.obs)) ** 2, ok)

    def extra_repr(self) -> str:
        return f"min_length={self.min_length}, skip={self.skip}, min_points={self.min_points}"
