"""The two forecasts a learned one must beat: persistence and a per-dimension linear trend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sematlas.analysis.forecasting.series import Forecast, YearlySeries


def persistence_forecast(series: YearlySeries, cutoff: int, years: Sequence[int]) -> Forecast:
    """Every year looks like the last observed year up to ``cutoff`` (its mean and shrunk covariance).

    Parameters
    ----------
    series : YearlySeries
    cutoff : int
    years : sequence of int
        Years to forecast.

    Returns
    -------
    Forecast
    """
    last = series.index(series.training_years(cutoff, 1)[-1])
    horizon = len(years)
    return Forecast(
        np.asarray(years, dtype=int),
        np.repeat(series.mean[last][None], horizon, 0),
        np.repeat(series.cov[last][None], horizon, 0),
    )


def pooled_covariance(series: YearlySeries, years: Sequence[int]) -> np.ndarray:
    """Pooled within-year covariance ``(latent, latent)`` over ``years``.

    ``sum_t n_t S_t / (sum_t n_t - T)`` with ``S_t`` the maximum-likelihood
    covariance of year ``t`` and ``T`` the number of years: the unbiased covariance
    of the studies around their own year's mean. It pools every training study, so
    it needs no shrinkage.
    """
    rows = [series.index(year) for year in years]
    n = series.n[rows].astype(float)
    scatter = (n[:, None, None] * series.sample_cov[rows]).sum(0)
    return scatter / (n.sum() - len(rows))


def linear_trend_forecast(series: YearlySeries, cutoff: int, years: Sequence[int]) -> Forecast:
    """Per-dimension least-squares line through the observed yearly means up to ``cutoff``.

    The covariance is the pooled within-year covariance of those years, the same for
    every forecast year. Years at or before the cutoff give the in-sample fit.

    Parameters
    ----------
    series : YearlySeries
    cutoff : int
    years : sequence of int

    Returns
    -------
    Forecast
    """
    train = series.training_years(cutoff, 2)
    slope, intercept = np.polyfit(train.astype(float), series.mean[[series.index(y) for y in train]], 1)
    targets = np.asarray(years, dtype=int)
    mean = intercept[None, :] + targets[:, None].astype(float) * slope[None, :]
    return Forecast(targets, mean, np.repeat(pooled_covariance(series, list(train))[None], len(targets), 0))
