"""Chronological latent series, their forecast, and the "Zeitgeist" timeline (stage 08).

Every study is a point in a model's latent space and has a publication year, so
each year of Neurosynth v7 (1997-2018) is a cloud of latent codes. The package

- summarises each year by the mean and covariance of its study latents
  (:mod:`~sematlas.analysis.forecasting.series`), overall and per task category;
- forecasts the years after a cutoff from the years up to it with three methods:
  a trajectory GRU (:mod:`~sematlas.analysis.forecasting.forecaster`, trained by
  teacher forcing and rolled out autoregressively), persistence (the last observed
  year) and a per-dimension linear trend with the pooled within-year covariance
  (:mod:`~sematlas.analysis.forecasting.baselines`);
- scores each forecast by the Fréchet distance between the forecast Gaussian and
  the observed study latents of every held-out year
  (:mod:`~sematlas.analysis.forecasting.scoring`);
- computes what the timeline draws: cluster and topic prevalence over years and the
  decoded map of one task category as the conditional model's year input moves
  (:mod:`~sematlas.analysis.forecasting.timeline`).

The figures are in :mod:`sematlas.reporting.forecasting`. Neurosynth v7 stops in
2018, so with the default cutoff (2014) four years are held out, the last of them
incomplete.
"""

from sematlas.analysis.forecasting.baselines import linear_trend_forecast, persistence_forecast, pooled_covariance
from sematlas.analysis.forecasting.forecaster import (
    TrajectoryGRU,
    TrajectoryModule,
    fit_trajectory_gru,
    gaussian_nll,
    gru_forecast,
    gru_inputs,
)
from sematlas.analysis.forecasting.scoring import METHODS, NOTE, frechet_by_year
from sematlas.analysis.forecasting.series import (
    Forecast,
    YearlySeries,
    series_table,
    yearly_series,
    yearly_series_by_group,
)
from sematlas.analysis.forecasting.timeline import cluster_prevalence, drift_maps, topic_prevalence, write_drift_maps

__all__ = [
    "METHODS",
    "NOTE",
    "Forecast",
    "TrajectoryGRU",
    "TrajectoryModule",
    "YearlySeries",
    "cluster_prevalence",
    "drift_maps",
    "fit_trajectory_gru",
    "frechet_by_year",
    "gaussian_nll",
    "gru_forecast",
    "gru_inputs",
    "linear_trend_forecast",
    "persistence_forecast",
    "pooled_covariance",
    "series_table",
    "topic_prevalence",
    "write_drift_maps",
    "yearly_series",
    "yearly_series_by_group",
]
