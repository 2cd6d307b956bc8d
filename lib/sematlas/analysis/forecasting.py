"""Chronological latent series, their forecast, and the "Zeitgeist" timeline (stage 08).

Every study is a point in a model's latent space and has a publication year, so
each year of Neurosynth v7 (1997-2018) is a cloud of latent codes. This module

- summarises each year by the mean and covariance of its study latents
  (:func:`yearly_series`), overall and per task category. Covariances are
  Ledoit-Wolf shrinkage estimates (Ledoit & Wolf, 2004): early years hold a
  handful of studies, fewer than latent dimensions, and the plain sample
  covariance is then singular. A year with fewer than ``min_studies`` studies has
  no estimate at all (NaN, ``observed`` false) and is reported as dropped;
- forecasts the years after a cutoff from the years up to it with three methods:
  a trajectory GRU (:class:`TrajectoryGRU`, trained by teacher forcing and rolled
  out autoregressively), persistence (the last observed year) and a per-dimension
  linear trend with the pooled within-year covariance;
- scores each forecast by the Fréchet distance (Heusel et al., 2017;
  :func:`sematlas.evaluation.generative.gaussian_frechet_distance`) between the forecast Gaussian and
  the observed study latents of every held-out year;
- draws the timeline: cluster and topic prevalence over years and the decoded map
  of one task category as the conditional model's year input moves
  (:func:`drift_maps`).

Neurosynth v7 stops in 2018, so with the default cutoff (2014) four years are
held out, the last of them incomplete.
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.covariance import ledoit_wolf
from torch import nn

from sematlas.analysis.clustering import NOISE, latent_columns
from sematlas.core.io import atomic_path
from sematlas.core.metadata import YEAR_RANGE
from sematlas.evaluation.generative import gaussian_frechet_distance
from sematlas.inference.atlas import AtlasModel
from sematlas.pipeline.registry import writer

#: Forecasting methods in reporting order: the model first, then the two baselines.
METHODS = ("gru", "persistence", "linear_trend")

#: Said in every results file: the held-out years end where the database does.
NOTE = (
    "Neurosynth v7 stops in 2018 (its last year is incomplete): the held-out years run from the "
    "cutoff to 2018 and nothing later can be scored."
)


# ----------------------------------------------------------------- yearly series
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


# --------------------------------------------------------------------- forecasts
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


def _training_years(series: YearlySeries, cutoff: int, at_least: int) -> np.ndarray:
    years = series.observed_years(until=cutoff)
    if len(years) < at_least:
        raise ValueError(
            f"{len(years)} observed year(s) up to {cutoff} (at least {series.min_studies} studies each); "
            f"need {at_least}"
        )
    return years


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
    last = series.index(_training_years(series, cutoff, 1)[-1])
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
    train = _training_years(series, cutoff, 2)
    slope, intercept = np.polyfit(train.astype(float), series.mean[[series.index(y) for y in train]], 1)
    targets = np.asarray(years, dtype=int)
    mean = intercept[None, :] + targets[:, None].astype(float) * slope[None, :]
    return Forecast(targets, mean, np.repeat(pooled_covariance(series, list(train))[None], len(targets), 0))


# ------------------------------------------------------------------ trajectory GRU
class TrajectoryGRU(nn.Module):
    """A GRU over yearly latent summaries that predicts next year's diagonal Gaussian.

    The input of a year is its mean and the log of its maximum-likelihood
    per-dimension variances, ``2 * latent`` numbers: the same quantities as the
    output and the likelihood targets, so a rollout that feeds forecasts back in
    stays on the inputs it was trained on (one variance per dimension needs no
    shrinkage at ``min_studies`` studies). A full covariance has
    ``latent (latent + 1) / 2`` entries, more than there are training years, so the
    GRU forecasts only the variances (a diagonal covariance): the latents of a VAE
    with a factorised prior are close to uncorrelated. The output is a change added
    to the input (a residual), and the head starts at zero, so an untrained GRU is
    the persistence forecast of the mean and variances.

    Parameters
    ----------
    latent_dim : int
    hidden_size : int
    """

    def __init__(self, latent_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.gru = nn.GRU(2 * latent_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 2 * latent_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, inputs: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next year's mean and log-variances from this year's.

        Parameters
        ----------
        inputs : Tensor, shape (batch, steps, 2 * latent)
            Per year ``[mean, log-variance]``.
        hidden : Tensor, shape (1, batch, hidden), optional
            The state after the years before these.

        Returns
        -------
        mean : Tensor, shape (batch, steps, latent)
        logvar : Tensor, shape (batch, steps, latent)
        hidden : Tensor, shape (1, batch, hidden)
        """
        output, hidden = self.gru(inputs, hidden)
        predicted = inputs + self.head(output)
        return predicted[..., : self.latent_dim], predicted[..., self.latent_dim :], hidden


def gaussian_nll(
    mean: torch.Tensor, logvar: torch.Tensor, target_mean: torch.Tensor, target_var: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """Mean negative log-likelihood per study of next-year study latents under diagonal Gaussians.

    For the ``n_t`` studies of year ``t`` with mean ``m`` and maximum-likelihood
    variances ``v``, the summed NLL under ``N(mu, diag(sigma^2))`` is exactly
    ``n_t / 2 * sum_d [log 2 pi + log sigma_d^2 + ((m_d - mu_d)^2 + v_d) / sigma_d^2]``,
    so the likelihood of every study (the mean-variance estimation loss of Nix &
    Weigend, 1994) needs only the yearly moments.

    Parameters
    ----------
    mean, logvar : Tensor, shape (..., steps, latent)
        Forecast.
    target_mean, target_var : Tensor, shape (..., steps, latent)
        Observed moments of the target years (anything finite where ``n`` is 0).
    n : Tensor, shape (..., steps)
        Studies per target year; 0 masks a year that is not observed.

    Returns
    -------
    Tensor, scalar
    """
    per_study = 0.5 * (np.log(2 * np.pi) + logvar + ((target_mean - mean) ** 2 + target_var) * torch.exp(-logvar))
    return (n * per_study.sum(-1)).sum() / n.sum()


def gru_inputs(series: YearlySeries, start: int, stop: int) -> np.ndarray:
    """Teacher-forcing inputs ``(stop - start + 1, 2 * latent)`` for the years ``start`` ... ``stop``.

    ``[mean, log-variance]`` of each year; a year that is not observed carries the
    last observed year forward (``start`` must be observed).
    """
    rows = []
    summary = np.concatenate([series.mean, np.log(series.variance)], axis=1)
    for year in range(start, stop + 1):
        t = series.index(year)
        if series.observed[t]:
            rows.append(summary[t])
        elif not rows:
            raise ValueError(f"the first input year {start} is not observed")
        else:
            rows.append(rows[-1])
    return np.stack(rows)


class TrajectoryModule(pl.LightningModule):
    """Teacher-forced training of a :class:`TrajectoryGRU` on one yearly sequence.

    A batch is ``(inputs, target_mean, target_var, n)``, shapes ``(1, steps, 2 * latent)``,
    ``(1, steps, latent)`` twice and ``(1, steps)``; the loss is :func:`gaussian_nll`.
    """

    def __init__(self, model: TrajectoryGRU, lr: float) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, target_mean, target_var, n = batch
        mean, logvar, _ = self.model(inputs)
        loss = gaussian_nll(mean, logvar, target_mean, target_var, n)
        self.log("train/nll", loss, prog_bar=False, on_epoch=True, on_step=False, batch_size=1)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def fit_trajectory_gru(
    series: YearlySeries, cutoff: int, window: int, hidden_size: int, max_epochs: int, lr: float, seed: int
) -> tuple[TrajectoryGRU, float]:
    """Train a :class:`TrajectoryGRU` on the years from the first observed one to ``cutoff``.

    Teacher forcing on overlapping windows: the training sequence (inputs
    :func:`gru_inputs`, targets the next year's observed moments) is cut into every
    run of ``window`` consecutive years, each read from a zero state. A GRU fed the
    one whole sequence can memorise where in it each year sits and replay the year
    to year noise of a couple of dozen points; a window leaves it only the recent
    past to predict from, the same context the rollout (:func:`gru_forecast`) gives
    it. Targets that are not observed are masked out; nothing after ``cutoff`` is
    seen. Full-batch Adam, one step per epoch, gradients clipped at norm 1, seeded
    and deterministic.

    Parameters
    ----------
    series : YearlySeries
    cutoff : int
        Last year whose studies the GRU may see.
    window : int
        Years per training window (all of them when the sequence is shorter).
    hidden_size, max_epochs : int
    lr : float
    seed : int

    Returns
    -------
    model : TrajectoryGRU
        In eval mode.
    nll : float
        Final training NLL per study.
    """
    train = _training_years(series, cutoff, 2)
    start = int(train[0])
    inputs = gru_inputs(series, start, cutoff - 1)
    targets = [series.index(year) for year in range(start + 1, cutoff + 1)]
    observed = series.observed[targets]
    target_mean = np.where(observed[:, None], series.mean[targets], 0.0)
    target_var = np.where(observed[:, None], series.variance[targets], 1.0)
    n = np.where(observed, series.n[targets], 0)
    length = min(window, len(inputs))
    starts = range(len(inputs) - length + 1)
    tensors = [
        torch.as_tensor(np.stack([a[i : i + length] for i in starts]), dtype=torch.float32)
        for a in (inputs, target_mean, target_var, n)
    ]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=len(starts))
    pl.seed_everything(seed, workers=True, verbose=False)
    model = TrajectoryGRU(series.latent_dim, hidden_size)
    module = TrajectoryModule(model, lr)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        # One small batch per epoch: Lightning's advice about loader workers and batch counts does not apply.
        warnings.simplefilter("ignore", PossibleUserWarning)
        trainer.fit(module, train_dataloaders=loader)
    return model.eval(), float(trainer.callback_metrics["train/nll"])


@torch.no_grad()
def gru_forecast(
    model: TrajectoryGRU, series: YearlySeries, cutoff: int, window: int, last_year: int = YEAR_RANGE[1]
) -> Forecast:
    """In-sample one-step forecasts up to ``cutoff``, then an autoregressive rollout to ``last_year``.

    Each year up to ``cutoff`` is predicted from the ``window`` observed years
    before it (fewer at the start), as in training. The rollout reads the last
    ``window`` years up to ``cutoff`` and then feeds its own forecast back as the
    next input.

    Returns
    -------
    Forecast
        Years ``first observed + 1`` ... ``last_year``; covariances are diagonal.
    """
    start = int(_training_years(series, cutoff, 1)[0])
    inputs = torch.as_tensor(gru_inputs(series, start, cutoff), dtype=torch.float32)[None]
    means, logvars = [], []
    for end in range(1, inputs.shape[1] + 1):
        step_mean, step_logvar, hidden = model(inputs[:, max(0, end - window) : end])
        means.append(step_mean[0, -1:])
        logvars.append(step_logvar[0, -1:])
    step_mean, step_logvar = step_mean[:, -1:], step_logvar[:, -1:]
    for _ in range(last_year - cutoff - 1):
        step_mean, step_logvar, hidden = model(torch.cat([step_mean, step_logvar], dim=-1), hidden)
        means.append(step_mean[0])
        logvars.append(step_logvar[0])
    variances = torch.cat(logvars).double().exp().numpy()
    return Forecast(
        np.arange(start + 1, last_year + 1),
        torch.cat(means).double().numpy(),
        np.stack([np.diag(v) for v in variances]),
    )


# -------------------------------------------------------------------- evaluation
def frechet_by_year(
    latents: np.ndarray, years: np.ndarray, forecasts: Mapping[str, Forecast], cutoff: int, min_studies: int
) -> pd.DataFrame:
    """Fréchet distance of every forecast to the observed study latents of each held-out year.

    Parameters
    ----------
    latents : ndarray, shape (studies, latent)
    years : ndarray, shape (studies,)
    forecasts : mapping
        Method name -> :class:`Forecast`.
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


# ------------------------------------------------------------------ prevalence
def cluster_prevalence(assignments: pd.DataFrame, names: Mapping[int, str]) -> pd.DataFrame:
    """Fraction of each year's studies in each cluster, ``(years, clusters)``.

    Parameters
    ----------
    assignments : DataFrame
        ``year`` and ``cluster`` (:data:`sematlas.analysis.clustering.NOISE` for noise).
    names : mapping
        Cluster -> name; noise is named ``"noise"``.

    Returns
    -------
    DataFrame
        Index: the years that have studies; columns: cluster names (noise last); rows sum to 1.
    """
    labels = assignments["cluster"].map(lambda c: "noise" if c == NOISE else names.get(c, f"cluster {c}"))
    table = pd.crosstab(assignments["year"], labels, normalize="index")
    order = [c for c in table.columns if c != "noise"] + (["noise"] if "noise" in table.columns else [])
    return table[order]


def topic_prevalence(studies: pd.DataFrame, names: pd.Series, top: int) -> pd.DataFrame:
    """Mean LDA weight per year of the ``top`` topics whose weight changed most.

    Change is the absolute least-squares slope of a topic's yearly mean weight.

    Parameters
    ----------
    studies : DataFrame
        ``year`` and ``topic_00`` ...
    names : Series
        Topic column -> short name (:func:`sematlas.analysis.clustering.topic_names`).
    top : int

    Returns
    -------
    DataFrame
        Index: years; columns: topic names, steepest first.
    """
    yearly = studies.groupby("year")[list(names.index)].mean()
    slopes = np.polyfit(yearly.index.to_numpy(float), yearly.to_numpy(), 1)[0]
    steepest = yearly.iloc[:, np.argsort(-np.abs(slopes))[:top]]
    return steepest.rename(columns=lambda c: f"{c[-2:]} {names[c]}")


# ------------------------------------------------------------------------ drift
def drift_maps(
    atlas: AtlasModel, task: str, years: Sequence[int], n_samples: int, seed: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A task's predicted map at several years: mean and sd over prior samples.

    The same ``n_samples`` prior draws ``z ~ N(0, I)`` are decoded at every year
    (common random numbers), so differences between years come from the model's
    year input alone. The sd is the spread the latent prior induces, not the
    disagreement of an ensemble.

    Parameters
    ----------
    atlas : AtlasModel
        A conditional model.
    task : str
    years : sequence of int
    n_samples : int
        At least 2.
    seed : int

    Returns
    -------
    dict
        Year -> ``(mean, sd)``, each ``(D, H, W)`` on the native grid (widest kernel).
    """
    if n_samples < 2:
        raise ValueError(f"an sd needs at least 2 prior samples, got {n_samples}")
    z = torch.randn(n_samples, atlas.z_dim, generator=torch.Generator().manual_seed(seed))
    maps = {}
    for year in years:
        samples = atlas.decode(z, {"task": task, "year": int(year)})[:, -1].double().cpu().numpy()
        maps[int(year)] = (samples.mean(0), samples.std(0, ddof=1))
    return maps


def write_drift_maps(
    atlas: AtlasModel, maps: Mapping[int, tuple[np.ndarray, np.ndarray]], task: str, folder: str | os.PathLike[str]
) -> list[Path]:
    """Write ``drift_<task>_<year>_{mean,sd}.nii.gz`` atomically; return the paths."""
    written = []
    for year, pair in maps.items():
        for field, volume in zip(("mean", "sd"), pair):
            target = Path(folder) / f"drift_{task}_{year}_{field}.nii.gz"
            with atomic_path(target) as tmp:
                # nibabel picks the format from the file name, so write the gzipped bytes by hand.
                tmp.write_bytes(gzip.compress(atlas.to_nifti(volume).to_bytes()))
            written.append(target)
    return written


# ------------------------------------------------------------------------ figures
METHOD_STYLE = {
    "gru": {"color": "tab:blue", "marker": "o"},
    "persistence": {"color": "tab:red", "marker": "s"},
    "linear_trend": {"color": "tab:orange", "marker": "^"},
}


def plot_trajectories(series: YearlySeries, forecasts: Mapping[str, Forecast], cutoff: int) -> Figure:
    """Observed and forecast yearly means on the first two principal components of the observed means.

    Observed means carry +- 1 standard error of the projected mean; the grey band
    marks the held-out years.
    """
    observed = series.observed
    years, means = series.years[observed], series.mean[observed]
    centre = means.mean(0)
    _, _, components = np.linalg.svd(means - centre, full_matrices=False)
    components = components[: min(2, len(components))]
    fig, axes = plt.subplots(1, len(components), figsize=(6 * len(components), 3.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        direction = components[k]
        spread = np.einsum("i,tij,j->t", direction, series.cov[observed], direction)
        error = np.sqrt(spread / series.n[observed])
        ax.errorbar(years, (means - centre) @ direction, yerr=error, color="black", fmt="o-", ms=3, label="observed")
        for method, forecast in forecasts.items():
            style = METHOD_STYLE.get(method, {})
            ahead = forecast.years > cutoff
            values = (forecast.mean - centre) @ direction
            ax.plot(forecast.years[ahead], values[ahead], ms=4, label=method, **style)
            if (~ahead).any():
                ax.plot(forecast.years[~ahead], values[~ahead], ls=":", color=style.get("color"))
        ax.axvspan(cutoff + 0.5, series.years[-1] + 0.5, color="grey", alpha=0.15, lw=0)
        ax.set(xlabel="publication year", ylabel=f"PC{k + 1} of the yearly mean latent")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("yearly mean latent: observed vs forecast (dotted: in-sample fit; shaded: held out)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_frechet(table: pd.DataFrame) -> Figure:
    """Fréchet distance (left) and its mean term (right) per held-out year and method.

    ``table`` is :func:`frechet_by_year`'s output.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, part in table.groupby("method", sort=False):
        for ax, column in zip(axes, ("frechet", "mean_term")):
            ax.plot(part["year"], part[column], label=method, ms=5, **METHOD_STYLE.get(method, {}))
    counts = table.drop_duplicates("year")
    for ax, title in zip(axes, ("Fréchet distance (lower is closer)", "mean term ||mu_f - mu_obs||^2")):
        ax.set_xticks(counts["year"], [f"{y}\nn={n}" for y, n in zip(counts["year"], counts["n"])])
        ax.set(title=title, xlabel="held-out year")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_zeitgeist(
    clusters: pd.DataFrame,
    topics: pd.DataFrame,
    drift: Mapping[int, tuple[nib.Nifti1Image, nib.Nifti1Image]],
    task: str,
) -> Figure:
    """The Zeitgeist timeline: cluster prevalence, topic prevalence and a task's map drifting with year.

    Parameters
    ----------
    clusters : DataFrame
        :func:`cluster_prevalence` (years x clusters, rows sum to 1), drawn as a stacked area.
    topics : DataFrame
        :func:`topic_prevalence` (years x topics).
    drift : mapping
        Year -> ``(mean, sd)`` NIfTI images of the task's predicted map; one column
        each, glass brains with a colour scale shared across years.
    task : str

    Returns
    -------
    Figure
    """
    from nilearn import plotting

    columns = len(drift)
    fig = plt.figure(figsize=(3.6 * max(columns, 4), 13.0))
    grid = fig.add_gridspec(4, columns, height_ratios=[1.0, 1.0, 0.8, 0.8], hspace=0.55)
    ax = fig.add_subplot(grid[0, :])
    palette = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(clusters.columns), 2)))
    colours = [("lightgrey" if name == "noise" else palette[i]) for i, name in enumerate(clusters.columns)]
    ax.stackplot(clusters.index, clusters.T.to_numpy(), labels=clusters.columns, colors=colours, alpha=0.9)
    ax.set(xlim=(clusters.index.min(), clusters.index.max()), ylim=(0, 1), ylabel="fraction of the year's studies")
    ax.set_title(
        f"cluster prevalence (stage {writer('results/clustering').number} HDBSCAN clusters of the latents)", fontsize=10
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax = fig.add_subplot(grid[1, :])
    for name in topics.columns:
        ax.plot(topics.index, topics[name], marker="o", ms=3, label=name)
    ax.set(ylabel="mean LDA-50 weight", xlabel="publication year")
    ax.set_title("topics whose prevalence changed most (all curated studies)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for row, field in enumerate(("mean", "sd")):
        volumes = [pair[row].get_fdata() for pair in drift.values()]
        vmax = max(float(v.max()) for v in volumes) or 1.0
        # Show the top decile of the in-brain values of the year maps, on one scale across years.
        threshold = float(np.quantile(np.concatenate([v[v > 0] for v in volumes]), 0.9))
        for col, (year, pair) in enumerate(drift.items()):
            ax = fig.add_subplot(grid[2 + row, col])
            plotting.plot_glass_brain(
                pair[row],
                axes=ax,
                display_mode="ortho",
                cmap="hot" if field == "mean" else "viridis",
                vmin=0.0,
                vmax=vmax,
                plot_abs=False,
                threshold=threshold,
                colorbar=col == columns - 1,
                title=f"{year} {field}",
            )
            if row == 0 and col == 0:
                top = ax.get_position().y1
    fig.text(
        0.5,
        top + 0.03,
        f"predicted '{task}' map by year: mean (top) and sd (bottom) over prior samples (latent uncertainty); "
        "top decile shown",
        ha="center",
        fontsize=10,
    )
    return fig
