"""How close a forecast came: the Fréchet distance to the observed latents of each held-out year.

The distance (Heusel et al., 2017;
:func:`sematlas.evaluation.generative.gaussian_frechet_distance`) is between the
forecast Gaussian and a Gaussian fitted to the observed study latents of the year.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from sematlas.analysis.forecasting.series import Forecast
from sematlas.evaluation.generative import gaussian_frechet_distance

#: Forecasting methods in reporting order: the model first, then the two baselines.
METHODS = ("gru", "persistence", "linear_trend")

#: Said in every results file: the held-out years end where the database does.
NOTE = (
    "Neurosynth v7 stops in 2018 (its last year is incomplete): the held-out years run from the "
    "cutoff to 2018 and nothing later can be scored."
)


def frechet_by_year(
    latents: np.ndarray, years: np.ndarray, forecasts: Mapping[str, Forecast], cutoff: int, min_studies: int
) -> pd.DataFrame:
    """Fréchet distance of every forecast to the observed study latents of each held-out year.

    Parameters
    ----------
    latents : ndarray, shape (studies, latent)
    years : ndarray, shape (studies,)
    forecasts : mapping
        Method name -> :class:`~sematlas.analysis.forecasting.series.Forecast`.
    cutoff : int
        Only years after it are scored.
    min_studies : int
        Years with fewer studies are not scored.

    Returns
    -------
    DataFrame
        ``year``, ``n``, ``method``, ``frechet`` and ``mean_term`` (its
        ``||mu_forecast - mu_observed||^2`` part), one row per year and method.
    """
    years = np.asarray(years).astype(int)
    held_out = sorted(set.intersection(*[set(f.years[f.years > cutoff].tolist()) for f in forecasts.values()]))
    rows = []
    for year in held_out:
        observed = np.asarray(latents, dtype=np.float64)[years == year]
        if len(observed) < min_studies:
            continue
        for method, forecast in forecasts.items():
            mean, cov = forecast.at(year)
            rows.append(
                {
                    "year": year,
                    "n": len(observed),
                    "method": method,
                    "frechet": gaussian_frechet_distance(observed.mean(0), np.cov(observed, rowvar=False), mean, cov),
                    "mean_term": float(((observed.mean(0) - mean) ** 2).sum()),
                }
            )
    return pd.DataFrame(rows, columns=["year", "n", "method", "frechet", "mean_term"])
