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

NSE, KGE, Pearson r, RMSE, FHV, FLV, FMS and peak timing follow the definitions of
neuralhydrology (``neuralhydrology.evaluation.metrics``: ``nse``, ``kge``, ``pearsonr``,
``rmse``, ``fdc_fhv``, ``fdc_flv``, ``fdc_fms``, ``mean_peak_timing``). They differ only in edge
cases, each stated in the metric's docstring and in ``docs/metrics.md``: negative *observed*
flows are floored like simulated ones before logarithms (neuralhydrology takes their log: NaN);
a flat observed FDC segment gives NaN (neuralhydrology divides by 1e-6); FHV/FLV use at least
one flow when ``round(fraction·n)`` is 0; peak timing works on time-step positions of a regular
series (neuralhydrology on datetime coordinates).
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

#: added to the denominators of FLV and FMS, as in neuralhydrology (keeps agreement with it)
REFERENCE_EPS = 1e-6

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
    func: Callable[..., float],
    observation: Any,
    simulation: Any,
    owner: str,
    *,
    with_steps: bool = False,
) -> Any:
    """Apply ``func(obs_valid, sim_valid)`` to each series' jointly finite steps.

    With ``with_steps=True`` the call is ``func(obs_valid, sim_valid, steps)``, ``steps`` being
    the original time-step index of each valid value (to see gaps left by missing values).
    """
    obs, sim, lead = _prepare(observation, simulation, owner)
    out = np.full(obs.shape[0], np.nan)
    valid = np.isfinite(obs) & np.isfinite(sim)
    for i in range(obs.shape[0]):
        o, s = obs[i, valid[i]], sim[i, valid[i]]
        if o.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                if with_steps:
                    out[i] = func(o, s, np.flatnonzero(valid[i]))
                else:
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

    Dimensionless; range :math:`(-\infty, 1]`, 1 = perfect, 0 = as good as the observed mean.
    NaN with fewer than 2 valid steps or zero observed variance.

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

    with :math:`r` the Pearson correlation and population standard deviations :math:`\sigma`.
    Dimensionless; range :math:`(-\infty, 1]`, 1 = perfect. NaN when a statistic is undefined
    (fewer than 2 steps, zero variance of either series, zero observed mean).

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
    cross-correlated). Dimensionless; range :math:`(-\infty, 1]`, 1 = perfect.

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
    r"""Pearson correlation coefficient between simulation and observation (dimensionless).

    .. math::
        r = \frac{\sum_t (s_t - \bar s)(o_t - \bar o)}
            {\sqrt{\sum_t (s_t - \bar s)^2}\,\sqrt{\sum_t (o_t - \bar o)^2}}

    Range :math:`[-1, 1]`, 1 = perfect linear agreement (timing and shape, not volume). NaN with
    fewer than 2 valid steps or a constant series. The :math:`r` term of KGE.

    Reference: Pearson, K. (1895). Notes on regression and inheritance in the case of two
    parents. Proc. R. Soc. Lond. 58, 240–242.
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        return _kge_parts(o, s)[0] if o.size >= 2 else np.nan

    return _rowwise(f, observation, simulation, "pearson_r")


@register_metric("log_nse")
def log_nse(*, observation: Any, simulation: Any, epsilon: float | None = None) -> Any:
    r"""NSE of log-transformed flows (emphasises low flows).

    .. math::
        \mathrm{NSE}_{\log} = \mathrm{NSE}\big(\log(\max(o, 0) + \varepsilon),
            \log(\max(s, 0) + \varepsilon)\big)

    Dimensionless; range :math:`(-\infty, 1]`, 1 = perfect.

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
    r"""Root-mean-square error, in the discharge units of the inputs (m³/s in ``metrics.csv``).

    .. math::
        \mathrm{RMSE} = \sqrt{\tfrac{1}{T}\sum_t (s_t - o_t)^2}

    Range :math:`[0, \infty)`, 0 = perfect.

    Reference: Gupta, H. V., Kling, H., Yilmaz, K. K., Martinez, G. F. (2009). Decomposition of
    the mean squared error and NSE performance criteria. J. Hydrol. 377, 80–91 (the MSE and
    its decomposition).
    """
    return _rowwise(lambda o, s: np.sqrt(np.mean((s - o) ** 2)), observation, simulation, "rmse")


@register_metric("pbias")
def pbias(*, observation: Any, simulation: Any) -> Any:
    r"""Percent bias of the total volume, in %; positive = the simulation is too high.

    .. math::
        \mathrm{PBIAS} = 100\,\frac{\sum_t (s_t - o_t)}{\sum_t o_t}

    Range :math:`[-100, \infty)` for non-negative flows, 0 = no volume bias; NaN when
    :math:`\sum_t o_t = 0`. Equal to :math:`100(\beta - 1)` with the KGE's :math:`\beta`.

    Reference: Moriasi, D. N., et al. (2007). Model evaluation guidelines for systematic
    quantification of accuracy in watershed simulations. Trans. ASABE 50, 885–900. Moriasi et al.
    use the opposite sign (:math:`\sum (o - s)`, positive = underestimation); gnnhydro's sign
    follows FHV/FLV/FMS, where positive also means "too much".
    """

    def f(o: np.ndarray, s: np.ndarray) -> float:
        total = o.sum()
        return 100.0 * (s - o).sum() / total if total != 0 else np.nan

    return _rowwise(f, observation, simulation, "pbias")


def _segment_count(fraction: float, n: int) -> int:
    return max(1, int(np.round(fraction * n)))


def _fdc(x: np.ndarray) -> np.ndarray:
    """Flow-duration curve: the flows sorted in decreasing order."""
    return np.sort(x)[::-1]


def _log_flows(x: np.ndarray) -> np.ndarray:
    """Natural log of flows, with flows :math:`\\le 0` replaced by ``LOG_FLOOR``."""
    return np.log(np.where(x > 0, x, LOG_FLOOR))


@register_metric("fhv")
def fhv(*, observation: Any, simulation: Any, h: float = 0.02) -> Any:
    r"""Percent bias of the high-flow segment of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FHV} = 100\,\frac{\sum_{i=1}^{H} (S_i - O_i)}{\sum_{i=1}^{H} O_i}

    :math:`O_i`, :math:`S_i`: observed/simulated flows each sorted in decreasing order (the FDCs);
    :math:`H = \max(1, \mathrm{round}(h\,n))` highest flows, exceedance probability below
    :math:`h` (default 0.02), :math:`n` valid steps. In %, range :math:`[-100, \infty)` for
    non-negative flows, 0 = perfect; positive = peaks too high.

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). A process-based diagnostic
    approach to model evaluation: Application to the NWS distributed hydrologic model. Water
    Resour. Res. 44, W09417.
    """
    if not 0 < h < 1:
        raise ValueError(f"fhv: h must be in (0, 1), got {h}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        k = _segment_count(h, o.size)
        oh, sh = _fdc(o)[:k], _fdc(s)[:k]
        total = oh.sum()
        return 100.0 * (sh - oh).sum() / total if total != 0 else np.nan

    return _rowwise(f, observation, simulation, "fhv")


@register_metric("flv")
def flv(*, observation: Any, simulation: Any, l: float = 0.3) -> Any:
    r"""Percent bias of the low-flow segment of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FLV} = -100\,\frac{\sum_{i=1}^{L}(\log S_i - \log S_L)
            - \sum_{i=1}^{L}(\log O_i - \log O_L)}{\sum_{i=1}^{L}(\log O_i - \log O_L)
            + \epsilon}

    :math:`O_i`, :math:`S_i`: the :math:`L = \max(1, \mathrm{round}(l\,n))` lowest flows of each
    FDC (exceedance probability above :math:`1 - l`, default :math:`l = 0.3`); index :math:`L`
    is the minimum flow. Flows :math:`\le 0` are replaced by ``LOG_FLOOR`` (1e-6) before the
    natural log (neuralhydrology does so for simulated flows and observed zeros; a negative
    observation gives NaN there); :math:`\epsilon` = ``REFERENCE_EPS`` (1e-6), as in
    neuralhydrology. In %, range :math:`(-\infty, 100]`, 0 = perfect; the sign follows Yilmaz
    et al.: positive when the simulated low-flow segment is *flatter* (less log-range above its
    minimum) than the observed one. NaN when the observed low segment is constant
    (neuralhydrology divides by :math:`\epsilon`).

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). Water Resour. Res. 44, W09417.
    """
    if not 0 < l < 1:
        raise ValueError(f"flv: l must be in (0, 1), got {l}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        k = _segment_count(l, o.size)
        ol, sl = _log_flows(_fdc(o)[-k:]), _log_flows(_fdc(s)[-k:])
        qol = np.sum(ol - ol.min())
        qsl = np.sum(sl - sl.min())
        return -100.0 * (qsl - qol) / (qol + REFERENCE_EPS) if qol > 0 else np.nan

    return _rowwise(f, observation, simulation, "flv")


def _fdc_index(fraction: float, n: int) -> int:
    """0-based position in the decreasing FDC of the flow at exceedance ``fraction``."""
    return min(int(np.round(fraction * n)), n - 1)


@register_metric("fms")
def fms(*, observation: Any, simulation: Any, lower: float = 0.2, upper: float = 0.7) -> Any:
    r"""Percent bias of the mid-segment slope of the flow-duration curve (Yilmaz et al., 2008).

    .. math::
        \mathrm{FMS} = 100\,\frac{(\log S_{(i)} - \log S_{(j)}) - (\log O_{(i)} - \log O_{(j)})}
            {\log O_{(i)} - \log O_{(j)} + \epsilon}, \quad
        i = \mathrm{round}(m_1 n), \; j = \mathrm{round}(m_2 n)

    :math:`X_{(k)}`: the :math:`k`-th flow (0-based) of the FDC, i.e. the :math:`n` valid flows
    sorted in decreasing order, so :math:`X_{(i)}` is the flow exceeded a fraction :math:`\approx
    m` of the time; :math:`m_1` = ``lower`` (0.2), :math:`m_2` = ``upper`` (0.7);
    ``round`` = NumPy's round half to even, and an index is capped at :math:`n - 1`. No
    interpolation between ranks (this is neuralhydrology's ``fdc_fms``). Flows :math:`\le 0`
    are replaced by ``LOG_FLOOR`` (1e-6) before the natural log (neuralhydrology: simulated
    flows and observed zeros only); :math:`\epsilon` = ``REFERENCE_EPS`` (1e-6), as in
    neuralhydrology. In %, range :math:`[-100, \infty)`, 0 = perfect; positive = the simulated
    mid-segment is steeper (flashier) than the observed one. NaN when the observed mid-segment
    is flat, :math:`O_{(i)} = O_{(j)}` (neuralhydrology divides by :math:`\epsilon`).

    Reference: Yilmaz, K. K., Gupta, H. V., Wagener, T. (2008). Water Resour. Res. 44, W09417.
    """
    if not 0 < lower < upper < 1:
        raise ValueError(f"fms: need 0 < lower < upper < 1, got {lower}, {upper}")

    def f(o: np.ndarray, s: np.ndarray) -> float:
        ij = [_fdc_index(lower, o.size), _fdc_index(upper, o.size)]
        lo, ls = _log_flows(_fdc(o)[ij]), _log_flows(_fdc(s)[ij])
        do, ds = lo[0] - lo[1], ls[0] - ls[1]
        return 100.0 * (ds - do) / (do + REFERENCE_EPS) if do > 0 else np.nan

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
    r"""Mean absolute peak-timing error, in time steps (days for daily data; Kratzert et al., 2021).

    1. Missing steps (either series) are removed and the valid steps joined into one series.
    2. Observed peaks :math:`p_k` = ``scipy.signal.find_peaks(o, distance=distance,
       prominence=prominence)``; default prominence: the (population) standard deviation of the
       valid observations. ``distance`` = 100 steps keeps only the highest of peaks closer than
       that.
    3. A peak is skipped when its window :math:`[p_k - w, p_k + w]` (``window`` :math:`w`)
       leaves the series or spans a removed (missing) step.
    4. The simulated peak :math:`q_k` is :math:`p_k` itself when the simulation has a strict
       local maximum there (:math:`s_{p_k} > s_{p_k \pm 1}`), otherwise the first argmax of the
       simulation within the window.

    .. math::
        \mathrm{PT} = \frac{1}{K}\sum_{k=1}^{K} |q_k - p_k|

    over the :math:`K` peaks not skipped. Range :math:`[0, w]`, 0 = perfect; NaN without peaks.
    Multiply by the step length for time units. Typical settings: daily ``window=3``, hourly
    ``window=12`` (neuralhydrology's defaults: 12 h, at least 3 steps). This is
    neuralhydrology's ``mean_peak_timing`` on a regular time axis.

    Reference: Kratzert, F., Klotz, D., Hochreiter, S., Nearing, G. S. (2021). A note on
    leveraging synergy in multiple meteorological data sets with deep learning for
    rainfall–runoff modeling. HESS 25, 2685–2703 (appendix).
    """
    if window < 0 or distance < 1:
        raise ValueError(f"peak_timing: need window ≥ 0 and distance ≥ 1, got {window}, {distance}")

    def f(o: np.ndarray, s: np.ndarray, steps: np.ndarray) -> float:
        if o.size < 3:
            return np.nan
        prom = np.std(o) if prominence is None else prominence
        peaks, _ = signal.find_peaks(o, distance=distance, prominence=prom)
        errors = []
        for p in peaks:  # find_peaks never returns the first or last step: p ± 1 exist
            a, b = p - window, p + window
            if a < 0 or b >= o.size or steps[b] - steps[a] != 2 * window:
                continue
            if s[p] > s[p - 1] and s[p] > s[p + 1]:
                errors.append(0)
            else:
                errors.append(abs(a + int(np.argmax(s[a : b + 1])) - p))
        return float(np.mean(errors)) if errors else np.nan

    return _rowwise(f, observation, simulation, "peak_timing", with_steps=True)


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
