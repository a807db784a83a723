"""Hydrological evaluation metrics per gauge (NumPy, NaN-aware).

Every metric takes keyword arguments ``observation=`` and ``simulation=`` (NumPy arrays or torch
tensors, same shape ``[T]`` or ``[..., T]`` with time last) and returns one value per series:
a NumPy float for ``[T]`` input, an array of the leading shape otherwise. Only time steps where
both observation and simulation are finite are used; a series with too few valid steps (or a
degenerate statistic, e.g. zero observed variance) gives NaN.

:func:`compute_metrics` evaluates several metrics at once (optionally dropping a warm-up period);
:func:`summarize` gives NaN-ignoring medians and means across gauges.

Registered names: ``nse``, ``kge``, ``kge_prime``, ``log_nse``, ``rmse``, ``pbias``,
``pearson_r``, ``fhv``, ``flv``, ``fms``, ``peak_timing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from scipy import signal

from gnnhydro.registry import Registry

__all__ = [
    "nse",
    "kge",
    "kge_prime",
    "log_nse",
    "rmse",
    "pbias",
    "pearson_r",
    "fhv",
    "flv",
    "fms",
    "peak_timing",
    "compute_metrics",
    "summarize",
    "register_metric",
    "list_metrics",
]

#: positive floor replacing zero/negative flows before logarithms in FLV/FMS (discharge units)
LOG_FLOOR = 1e-6

METRICS: Registry[Callable[..., Any]] = Registry("metric")


def register_metric(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a metric ``f(*, observation, simulation, **options)``."""
    return METRICS.register(name)


def list_metrics() -> list[str]:
    """Names of the registered metrics."""
    return METRICS.names()


# ---------------------------------------------------------------------------- helpers
def _to_numpy(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim < 1:
        raise ValueError(f"{name} must have a time axis [..., T], got a scalar")
    return arr


def _prepare(
    observation: Any, simulation: Any, owner: str, warmup_steps: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    obs = _to_numpy(observation, "observation")
    sim = _to_numpy(simulation, "simulation")
    if obs.shape != sim.shape:
        raise ValueError(
            f"{owner}: observation shape {list(obs.shape)} differs from simulation shape "
            f"{list(sim.shape)}"
        )
    t = obs.shape[-1]
    if not 0 <= int(warmup_steps) < t:
        raise ValueError(f"{owner}: warmup_steps={warmup_steps} must be in [0, T) with T={t}")
    lead = obs.shape[:-1]
    obs = obs[..., int(warmup_steps) :].reshape(-1, t - int(warmup_steps))
    sim = sim[..., int(warmup_steps) :].reshape(-1, t - int(warmup_steps))
    return obs, sim, lead


def _rowwise(
    func: Callable[[np.ndarray, np.ndarray], float],
    observation: Any,
    simulation: Any,
    owner: str,
) -> Any:
    """Apply ``func(obs_valid, sim_valid)`` to each series' jointly finite steps."""
    obs, sim, lead = _prepare(observation, simulation, owner)
    out = np.full(obs.shape[0], np.nan)
    valid = np.isfinite(obs) & np.isfinite(sim)
    for i in range(obs.shape[0]):
        o, s = obs[i, valid[i]], sim[i, valid[i]]
        if o.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i] = func(o, s)
    return out.reshape(lead)[()]


def _nse_1d(o: np.ndarray, s: np.ndarray) -> float:
    if o.size < 2:
        return np.nan
    denom = np.sum((o - o.mean()) ** 2)
    if denom == 0:
        return np.nan
    return 1.0 - np.sum((s - o) ** 2) / denom


def _kge_parts(o: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float, float]:
    """(r, σ_s, σ_o, μ_s, μ_o) with population standard deviations."""
    mo, ms = o.mean(), s.mean()
    so, ss = o.std(), s.std()
    r = np.mean((o - mo) * (s - ms)) / (so * ss) if so > 0 and ss > 0 else np.nan
    return r, ss, so, ms, mo


# ---------------------------------------------------------------------------- metrics
@register_metric("nse")
def nse(*, observation: Any, simulation: Any) -> Any:
    r"""Nash–Sutcliffe efficiency (Nash & Sutcliffe, 1970).

    .. math::
        \mathrm{NSE} = 1 - \frac{\sum_t (s_t - o_t)^2}{\sum_t (o_t - \bar o)^2}

    Range :math:`(-\infty, 1]`, 1 = perfect, 0 = as good as the observed mean. NaN with fewer
    than 2 valid steps or zero observed variance.

    Reference: Nash, J. E., Sutcliffe, J. V. (1970). River flow forecasting through conceptual
    models part I. J. Hydrol. 10, 282–290.
    """
    return _rowwise(_nse_1d, observation, simulation, "nse")


@register_metric("kge")
def kge(*, observation: Any, simulation: Any) -> Any:
    r"""Kling–Gupta efficiency (Gupta et al., 2009).

    .. math::
        \mathrm{KGE} = 1 - \sqrt{(r - 1)^2 + (\alpha - 1)^2 + (\beta - 1)^2}, \quad
        \alpha = \frac{\sigma_s}{\sigma_o}, \quad \beta = \frac{\mu_s}{\mu_o}

    with :math:`r` the Pearson correlation. Range :math:`(-\infty, 1]`. NaN when a statistic is
    undefined (fewer than 2 steps, zero variance of either series, zero observed mean).

    Reference: Gupta, H. V., Kling, H., Yilmaz, K. K., Martinez, G. F. (2009). Decomposition of
    the mean squared error and NSE performance criteria. J. Hydrol. 377, 80–91.
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        if o.size < 2:
            return np.nan
        r, ss, so, ms, mo = _kge_parts(o, s)
        return 1.0 - np.sqrt((r - 1) ** 2 + (ss / so - 1) ** 2 + (ms / mo - 1) ** 2)

    return _rowwise(f, observation, simulation, "kge")


@register_metric("kge_prime")
def kge_prime(*, observation: Any, simulation: Any) -> Any:
    r"""Modified Kling–Gupta efficiency KGE′ (Kling et al., 2012).

    .. math::
        \mathrm{KGE}' = 1 - \sqrt{(r - 1)^2 + (\gamma - 1)^2 + (\beta - 1)^2}, \quad
        \gamma = \frac{\sigma_s/\mu_s}{\sigma_o/\mu_o}, \quad \beta = \frac{\mu_s}{\mu_o}

    (the variability ratio uses coefficients of variation, so bias and variability are not
    cross-correlated).

    Reference: Kling, H., Fuchs, M., Paulin, M. (2012). Runoff conditions in the upper Danube
    basin under an ensemble of climate change scenarios. J. Hydrol. 424–425, 264–277.
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        if o.size < 2:
            return np.nan
        r, ss, so, ms, mo = _kge_parts(o, s)
        gamma = (ss / ms) / (so / mo)
        return 1.0 - np.sqrt((r - 1) ** 2 + (gamma - 1) ** 2 + (ms / mo - 1) ** 2)

    return _rowwise(f, observation, simulation, "kge_prime")


@register_metric("pearson_r")
def pearson_r(*, observation: Any, simulation: Any) -> Any:
    r"""Pearson correlation coefficient :math:`r = \mathrm{cov}(s, o)/(\sigma_s \sigma_o)`."""

    def f(o: np.ndarray, s: np.ndarray) -> float:
        return _kge_parts(o, s)[0] if o.size >= 2 else np.nan

    return _rowwise(f, observation, simulation, "pearson_r")


@register_metric("log_nse")
def log_nse(*, observation: Any, simulation: Any, epsilon: float | None = None) -> Any:
    r"""NSE of log-transformed flows (emphasises low flows).

    .. math::
        \mathrm{NSE}_{\log} = \mathrm{NSE}\big(\log(\max(o, 0) + \varepsilon),
            \log(\max(s, 0) + \varepsilon)\big)

    Args:
        epsilon: offset :math:`\varepsilon` in discharge units; default ``None`` = 1 % of the mean
            valid observation of each series (Pushpalatha et al., 2012).

    Reference: Pushpalatha, R., Perrin, C., Le Moine, N., Andréassian, V. (2012). A review of
    efficiency criteria suitable for evaluating low-flow simulations. J. Hydrol. 420–421, 171–182.
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        eps = 0.01 * o.mean() if epsilon is None else epsilon
        if not eps > 0:
            return np.nan
        return _nse_1d(np.log(np.maximum(o, 0) + eps), np.log(np.maximum(s, 0) + eps))

    return _rowwise(f, observation, simulation, "log_nse")


@register_metric("rmse")
def rmse(*, observation: Any, simulation: Any) -> Any:
    r"""Root-mean-square error (discharge units).

    .. math::
        \mathrm{RMSE} = \sqrt{\tfrac{1}{T}\sum_t (s_t - o_t)^2}
    """
    return _rowwise(lambda o, s: np.sqrt(np.mean((s - o) ** 2)), observation, simulation, "rmse")


@register_metric("pbias")
def pbias(*, observation: Any, simulation: Any) -> Any:
    r"""Percent bias (positive = overestimation), in %.

    .. math::
        \mathrm{PBIAS} = 100\,\frac{\sum_t (s_t - o_t)}{\sum_t o_t}
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        total = o.sum()
        return 100.0 * (s - o).sum() / total if total != 0 else np.nan

    return _rowwise(f, observation, simulation, "pbias")


def _segment_count(fraction: float, n: int) -> int:
    return max(1, int(np.round(fraction * n)))


@register_metric("fhv")
def fhv(*, observation: Any, simulation: Any, h: float = 0.02) -> Any:
    r"""Percent bias of the high-flow segment of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FHV} = 100\,\frac{\sum_{i=1}^{H} (S_i - O_i)}{\sum_{i=1}^{H} O_i}

    :math:`O_i`, :math:`S_i`: observed/simulated flows each sorted in decreasing order (the FDCs);
    :math:`H = \max(1, \mathrm{round}(h\,n))` highest flows, exceedance probability below
    :math:`h` (default 0.02), :math:`n` valid steps. In %.

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). A process-based diagnostic
    approach to model evaluation: Application to the NWS distributed hydrologic model. Water
    Resour. Res. 44, W09417.
    """
    if not 0 < h < 1:
        raise ValueError(f"fhv: h must be in (0, 1), got {h}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        k = _segment_count(h, o.size)
        oh = np.sort(o)[::-1][:k]
        sh = np.sort(s)[::-1][:k]
        total = oh.sum()
        return 100.0 * (sh - oh).sum() / total if total != 0 else np.nan

    return _rowwise(f, observation, simulation, "fhv")


@register_metric("flv")
def flv(*, observation: Any, simulation: Any, l: float = 0.3) -> Any:
    r"""Percent bias of the low-flow segment of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FLV} = -100\,\frac{\sum_{i=1}^{L}(\log S_i - \log S_L)
            - \sum_{i=1}^{L}(\log O_i - \log O_L)}{\sum_{i=1}^{L}(\log O_i - \log O_L)}

    :math:`O_i`, :math:`S_i`: the :math:`L = \max(1, \mathrm{round}(l\,n))` lowest flows of each
    FDC (exceedance probability above :math:`1 - l`, default :math:`l = 0.3`); index :math:`L`
    is the minimum flow. Flows :math:`\le 0` are replaced by ``LOG_FLOOR`` (1e-6) before the log.
    In %; NaN when the observed low segment is constant.

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). Water Resour. Res. 44, W09417.
    """
    if not 0 < l < 1:
        raise ValueError(f"flv: l must be in (0, 1), got {l}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        k = _segment_count(l, o.size)
        ol = np.log(np.maximum(np.sort(o)[:k], LOG_FLOOR))
        sl = np.log(np.maximum(np.sort(s)[:k], LOG_FLOOR))
        qol = np.sum(ol - ol.min())
        qsl = np.sum(sl - sl.min())
        return -100.0 * (qsl - qol) / qol if qol != 0 else np.nan

    return _rowwise(f, observation, simulation, "flv")


@register_metric("fms")
def fms(*, observation: Any, simulation: Any, lower: float = 0.2, upper: float = 0.7) -> Any:
    r"""Percent bias of the mid-segment slope of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FMS} = 100\,\frac{(\log S_{m_1} - \log S_{m_2}) - (\log O_{m_1} - \log O_{m_2})}
            {\log O_{m_1} - \log O_{m_2}}

    :math:`X_{m}` = flow exceeded with probability :math:`m`, i.e. the :math:`(1 - m)` quantile
    of the valid values (``numpy.quantile``, linear interpolation); :math:`m_1` = ``lower``
    (0.2), :math:`m_2` = ``upper`` (0.7). Flows :math:`\le 0` are replaced by ``LOG_FLOOR``. In %.

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). Water Resour. Res. 44, W09417.
    """
    if not 0 < lower < upper < 1:
        raise ValueError(f"fms: need 0 < lower < upper < 1, got {lower}, {upper}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        lo = np.log(np.maximum(np.quantile(o, [1 - lower, 1 - upper]), LOG_FLOOR))
        ls = np.log(np.maximum(np.quantile(s, [1 - lower, 1 - upper]), LOG_FLOOR))
        do, ds = lo[0] - lo[1], ls[0] - ls[1]
        return 100.0 * (ds - do) / do if do != 0 else np.nan

    return _rowwise(f, observation, simulation, "fms")


@register_metric("peak_timing")
def peak_timing(
    *,
    observation: Any,
    simulation: Any,
    window: int = 3,
    distance: int = 100,
    prominence: float | None = None,
) -> Any:
    r"""Mean absolute peak-timing error in time steps (Kratzert et al., 2021).

    Observed peaks :math:`p_k` are found with ``scipy.signal.find_peaks(o, distance=distance,
    prominence=prominence)`` (default prominence: the standard deviation of the observations);
    for each, the simulated peak is the argmax of the simulation within
    :math:`[p_k - w, p_k + w]` (``window`` :math:`w`, truncated at the series ends):

    .. math::
        \mathrm{PT} = \frac{1}{K}\sum_{k=1}^{K} \big|\operatorname{argmax}_{t \in [p_k - w,
            p_k + w]} s_t - p_k\big|

    Steps with a missing value are removed first (the valid steps are joined into one series,
    as in neuralhydrology). Multiply by the step length for time units. NaN without peaks.
    Typical settings: daily ``window=3``, hourly ``window=12``.

    Reference: Kratzert, F., Klotz, D., Hochreiter, S., Nearing, G. S. (2021). A note on
    leveraging synergy in multiple meteorological data sets with deep learning for
    rainfall–runoff modeling. HESS 25, 2685–2703.
    """
    if window < 0 or distance < 1:
        raise ValueError(f"peak_timing: need window ≥ 0 and distance ≥ 1, got {window}, {distance}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        if o.size < 3:
            return np.nan
        prom = np.std(o) if prominence is None else prominence
        peaks, _ = signal.find_peaks(o, distance=distance, prominence=prom)
        if peaks.size == 0:
            return np.nan
        errors = []
        for p in peaks:
            a, b = max(0, p - window), min(o.size, p + window + 1)
            errors.append(abs(a + int(np.argmax(s[a:b])) - p))
        return float(np.mean(errors))

    return _rowwise(f, observation, simulation, "peak_timing")


# ---------------------------------------------------------------------------- collections
def compute_metrics(
    *,
    observation: Any,
    simulation: Any,
    metrics: Iterable[str] | None = None,
    warmup_steps: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate several metrics per series.

    Args:
        observation, simulation: ``[T]`` or ``[..., T]`` arrays/tensors (same shape, same units).
        metrics: metric names (default: all registered, see :func:`list_metrics`).
        warmup_steps: number of leading time steps to drop (model spin-up).
        options: per-metric keyword options, e.g. ``{"peak_timing": {"window": 12}}``.

    Returns:
        ``{name: values}`` with values of the leading shape (0-d for ``[T]`` input).
    """
    names = list_metrics() if metrics is None else [m.lower() for m in metrics]
    unknown = sorted(n for n in names if n not in METRICS)
    if unknown:
        raise ValueError(
            f"compute_metrics: unknown metric(s) {unknown}; available {list_metrics()}"
        )
    options = dict(options or {})
    bad = sorted(set(options) - set(names))
    if bad:
        raise ValueError(f"compute_metrics: options given for metric(s) {bad} not requested")
    obs, sim, lead = _prepare(observation, simulation, "compute_metrics", warmup_steps)
    obs = obs.reshape(*lead, obs.shape[-1])
    sim = sim.reshape(*lead, sim.shape[-1])
    return {
        name: np.asarray(
            METRICS.get(name)(observation=obs, simulation=sim, **options.get(name, {}))
        )
        for name in names
    }


def summarize(metrics: Mapping[str, Any]) -> dict[str, dict[str, float | int]]:
    """NaN-ignoring summary per metric: ``{name: {"median", "mean", "count"}}``.

    ``count`` is the number of finite values; median and mean are NaN (without a warning) when
    it is 0.
    """
    out: dict[str, dict[str, float | int]] = {}
    for name, values in metrics.items():
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        v = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
        v = v[np.isfinite(v)]
        out[name] = {
            "median": float(np.median(v)) if v.size else float("nan"),
            "mean": float(np.mean(v)) if v.size else float("nan"),
            "count": int(v.size),
        }
    return out
