"""The trajectory GRU: a learned forecast of next year's latent distribution from the years before it.

Trained by teacher forcing on windows of the yearly moments up to a cutoff
(:func:`fit_trajectory_gru`) and rolled out autoregressively after it
(:func:`gru_forecast`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from sematlas.analysis.forecasting.series import Forecast, YearlySeries
from sematlas.core.metadata import YEAR_RANGE


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
    train = series.training_years(cutoff, 2)
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
    start = int(series.training_years(cutoff, 1)[0])
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
