"""Training callbacks for :class:`sematlas.lightning.AtlasModule`.

- :class:`KLController`: raises the KL weight when the KL term has become a
  negligible share of the objective for several epochs in a row.
- :class:`GRLLambdaRamp`: ramps the gradient-reversal factor of the ``cbvae``
  year adversary on the DANN schedule.

Both act only through state that is checkpointed (the module's
``beta_multiplier`` buffer; the GRL factor is recomputed from the global step),
so resumed runs continue where they stopped.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info


def dann_lambda(progress: float, max_lambda: float = 1.0, gamma: float = 10.0) -> float:
    """DANN schedule (Ganin et al. 2016): ``max_lambda * (2 / (1 + exp(-gamma * p)) - 1)``.

    Starts at 0, so the adversary first learns to predict before its
    reversed gradient reaches the encoder, and saturates at ``max_lambda``.

    Parameters
    ----------
    progress : float
        Training progress ``p`` in [0, 1] (clipped).
    max_lambda : float
        Asymptotic factor.
    gamma : float
        Steepness (10 in the paper).

    Returns
    -------
    float
    """
    p = min(max(progress, 0.0), 1.0)
    return float(max_lambda * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0))


class KLController(pl.Callback):
    """Raise ``beta`` by ``factor`` when the KL share stays under ``threshold`` for ``patience`` epochs.

    The KL share of an epoch is the mean over its training batches of
    ``beta * KL / (recon + beta * KL)`` (the ``kl_share`` that
    :meth:`AtlasModule.training_step` returns), averaged over DDP ranks. When
    the weighted KL is that small the prior barely shapes the latent space,
    so the controller multiplies the module's ``beta_multiplier`` buffer (which
    scales every scheduled ``beta``) and logs it as ``kl_controller/beta_multiplier``.

    Parameters
    ----------
    threshold : float
        KL share under which an epoch counts as suppressed.
    patience : int
        Consecutive suppressed epochs before ``beta`` is raised; the count then restarts.
    factor : float
        Multiplicative increase (> 1).
    max_multiplier : float
        Cap on the cumulative multiplier.
    """

    def __init__(
        self, threshold: float = 0.05, patience: int = 3, factor: float = 2.0, max_multiplier: float = 1e3
    ) -> None:
        if factor <= 1.0 or patience < 1:
            raise ValueError(f"need factor > 1 and patience >= 1, got factor={factor!r}, patience={patience!r}")
        self.threshold = threshold
        self.patience = patience
        self.factor = factor
        self.max_multiplier = max_multiplier
        self.suppressed_epochs = 0
        self._share_sum = 0.0
        self._share_count = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not getattr(pl_module, "uses_beta", False):
            raise ValueError("KLController acts on beta, which this module's objective does not use")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._share_sum, self._share_count = 0.0, 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._share_sum += float(outputs["kl_share"])
        self._share_count += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._share_count == 0:
            return
        local = torch.tensor(self._share_sum / self._share_count, device=pl_module.device)
        share = float(trainer.strategy.reduce(local, reduce_op="mean"))
        self.suppressed_epochs = self.suppressed_epochs + 1 if share < self.threshold else 0
        if self.suppressed_epochs >= self.patience:
            new = min(float(pl_module.beta_multiplier) * self.factor, self.max_multiplier)
            pl_module.beta_multiplier.fill_(new)
            self.suppressed_epochs = 0
            rank_zero_info(
                f"KLController: KL share {share:.4f} < {self.threshold} for {self.patience} epochs; "
                f"beta multiplier -> {new:g}"
            )
        pl_module.log("kl_controller/kl_share", share)
        pl_module.log("kl_controller/beta_multiplier", float(pl_module.beta_multiplier))

    def state_dict(self) -> dict[str, Any]:
        return {"suppressed_epochs": self.suppressed_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.suppressed_epochs = int(state_dict["suppressed_epochs"])


class GRLLambdaRamp(pl.Callback):
    """Set the gradient-reversal factor before each training batch from :func:`dann_lambda`.

    Progress is ``global_step / estimated_stepping_batches``, identical on
    every DDP rank and recomputed after a resume. The module logs the value
    as ``grl_lambda``.

    Parameters
    ----------
    max_lambda : float
        Asymptotic factor.
    gamma : float
        Steepness of the schedule.
    """

    def __init__(self, max_lambda: float = 1.0, gamma: float = 10.0) -> None:
        self.max_lambda = max_lambda
        self.gamma = gamma

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(getattr(pl_module, "model", None), "grl"):
            raise ValueError("GRLLambdaRamp needs a model with a gradient reversal layer (variant 'cbvae')")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        total = trainer.estimated_stepping_batches
        progress = trainer.global_step / total if math.isfinite(total) and total > 0 else 0.0
        pl_module.model.grl.lambda_ = dann_lambda(progress, self.max_lambda, self.gamma)
