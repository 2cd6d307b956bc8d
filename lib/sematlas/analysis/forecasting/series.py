"""Yearly latent distributions and the Gaussian forecasts of them.

Each year of Neurosynth v7 (1997-2018) is summarised by the mean and covariance of
its study latents (:func:`yearly_series`), overall and per task category.
Covariances are Ledoit-Wolf shrinkage estimates (Ledoit & Wolf, 2004): early years
hold a handful of studies, fewer than latent dimensions, and the plain sample
covariance is then singular. A year with fewer than ``min_studies`` studies has no
estimate at all (NaN, ``observed`` false) and is reported as dropped. A
:class:`Forecast` is what every forecasting method returns: a Gaussian per year.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.covariance import ledoit_wolf

from sematlas.analysis.clustering import latent_columns
from sematlas.core.metadata import YEAR_RANGE


@dataclass(frozen=True)
class YearlySeries:
    """Per-year distribution of study latents.

    Attributes
    ----------
    years : ndarray, shape (years,)
        Every calendar year of the range, observed or not.
    n : ndarray, shape (years,)
        Studies per year.
    mean : ndarray, shape (years, latent)
        Mean latent; NaN for a year that is not observed.
    cov : ndarray, shape (years, latent, latent)
        Ledoit-Wolf shrinkage covariance; NaN for a year that is not observed.
    sample_cov : ndarray, shape (years, latent, latent)
        Maximum-likelihood (``ddof=0``) covariance, the sufficient statistic of the
        Gaussian likelihood and of the pooled covariance; NaN where not observed.
    shrinkage : ndarray, shape (years,)
        Ledoit-Wolf shrinkage intensity towards the scaled identity (0: none, 1: all).
    min_studies : int
        A year is observed when it has at least this many studies.
    """

    years: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    sample_cov: np.ndarray
    shrinkage: np.ndarray
    min_studies: int

    @property
    def observed(self) -> np.ndarray:
        """``(years,)`` bool: enough studies for an estimate."""
        return self.n >= self.min_studies

    @property
    def latent_dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def variance(self) -> np.ndarray:
        """``(years, latent)`` maximum-likelihood per-dimension variances (the diagonal of ``sample_cov``)."""
        return np.diagonal(self.sample_cov, axis1=1, axis2=2)

    def index(self, year: int) -> int:
        """Row of ``year`` in the series."""
        return int(year) - int(self.years[0])

    def observed_years(self, until: int | None = None) -> np.ndarray:
        """Observed years, optionally only those up to and including ``until``."""
        years = self.years[self.observed]
        return years if until is None else years[years <= until]

    def training_years(self, cutoff: int, at_least: int) -> np.ndarray:
        """The observed years up to ``cutoff``, which a forecast from that cutoff may learn from.

        Raises
        ------
        ValueError
            Fewer than ``at_least`` of them.
        """
        years = self.observed_years(until=cutoff)
        if len(years) < at_least:
            raise ValueError(
                f"{len(years)} observed year(s) up to {cutoff} (at least {self.min_studies} studies each); "
                f"need {at_least}"
            )
        return years


def yearly_series(
    latents: np.ndarray, years: np.ndarray, min_studies: int, year_range: tuple[int, int] = YEAR_RANGE
) -> YearlySeries:
    """Mean and covariance of the study latents of every year in ``year_range``.

    Parameters
    ----------
    latents : ndarray, shape (studies, latent)
    years : ndarray, shape (studies,)
        Publication year of each study.
    min_studies : int
        Years with fewer studies get no estimate (at least 2: a covariance needs two points).
    year_range : (int, int)
        First and last year, inclusive.

    Returns
    -------
    YearlySeries
    """
    if min_studies < 2:
        raise ValueError(f"min_studies must be at least 2 to estimate a covariance, got {min_studies}")
    latents = np.asarray(latents, dtype=np.float64)
    years = np.asarray(years).astype(int)
    outside = sorted(set(years[(years < year_range[0]) | (years > year_range[1])].tolist()))
    if outside:
        raise ValueError(f"years {outside} fall outside {year_range[0]}-{year_range[1]}")
    calendar = np.arange(year_range[0], year_range[1] + 1)
    d = latents.shape[1]
    n = np.array([(years == year).sum() for year in calendar])
    mean = np.full((len(calendar), d), np.nan)
    cov = np.full((len(calendar), d, d), np.nan)
    sample_cov = np.full((len(calendar), d, d), np.nan)
    shrinkage = np.full(len(calendar), np.nan)
    for t, year in enumerate(calendar):
        if n[t] < min_studies:
            continue
        points = latents[years == year]
        mean[t] = points.mean(0)
        sample_cov[t] = np.cov(points, rowvar=False, ddof=0).reshape(d, d)
        cov[t], shrinkage[t] = ledoit_wolf(points)
    return YearlySeries(calendar, n, mean, cov, sample_cov, shrinkage, int(min_studies))


def yearly_series_by_group(
    frame: pd.DataFrame, min_studies: int, group: str = "task_category"
) -> dict[str, YearlySeries]:
    """The series of all studies (``"all"``) and of each value of ``group``.

    Parameters
    ----------
    frame : DataFrame
        ``year``, ``group`` and the latent columns ``z_00`` ...
    min_studies : int
    group : str

    Returns
    -------
    dict
        ``"all"`` first, then the groups in sorted order.
    """
    columns = latent_columns(frame)
    series = {"all": yearly_series(frame[columns].to_numpy(), frame["year"].to_numpy(), min_studies)}
    for name, part in sorted(frame.groupby(group), key=lambda item: str(item[0])):
        series[str(name)] = yearly_series(part[columns].to_numpy(), part["year"].to_numpy(), min_studies)
    return series


def series_table(series: Mapping[str, YearlySeries]) -> pd.DataFrame:
    """Tidy table of several series: one row per (group, year).

    Columns: ``group``, ``year``, ``n``, ``observed``, ``shrinkage``, ``mean_00`` ...,
    ``var_00`` ... (shrunk variances) and ``cov`` (the shrunk covariance, row-major
    ``latent * latent`` floats; NaN where not observed).
    """
    frames = []
    for name, s in series.items():
        d = s.latent_dim
        frame = pd.DataFrame({"group": name, "year": s.years, "n": s.n, "observed": s.observed})
        frame["shrinkage"] = s.shrinkage
        means = pd.DataFrame(s.mean, columns=[f"mean_{k:02d}" for k in range(d)])
        variances = pd.DataFrame(np.diagonal(s.cov, axis1=1, axis2=2), columns=[f"var_{k:02d}" for k in range(d)])
        frame = pd.concat([frame, means, variances], axis=1)
        frame["cov"] = list(s.cov.reshape(len(s.years), d * d))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class Forecast:
    """Gaussian forecasts of several years.

    Attributes
    ----------
    years : ndarray, shape (horizon,)
    mean : ndarray, shape (horizon, latent)
    cov : ndarray, shape (horizon, latent, latent)
    """

    years: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    def at(self, year: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(latent,)`` and covariance ``(latent, latent)`` forecast for ``year``."""
        (index,) = np.flatnonzero(self.years == year)
        return self.mean[index], self.cov[index]
