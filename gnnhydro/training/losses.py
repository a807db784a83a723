"""Differentiable training losses on discharge at gauges (NaN-masked, warm-up dropped).

Every loss is a :class:`HydroLoss` module called with keyword arguments only::

    loss = build_loss({"nse": 1.0, "kge": 0.5})
    value = loss(simulation=q_sim, observation=q_obs, warmup_steps=365, obs_std=sigma)

Conventions shared by all losses:

* ``simulation`` and ``observation`` have the same shape ``[..., T]`` (``[T]``, ``[G, T]`` or
  ``[B, G, T]``); the last axis is time, all leading axes are flattened into "gauges" (series).
* The first ``warmup_steps`` time steps are dropped (model states start empty).
* Missing observations are NaN (or ±inf): those steps are masked out. A series with too few valid
  steps for the statistic (NSE*/RMSE/MSE: 0; KGE: fewer than 2, zero observed variance or zero
  observed mean) is skipped, and the gradient stays finite. When no series is valid, the loss is
  ``0`` (still attached to the graph, with zero gradient).
* Per-series values are averaged with equal weight over the valid series (``reduction="gauge"``),
  unless stated otherwise.
* ``obs_std`` (per-series standard deviation of observations in the training period, broadcastable
  to the leading shape) is used by :class:`NSELoss` only; other losses accept and ignore it, so
  that a :class:`CombinedLoss` can pass the same keywords to all.

Numerically safe square roots (``sqrt`` with a zero gradient at ``0``) and guarded denominators
keep gradients finite where a statistic is degenerate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gnnhydro.registry import Registry

__all__ = [
    "HydroLoss",
    "NSELoss",
    "KGELoss",
    "RMSELoss",
    "MSELoss",
    "LogNSELoss",
    "CombinedLoss",
    "register_loss",
    "build_loss",
    "list_losses",
]

LOSSES: Registry[type[HydroLoss]] = Registry("loss")


def register_loss(name: str) -> Callable[[type[HydroLoss]], type[HydroLoss]]:
    """Class decorator registering a :class:`HydroLoss` subclass under ``name``."""
    return LOSSES.register(name)


def list_losses() -> list[str]:
    """Names of the registered losses."""
    return LOSSES.names()


def build_loss(spec: str | Mapping[str, Any], **kwargs: Any) -> HydroLoss:
    """Build a loss from a name or a dict.

    * ``build_loss("nse", eps=0.1)`` → :class:`NSELoss`;
    * ``build_loss({"name": "kge", "eps": 1e-6})`` → a single loss with options;
    * ``build_loss({"nse": 1.0, "kge": 0.5})`` or
      ``build_loss({"nse": {"weight": 1.0, "eps": 0.1}, "kge": 0.5})`` → :class:`CombinedLoss`.
    """
    if isinstance(spec, str):
        key = spec.lower()
        return LOSSES.get(key)(**kwargs)
    if isinstance(spec, Mapping):
        if "name" in spec:
            options = {k: v for k, v in spec.items() if k != "name"}
            return build_loss(str(spec["name"]), **options, **kwargs)
        if kwargs:
            raise ValueError(f"build_loss: extra options {sorted(kwargs)} with a weights dict")
        return CombinedLoss(spec)
    raise ValueError(f"build_loss: expected a name or a dict, got {type(spec).__name__}")


# ---------------------------------------------------------------------------- helpers
def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x ≥ 0`` with value and gradient ``0`` at ``x = 0`` (not ``inf``)."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), 0.0)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid`` entries (``0`` when none); invalid entries may be
    anything finite-gradient-safe, they are replaced before the sum."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp_min(1)


class _Prepared:
    """Flattened, warm-up-trimmed, NaN-filled views of simulation and observation.

    Attributes: ``sim``, ``obs`` ``[G, T']`` (zero where masked), ``mask`` ``[G, T']`` bool,
    ``n`` ``[G]`` valid counts (float), ``lead`` leading shape.
    """

    def __init__(self, simulation: Tensor, observation: Tensor, warmup_steps: int, owner: str):
        if not isinstance(simulation, Tensor):
            raise ValueError(f"{owner}: simulation must be a torch.Tensor")
        observation = torch.as_tensor(observation, dtype=simulation.dtype, device=simulation.device)
        if simulation.shape != observation.shape:
            raise ValueError(
                f"{owner}: simulation shape {list(simulation.shape)} differs from observation "
                f"shape {list(observation.shape)}"
            )
        if simulation.dim() < 1:
            raise ValueError(f"{owner}: inputs must have a time axis [..., T]")
        t = simulation.shape[-1]
        warmup_steps = int(warmup_steps)
        if not 0 <= warmup_steps < t:
            raise ValueError(
                f"{owner}: warmup_steps={warmup_steps} must be in [0, T) with T={t} time steps"
            )
        self.lead = tuple(simulation.shape[:-1])
        sim = simulation[..., warmup_steps:].reshape(-1, t - warmup_steps)
        obs = observation[..., warmup_steps:].reshape(-1, t - warmup_steps)
        self.mask = torch.isfinite(obs)
        zero = torch.zeros((), dtype=sim.dtype, device=sim.device)
        # fill BEFORE any arithmetic so that no NaN enters the graph
        self.obs = torch.where(self.mask, obs, zero)
        self.sim = torch.where(self.mask, sim, zero)
        self.n = self.mask.sum(-1).to(sim.dtype)

    def std_obs(self, values: Tensor | None = None) -> Tensor:
        """Population standard deviation (ddof 0) per series over valid steps, ``[G]``."""
        obs = self.obs if values is None else values
        n = self.n.clamp_min(1)
        mean = obs.sum(-1) / n
        dev = torch.where(self.mask, obs - mean[:, None], 0.0)
        return torch.sqrt((dev**2).sum(-1) / n)


class HydroLoss(nn.Module):
    """Base class: validates, masks and trims inputs, then calls :meth:`_loss`.

    Call with keywords: ``loss(simulation=..., observation=..., warmup_steps=0, obs_std=None)``.

    Shapes:
        simulation, observation ``[..., T]`` (same shape, same units); obs_std broadcastable to
        ``[...]``; returns a scalar tensor.
    """

    registry_name: ClassVar[str] = ""

    def forward(
        self,
        *,
        simulation: Tensor,
        observation: Tensor,
        warmup_steps: int = 0,
        obs_std: Tensor | None = None,
    ) -> Tensor:
        prep = _Prepared(simulation, observation, warmup_steps, type(self).__name__)
        return self._loss(prep, obs_std)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        raise NotImplementedError


def _nse_star(
    prep: _Prepared,
    sim: Tensor,
    obs: Tensor,
    sigma: Tensor,
    eps: float,
    reduction: str,
) -> Tensor:
    has = prep.n > 0
    weight = 1.0 / (sigma + eps) ** 2  # [G]
    weight = torch.where(has, weight, torch.zeros_like(weight))
    se = torch.where(prep.mask, (sim - obs) ** 2, 0.0)  # [G, T]
    if reduction == "elements":
        return (weight * se.sum(-1)).sum() / prep.n.sum().clamp_min(1)
    per_gauge = weight * se.sum(-1) / prep.n.clamp_min(1)
    return _masked_mean(per_gauge, has)


@register_loss("nse")
class NSELoss(HydroLoss):
    r"""NSE* loss (Kratzert et al., 2019): squared error scaled per gauge by the observed spread.

    .. math::
        \mathcal{L} = \frac{1}{|G|} \sum_{g \in G} \frac{1}{|T_g|} \sum_{t \in T_g}
            \frac{(\hat q_{g,t} - q_{g,t})^2}{(\sigma_g + \epsilon)^2}

    with :math:`T_g` the valid (finite-observation, post-warm-up) steps of gauge :math:`g`,
    :math:`G` the gauges with :math:`|T_g| > 0`, and :math:`\sigma_g` the standard deviation of
    observed discharge of gauge :math:`g` — from ``obs_std`` (computed on the training period, as
    in neuralhydrology) or, when not given, the population standard deviation (ddof 0) of the
    valid observations in the batch (then, with :math:`\epsilon = 0`, the per-gauge term is
    exactly :math:`1 - \mathrm{NSE}_g`). ``reduction="elements"`` instead averages the scaled
    squared errors over all valid (gauge, step) pairs, as neuralhydrology's ``MaskedNSELoss``.

    Args:
        eps: :math:`\epsilon`, in discharge units (default ``0.1``, as in Kratzert et al.);
            ``eps=0`` with a gauge of zero spread gives ``inf``.
        reduction: ``"gauge"`` (default) or ``"elements"``.

    Reference:
        Kratzert, F., et al. (2019). Towards learning universal, regional, and local
        hydrological behaviors via machine learning applied to large-sample datasets.
        HESS 23, 5089–5110.
    """

    def __init__(self, eps: float = 0.1, reduction: str = "gauge") -> None:
        super().__init__()
        if reduction not in ("gauge", "elements"):
            raise ValueError(f"NSELoss: reduction must be 'gauge' or 'elements', got {reduction!r}")
        if eps < 0:
            raise ValueError(f"NSELoss: eps must be ≥ 0, got {eps}")
        self.eps = float(eps)
        self.reduction = reduction

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        if obs_std is None:
            sigma = prep.std_obs().detach()
        else:
            std = torch.as_tensor(obs_std, dtype=prep.sim.dtype, device=prep.sim.device)
            try:
                sigma = torch.broadcast_to(std, prep.lead).reshape(-1)
            except RuntimeError as err:
                raise ValueError(
                    f"NSELoss: obs_std of shape {list(std.shape)} does not broadcast to the "
                    f"leading shape {list(prep.lead)} of the inputs"
                ) from err
            bad = (~torch.isfinite(sigma) | (sigma < 0)) & (prep.n > 0)
            if bad.any():
                rows = torch.nonzero(bad).flatten()[:10].tolist()
                raise ValueError(
                    f"NSELoss: obs_std is NaN/inf/negative for series (flattened gauge index) "
                    f"{rows} that have observations"
                )
            sigma = torch.where(prep.n > 0, sigma, torch.ones_like(sigma))
        return _nse_star(prep, prep.sim, prep.obs, sigma, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}"


@register_loss("log_nse")
class LogNSELoss(HydroLoss):
    r"""NSE* on log-transformed discharge, emphasising low flows.

    .. math::
        \tilde q = \log(\max(q, 0) + \varepsilon_g), \qquad
        \mathcal{L} = \mathrm{NSE}^*(\tilde{\hat q}, \tilde q)

    with :math:`\varepsilon_g = ` ``log_epsilon`` (discharge units) or, by default, 1 % of the mean
    valid observation of gauge :math:`g` in the batch (Pushpalatha et al., 2012).
    :math:`\sigma_g` is the population standard deviation of the valid log-observations in the
    batch (``obs_std`` is ignored: it refers to untransformed discharge). With ``eps=0`` the
    per-gauge term equals ``1 − log_nse`` of :mod:`gnnhydro.training.metrics`.

    Args:
        eps: NSE* :math:`\epsilon` in log units (default ``0.1``).
        log_epsilon: fixed :math:`\varepsilon` in discharge units, or ``None`` (default).
        reduction: ``"gauge"`` (default) or ``"elements"``.
    """

    def __init__(
        self, eps: float = 0.1, log_epsilon: float | None = None, reduction: str = "gauge"
    ) -> None:
        super().__init__()
        if reduction not in ("gauge", "elements"):
            raise ValueError(
                f"LogNSELoss: reduction must be 'gauge' or 'elements', got {reduction!r}"
            )
        if log_epsilon is not None and log_epsilon <= 0:
            raise ValueError(f"LogNSELoss: log_epsilon must be > 0, got {log_epsilon}")
        self.eps = float(eps)
        self.log_epsilon = log_epsilon
        self.reduction = reduction

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        if self.log_epsilon is None:
            mean = prep.obs.sum(-1) / prep.n.clamp_min(1)
            off = (0.01 * mean).clamp_min(torch.finfo(prep.obs.dtype).tiny).detach()
        else:
            off = torch.full_like(prep.n, self.log_epsilon)
        off = off[:, None]
        log_obs = torch.where(prep.mask, torch.log(prep.obs.clamp_min(0) + off), 0.0)
        log_sim = torch.where(prep.mask, torch.log(prep.sim.clamp_min(0) + off), 0.0)
        sigma = prep.std_obs(log_obs).detach()
        return _nse_star(prep, log_sim, log_obs, sigma, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, log_epsilon={self.log_epsilon}, reduction={self.reduction!r}"


@register_loss("kge")
class KGELoss(HydroLoss):
    r"""``1 − KGE`` (Gupta et al., 2009), averaged over gauges.

    .. math::
        \mathcal{L} = \frac{1}{|G|}\sum_{g \in G} \sqrt{(r_g - 1)^2 + (\alpha_g - 1)^2
            + (\beta_g - 1)^2}, \quad \alpha_g = \sigma_{s,g}/\sigma_{o,g}, \quad
            \beta_g = \mu_{s,g}/\mu_{o,g}

    with :math:`r_g` the Pearson correlation over the valid steps of gauge :math:`g`. Gauges with
    fewer than 2 valid steps, zero observed variance or zero observed mean are skipped. The
    correlation's denominator :math:`\sigma_s\sigma_o` is floored at ``eps`` (constant
    simulations get :math:`r = 0` instead of NaN).

    Args:
        eps: floor of :math:`\sigma_s \sigma_o` (default ``1e-6``, squared discharge units).

    Reference:
        Gupta, H. V., Kling, H., Yilmaz, K. K., Martinez, G. F. (2009). Decomposition of the mean
        squared error and NSE performance criteria. J. Hydrol. 377, 80–91.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        n = prep.n.clamp_min(1)
        mu_o = prep.obs.sum(-1) / n
        mu_s = prep.sim.sum(-1) / n
        do = torch.where(prep.mask, prep.obs - mu_o[:, None], 0.0)
        ds = torch.where(prep.mask, prep.sim - mu_s[:, None], 0.0)
        var_o = (do**2).sum(-1) / n
        var_s = (ds**2).sum(-1) / n
        cov = (do * ds).sum(-1) / n
        sd_o = torch.sqrt(var_o)
        sd_s = _safe_sqrt(var_s)
        valid = (prep.n >= 2) & (var_o > 0) & (mu_o != 0)
        one = torch.ones_like(sd_o)
        sd_o_safe = torch.where(valid, sd_o, one)
        mu_o_safe = torch.where(valid, mu_o, one)
        r = cov / (sd_s * sd_o_safe).clamp_min(self.eps)
        alpha = sd_s / sd_o_safe
        beta = mu_s / mu_o_safe
        ed = _safe_sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
        return _masked_mean(ed, valid)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@register_loss("rmse")
class RMSELoss(HydroLoss):
    r"""Root-mean-square error per gauge, averaged over gauges with valid steps.

    .. math::
        \mathcal{L} = \frac{1}{|G|}\sum_{g \in G}\sqrt{\frac{1}{|T_g|}\sum_{t\in T_g}
            (\hat q_{g,t} - q_{g,t})^2}

    (in discharge units).
    """

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        se = torch.where(prep.mask, (prep.sim - prep.obs) ** 2, 0.0)
        per_gauge = _safe_sqrt(se.sum(-1) / prep.n.clamp_min(1))
        return _masked_mean(per_gauge, prep.n > 0)


@register_loss("mse")
class MSELoss(HydroLoss):
    r"""Mean squared error over all valid (gauge, step) pairs (squared discharge units).

    .. math::
        \mathcal{L} = \frac{\sum_g\sum_{t\in T_g}(\hat q_{g,t} - q_{g,t})^2}{\sum_g |T_g|}
    """

    def _loss(self, prep: _Prepared, obs_std: Tensor | None) -> Tensor:
        se = torch.where(prep.mask, (prep.sim - prep.obs) ** 2, 0.0)
        return se.sum() / prep.n.sum().clamp_min(1)


class CombinedLoss(HydroLoss):
    r"""Weighted sum of registered losses: :math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k`.

    Args:
        weights: ``{name: weight}`` or ``{name: {"weight": w, **options}}``, e.g.
            ``CombinedLoss({"nse": 1.0, "kge": 0.5})``.

    After each call, :attr:`last_components` holds the detached unweighted component values
    (for logging).
    """

    registry_name = "combined"

    def __init__(self, weights: Mapping[str, float | Mapping[str, Any]]) -> None:
        super().__init__()
        if not weights:
            raise ValueError("CombinedLoss: weights is empty")
        losses: dict[str, HydroLoss] = {}
        self.weights: dict[str, float] = {}
        for name, value in weights.items():
            if isinstance(value, Mapping):
                options = dict(value)
                weight = float(options.pop("weight", 1.0))
            else:
                options, weight = {}, float(value)
            losses[name] = build_loss(name, **options)
            self.weights[name] = weight
        self.losses = nn.ModuleDict(losses)
        self.last_components: dict[str, Tensor] = {}

    def forward(
        self,
        *,
        simulation: Tensor,
        observation: Tensor,
        warmup_steps: int = 0,
        obs_std: Tensor | None = None,
    ) -> Tensor:
        total = None
        components: dict[str, Tensor] = {}
        for name, loss in self.losses.items():
            value = loss(
                simulation=simulation,
                observation=observation,
                warmup_steps=warmup_steps,
                obs_std=obs_std,
            )
            components[name] = value.detach()
            term = self.weights[name] * value
            total = term if total is None else total + term
        self.last_components = components
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


# robust, flow-duration-curve and recession losses register themselves in the same registry
from gnnhydro.training import hydrograph_losses as _hydrograph_losses  # noqa: E402, F401
