"""The one LightningModule that trains every volumetric variant, and its weight schedules.

:class:`AtlasModule` wraps a network from :func:`sematlas.models.build_model` and
calls its objective (:meth:`~sematlas.models.base.VolumetricVAE.loss`); what it
needs to know about the objective, the network declares (its KL weights and their
schedules, whether it needs the training-set size, its KL share, the scalars it
logs), so no line here asks which variant it trains. Training-time KL weights
follow schedules (:func:`beta_at`, :func:`beta_tc_at`); validation always uses
the end-of-schedule weights, so ``val/loss`` measures the same objective every
epoch and can drive checkpoint selection.

Batches follow the data contract of :mod:`sematlas.data.datamodule`:
``{"image": (B, C, d, h, w), "meta": {"cond", "sparse", "sparse_mask",
"year_bin", "task"}, "id": list[str]}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from sematlas.core.params import TrainingParams
from sematlas.core.stats import balanced_accuracy
from sematlas.models import KLSchedule, ModelConfig, VolumetricVAE, build_model, config_from_dict, model_entry
from sematlas.models.base import ACTIVE_UNIT_THRESHOLD
from sematlas.models.losses import gaussian_kl_between_per_dim, gaussian_kl_per_dim

BetaSchedule = Literal["constant", "linear", "cyclical"]
BETA_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cyclical")
LRSchedule = Literal["constant", "cosine_restarts"]
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine_restarts")


def beta_at(
    epoch: float,
    schedule: BetaSchedule,
    beta_max: float,
    warmup_epochs: float = 0.0,
    cycle_epochs: float = 10.0,
    cycle_ratio: float = 0.5,
) -> float:
    """KL weight at a (fractional) epoch.

    - ``constant``: ``beta_max``.
    - ``linear``: warm-up ``beta_max * min(1, epoch / warmup_epochs)`` (Bowman et al. 2016).
    - ``cyclical`` (Fu et al. 2019): within each cycle of ``cycle_epochs``, with
      ``tau = (epoch mod cycle_epochs) / cycle_epochs``,
      ``beta = beta_max * min(1, tau / cycle_ratio)``: a linear ramp over the
      first ``cycle_ratio`` of the cycle, then ``beta_max``.

    Parameters
    ----------
    epoch : float
        Epochs done, fractional within an epoch.
    schedule : {"constant", "linear", "cyclical"}
    beta_max : float
        Final (or plateau) weight.
    warmup_epochs : float
        Length of the ``linear`` ramp; 0 means no ramp.
    cycle_epochs : float
        Cycle length of ``cyclical``.
    cycle_ratio : float
        Fraction of each cycle spent ramping, in (0, 1].

    Returns
    -------
    float
    """
    if schedule == "constant":
        return float(beta_max)
    if schedule == "linear":
        return float(beta_max) if warmup_epochs <= 0 else float(beta_max * min(1.0, epoch / warmup_epochs))
    if schedule == "cyclical":
        tau = math.fmod(epoch, cycle_epochs) / cycle_epochs
        return float(beta_max * min(1.0, tau / cycle_ratio))
    raise ValueError(f"beta schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")


def beta_tc_at(epoch: float, target: float = 6.0, annealing_epochs: float = 0.0) -> float:
    """Total-correlation weight: linear from 0 at epoch 0 to ``target`` at ``annealing_epochs``, then constant.

    Parameters
    ----------
    epoch : float
        Epochs done, fractional within an epoch.
    target : float
        Final weight ``beta_tc``.
    annealing_epochs : float
        Length of the ramp; 0 means ``target`` from the start.

    Returns
    -------
    float
    """
    if annealing_epochs <= 0:
        return float(target)
    return float(target * min(1.0, epoch / annealing_epochs))


def lr_at(
    epoch: float, schedule: LRSchedule, lr_max: float, cycle_epochs: float = 1.0, min_ratio: float = 0.0
) -> float:
    """Learning rate at a (fractional) epoch.

    - ``constant``: ``lr_max``.
    - ``cosine_restarts`` (SGDR, Loshchilov & Hutter 2017; the schedule of snapshot
      ensembles, Huang et al. 2017): with ``tau = (epoch mod cycle_epochs) / cycle_epochs``
      and ``lr_min = min_ratio * lr_max``,
      ``lr = lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * tau))``: ``lr_max`` at the
      start of every cycle, annealed towards ``lr_min`` at its end, where the
      model sits in a local minimum worth keeping as a snapshot.

    Parameters
    ----------
    epoch : float
        Epochs done, fractional within an epoch.
    schedule : {"constant", "cosine_restarts"}
    lr_max : float
    cycle_epochs : float
        Cycle length of ``cosine_restarts``.
    min_ratio : float
        ``lr_min / lr_max`` in [0, 1).

    Returns
    -------
    float
    """
    if schedule == "constant":
        return float(lr_max)
    if schedule == "cosine_restarts":
        tau = math.fmod(epoch, cycle_epochs) / cycle_epochs
        lr_min = min_ratio * lr_max
        return float(lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * tau)))
    raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def _network_mask(mask: Tensor | np.ndarray | None, grid_shape: tuple[int, int, int]) -> Tensor:
    """The brain mask as a bool tensor on the network grid; ``None`` is all True."""
    if mask is None:
        return torch.ones(grid_shape, dtype=torch.bool)
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).bool().cpu()
    if tuple(mask.shape) != grid_shape:
        raise ValueError(f"mask must be on the network grid {grid_shape}, got shape {tuple(mask.shape)}")
    return mask


class AtlasModule(pl.LightningModule):
    """Trains any registered volumetric network on brain maps.

    Parameters
    ----------
    config : ModelConfig or mapping
        Architecture (a mapping is built by :func:`sematlas.models.config_from_dict`).
        Saved as plain data in the hyperparameters, so
        ``AtlasModule.load_from_checkpoint(path)`` rebuilds the network.
    training : TrainingParams or mapping
        The profile's ``training`` section: learning rate and weight decay (AdamW),
        the KL weights' maxima and schedules (``beta``, ``beta_schedule``,
        ``beta_warmup_epochs``, ``beta_cycle_epochs``, ``beta_cycle_ratio``,
        ``beta_tc_target``, ``beta_tc_annealing_epochs``, see :func:`beta_at` and
        :func:`beta_tc_at`) and the objectives' other weights (what the network's
        :meth:`~sematlas.models.base.VolumetricVAE.loss_weights` reads). Saved as plain data.
    mask : Tensor or ndarray of bool, optional
        Brain mask on the network grid, shape ``config.grid_shape``
        (:meth:`sematlas.core.grid.Grid.to_network` of the native mask). Only voxels
        inside count in the reconstruction loss. Kept as a
        buffer (saved with the weights, not in the hyperparameters); ``None``
        counts every voxel (and is what a checkpoint is loaded with before its
        saved mask is restored).
    dataset_size : int, optional
        Number of training studies ``N``; required by networks that declare
        ``needs_dataset_size`` (the ``tcvae_sbd``'s estimator of ``q(z)``).
    lr_schedule : {"constant", "cosine_restarts"}
        See :func:`lr_at`; set before every training batch, from the fractional
        epoch, so a resumed run continues on the same curve (the snapshot ensembles').
    lr_cycle_epochs, lr_min_ratio : float
        Cycle length and ``lr_min / lr`` of ``cosine_restarts``.

    Notes
    -----
    Logged: ``train/*`` and ``val/*`` for ``loss`` and every term of the network's
    objective (per study), ``train/kl_share``, every KL weight the network declares
    (``beta``, ``top_beta``, ``beta_tc``) and its :meth:`~sematlas.models.base.VolumetricVAE.logged_scalars`
    (``grl_lambda``), ``lr`` (cyclical schedule), and at the end of validation
    ``val/active_units``, ``val/kl_per_active_dim`` and, for a network with a year
    head (``year_logits``), ``val/year_balanced_accuracy``.
    """

    # Buffer, registered in __init__.
    mask: Tensor

    def __init__(
        self,
        config: ModelConfig | Mapping[str, Any],
        training: TrainingParams | Mapping[str, Any],
        mask: Tensor | np.ndarray | None = None,
        dataset_size: int | None = None,
        *,
        lr_schedule: LRSchedule = "constant",
        lr_cycle_epochs: float = 1.0,
        lr_min_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        model_config = config if isinstance(config, ModelConfig) else config_from_dict(config)
        settings = training if isinstance(training, TrainingParams) else TrainingParams(**training)
        if settings.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {settings.beta_schedule!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if lr_cycle_epochs <= 0 or not 0.0 <= lr_min_ratio < 1.0:
            raise ValueError(
                f"need lr_cycle_epochs > 0 and lr_min_ratio in [0, 1), got {lr_cycle_epochs!r}, {lr_min_ratio!r}"
            )
        if model_entry(model_config.variant).network.needs_dataset_size and (dataset_size is None or dataset_size < 1):
            raise ValueError(f"{model_config.variant} needs dataset_size (the number of training studies)")
        # Hyperparameters must be plain data: the locals `config` and `training` are what
        # save_hyperparameters records, so checkpoints and hparams.yaml stay readable.
        config, training = model_config.to_dict(), settings.to_dict()
        self.save_hyperparameters(ignore=["mask"])
        self.config = model_config
        self.settings = settings
        self.dataset_size = dataset_size
        self.lr_schedule: LRSchedule = lr_schedule
        self.lr_cycle_epochs = lr_cycle_epochs
        self.lr_min_ratio = lr_min_ratio
        self.model: VolumetricVAE = build_model(model_config)
        self.register_buffer("mask", _network_mask(mask, model_config.grid_shape))
        self._val_year: list[tuple[Tensor, Tensor]] = []
        self._val_latent: list[tuple[Tensor, Tensor]] = []
        self._val_kl: list[Tensor] = []

    # ---- weights ---------------------------------------------------------------------------------

    def _ramp(self, schedule: KLSchedule, epoch: float) -> float:
        """The fraction of its maximum a KL weight on ``schedule`` has at ``epoch``."""
        t = self.settings
        if schedule == "beta":
            shape = cast(BetaSchedule, t.beta_schedule)  # validated in __init__
            return beta_at(epoch, shape, 1.0, t.beta_warmup_epochs, t.beta_cycle_epochs, t.beta_cycle_ratio)
        return beta_tc_at(epoch, 1.0, t.beta_tc_annealing_epochs)

    def loss_weights(self, epoch: float | None) -> dict[str, float]:
        """Every weight of the objective at a (fractional) epoch; ``None`` gives the end-of-schedule weights.

        Parameters
        ----------
        epoch : float or None

        Returns
        -------
        dict
            The network's :meth:`~sematlas.models.base.VolumetricVAE.loss_weights`, each KL
            weight scaled by the ramp of its schedule.
        """
        weights = self.model.loss_weights(self.settings)
        for name, schedule in self.model.kl_weights.items():
            weights[name] = weights[name] * (1.0 if epoch is None else self._ramp(schedule, epoch))
        return weights

    def _epoch_position(self, batch_idx: int) -> float:
        """Fractional epoch of a training batch, so schedules move within an epoch."""
        n_batches = self.trainer.num_training_batches
        fraction = batch_idx / n_batches if math.isfinite(n_batches) and n_batches > 0 else 0.0
        return self.current_epoch + fraction

    # ---- objective -------------------------------------------------------------------------------

    def compute_loss(
        self, out: Mapping[str, Tensor], batch: Mapping[str, Any], weights: Mapping[str, float]
    ) -> dict[str, Tensor]:
        """The network's per-study loss terms on ``batch``, with this module's mask and training-set size.

        Parameters
        ----------
        out : mapping
            The network's forward output on ``batch``.
        batch : mapping
            ``image`` (B, C, d, h, w) and ``meta``.
        weights : mapping
            See :meth:`loss_weights`.

        Returns
        -------
        dict of scalar Tensors
            ``loss`` and every term.
        """
        return self.model.loss(out, batch, weights, mask=self.mask, dataset_size=self.dataset_size)

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The network's forward pass (see :mod:`sematlas.models`)."""
        return self.model(image, meta)

    def _log_terms(self, stage: str, terms: Mapping[str, Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                # Under DDP the mean over every rank's shard: best.ckpt is chosen on the whole validation split.
                sync_dist=True,
            )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """One optimisation step; returns ``loss`` and the detached ``kl_share`` (logged, a diagnostic)."""
        image, meta = batch["image"], batch["meta"]
        weights = self.loss_weights(self._epoch_position(batch_idx))
        terms = self.compute_loss(self.model(image, meta), batch, weights)
        batch_size = image.shape[0]
        self._log_terms("train", terms, batch_size)
        kl_share = self.model.kl_share(terms, weights)
        self.log("train/kl_share", kl_share, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        scalars = {name: weights[name] for name in self.model.kl_weights} | self.model.logged_scalars()
        for name, value in scalars.items():
            self.log(name, value, on_step=True, on_epoch=False, batch_size=batch_size)
        return {"loss": terms["loss"], "kl_share": kl_share}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set the scheduled learning rate (nothing to do for ``constant``)."""
        if self.lr_schedule == "constant":
            return
        epoch = self._epoch_position(batch_idx)
        lr = lr_at(epoch, self.lr_schedule, self.settings.lr, self.lr_cycle_epochs, self.lr_min_ratio)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        self.log("lr", lr, on_step=True, on_epoch=False, batch_size=1)

    # ---- validation ------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_year.clear()
        self._val_latent.clear()
        self._val_kl.clear()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Loss terms at the end-of-schedule weights; collects latents and year predictions."""
        image, meta = batch["image"], batch["meta"]
        out = self.model(image, meta)
        terms = self.compute_loss(out, batch, self.loss_weights(None))
        self._log_terms("val", terms, image.shape[0])
        mu, logvar = out["mu"].detach().float(), out["logvar"].detach().float()
        self._val_latent.append((mu, logvar))
        # Per unit, to the network's prior: N(0, I), or p(z | m) where the network learns one.
        prior_mu, prior_logvar = out.get("prior_mu"), out.get("prior_logvar")
        if prior_mu is None or prior_logvar is None:
            self._val_kl.append(gaussian_kl_per_dim(mu, logvar))
        else:
            self._val_kl.append(gaussian_kl_between_per_dim(mu, logvar, prior_mu.detach(), prior_logvar.detach()))
        if "year_logits" in out:
            self._val_year.append((out["year_logits"].argmax(dim=1), meta["year_bin"].long()))
        return terms["loss"]

    def on_validation_epoch_end(self) -> None:
        """Active units (Burda et al. 2016), the KL of each unit and per active unit, the year head's accuracy."""
        if self._val_latent:
            mu = torch.cat([m for m, _ in self._val_latent])
            # Under DDP each rank saw a shard of the validation set.
            dim = mu.shape[1]
            mu = self._all_gather(mu).reshape(-1, dim)
            kl_per_unit = self._all_gather(torch.cat(self._val_kl)).reshape(-1, dim).mean(0)
            # A unit is active when E[z|x] varies across studies: Var_x(mu_k) > 0.01.
            active = int((mu.var(dim=0, unbiased=False) > ACTIVE_UNIT_THRESHOLD).sum())
            self.log("val/active_units", float(active))
            self.log("val/kl_per_active_dim", kl_per_unit.sum() / max(active, 1))
            for unit, kl in enumerate(kl_per_unit):
                self.log(f"val/kl_unit_{unit:02d}", kl)
        if self._val_year:
            pred = torch.cat([p for p, _ in self._val_year])
            target = torch.cat([t for _, t in self._val_year])
            pred, target = self._all_gather(pred).flatten(), self._all_gather(target).flatten()
            self.log("val/year_balanced_accuracy", balanced_accuracy(target.cpu(), pred.cpu()))

    def _all_gather(self, value: Tensor) -> Tensor:
        """:meth:`all_gather` of one tensor, which returns a tensor (typed as any collection by Lightning)."""
        gathered = self.all_gather(value)
        assert isinstance(gathered, Tensor), f"all_gather of a Tensor returned a {type(gathered).__name__}"
        return gathered

    # ---- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW (Loshchilov & Hutter 2019) with ``betas = (0.9, 0.995)``, over the network's parameter groups.

        Each group learns at its ``lr_scale`` times ``training.lr``
        (:meth:`~sematlas.models.base.VolumetricVAE.parameter_groups`).
        """
        groups = [{**group, "lr": self.settings.lr * group["lr_scale"]} for group in self.model.parameter_groups()]
        return torch.optim.AdamW(
            groups, lr=self.settings.lr, betas=(0.9, 0.995), weight_decay=self.settings.weight_decay
        )


__all__ = ["BETA_SCHEDULES", "LR_SCHEDULES", "AtlasModule", "beta_at", "beta_tc_at", "lr_at"]
