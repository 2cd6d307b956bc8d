"""LightningModule and training run of the point-cloud C-VAE (its data: :mod:`sematlas.data.pointcloud`).

Training goes through :func:`sematlas.training.run.fit_run`,
so the run folder ``data/models/<profile>/pointcloud/`` has the layout, resume
and fingerprint rules of every trained model of the compendium.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from sematlas.core.params import Params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.pointcloud import PointCloudDataModule, make_datamodule
from sematlas.models.pointcloud import PointCloudConfig, PointCloudVAE, pointcloud_vae_loss
from sematlas.training.module import beta_at
from sematlas.training.run import TrainedRun, fingerprint, fit_run

#: The run's name: its folder under ``data/models/<profile>/`` and the variant in its checkpoints.
RUN_NAME = "pointcloud"
#: Library sources whose change invalidates a point-cloud checkpoint.
SOURCES = (
    "models/pointcloud.py",
    "models/pointnet.py",
    "models/losses.py",
    "core/metadata.py",
    "data/pointcloud.py",
    "data/pointcloud_cache.py",
    "data/studies.py",
    "training/callbacks.py",
    "training/pointcloud.py",
)


class PointCloudModule(pl.LightningModule):
    """Trains a :class:`PointCloudVAE` with :func:`sematlas.models.pointcloud.pointcloud_vae_loss`.

    Parameters
    ----------
    config : PointCloudConfig or mapping
        Saved as plain data in the hyperparameters, so a checkpoint rebuilds the network.
    lr, weight_decay : float
        AdamW.
    beta : float
        KL weight, reached after a linear warm-up (Bowman et al. 2016) of
        ``beta_warmup_epochs``; validation always uses ``beta`` so that
        ``val/loss`` measures the same objective every epoch.
    beta_warmup_epochs : float
    chamfer_weight, sinkhorn_weight : float
    sinkhorn_blur : float
        In the scaled frame.

    Notes
    -----
    Logged: ``train/*`` and ``val/*`` for ``loss``, ``chamfer``, ``sinkhorn``, ``kl``, and ``beta``.
    """

    def __init__(
        self,
        config: PointCloudConfig | Mapping[str, Any],
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        beta: float = 1e-3,
        beta_warmup_epochs: float = 0.0,
        chamfer_weight: float = 1.0,
        sinkhorn_weight: float = 1.0,
        sinkhorn_blur: float = 0.05,
    ) -> None:
        super().__init__()
        network_config = config if isinstance(config, PointCloudConfig) else PointCloudConfig.from_dict(config)
        # Hyperparameters must be plain data: save_hyperparameters records the local `config`.
        config = network_config.to_dict()
        self.save_hyperparameters()
        self.model = PointCloudVAE(network_config)

    def beta_at(self, epoch: float | None) -> float:
        """KL weight at a (fractional) epoch; ``None`` gives the final weight."""
        hp: Any = self.hparams
        if epoch is None:
            return float(hp.beta)
        return beta_at(epoch, "linear", float(hp.beta), warmup_epochs=float(hp.beta_warmup_epochs))

    def _terms(self, batch: Mapping[str, Any], beta: float) -> dict[str, Tensor]:
        hp: Any = self.hparams
        out = self.model(batch["points"], batch["meta"])
        return pointcloud_vae_loss(
            out["points_hat"],
            batch["points"],
            batch["weights"],
            out["mu"],
            out["logvar"],
            beta=beta,
            chamfer_weight=hp.chamfer_weight,
            sinkhorn_weight=hp.sinkhorn_weight,
            sinkhorn_blur=hp.sinkhorn_blur,
        )

    def _log_terms(self, stage: str, terms: Mapping[str, Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=stage == "train",
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
            )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        n_batches = self.trainer.num_training_batches
        fraction = batch_idx / n_batches if math.isfinite(n_batches) and n_batches > 0 else 0.0
        beta = self.beta_at(self.current_epoch + fraction)
        terms = self._terms(batch, beta)
        self._log_terms("train", terms, len(batch["points"]))
        self.log("beta", beta, on_step=True, on_epoch=False, batch_size=len(batch["points"]))
        return terms["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        terms = self._terms(batch, self.beta_at(None))
        self._log_terms("val", terms, len(batch["points"]))
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp: Any = self.hparams
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


def run_params(params: Params) -> Params:
    """The profile's parameters with ``training.max_epochs``, ``batch_size`` and ``lr`` taken from
    ``pointcloud`` (what :func:`sematlas.training.run.fit_run` reads for the Trainer)."""
    section = params.pointcloud
    change = {"training": {"max_epochs": section.max_epochs, "batch_size": section.batch_size, "lr": section.lr}}
    return override_params(params, change, "pointcloud run")


def build_module(params: Params, datamodule: PointCloudDataModule) -> PointCloudModule:
    """The LightningModule with the profile's architecture and objective."""
    assert datamodule.encoder is not None, "call datamodule.setup() first"
    section = params["pointcloud"]
    return PointCloudModule(
        PointCloudConfig.from_params(section, datamodule.encoder.cond_dim),
        lr=section["lr"],
        weight_decay=params["training"]["weight_decay"],
        beta=section["beta"],
        beta_warmup_epochs=section["beta_warmup_epochs"],
        chamfer_weight=section["chamfer_weight"],
        sinkhorn_weight=section["sinkhorn_weight"],
        sinkhorn_blur=section["sinkhorn_blur"],
    )


def train_pointcloud(
    params: Params,
    paths: ProfilePaths,
    datamodule: PointCloudDataModule | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
) -> TrainedRun:
    """Train (or resume, or reuse) the point-cloud C-VAE of a profile in ``data/models/<profile>/pointcloud``.

    Parameters
    ----------
    params : mapping
        Validated profile parameters.
    paths : ProfilePaths
    datamodule : PointCloudDataModule, optional
        A set-up DataModule to reuse.
    extra_callbacks : list, optional

    Returns
    -------
    TrainedRun
    """
    resolved = run_params(params)
    pl.seed_everything(int(resolved["seed"]), workers=True, verbose=False)
    if resolved["training"]["num_threads"] > 0:
        torch.set_num_threads(resolved["training"]["num_threads"])
    datamodule = datamodule or make_datamodule(resolved, paths)
    assert datamodule.encoder is not None
    payload = {
        "profile": resolved["profile"],
        "variant": RUN_NAME,
        "metadata_encoder": datamodule.encoder.to_dict(),
        "n_points": datamodule.n_points,
        "centre_mm": [float(c) for c in datamodule.centre_mm],
        "scale_mm": float(datamodule.scale_mm),
        "seed": datamodule.seed,
    }
    run_fingerprint = fingerprint(resolved, RUN_NAME, sections=("pointcloud",), sources=SOURCES)
    return fit_run(
        build_module(resolved, datamodule),
        datamodule,
        paths.models / RUN_NAME,
        resolved,
        name=RUN_NAME,
        run_fingerprint=run_fingerprint,
        payload=payload,
        callbacks=list(extra_callbacks or []),
        train_size=datamodule.studies_per_epoch_count,
        variant=RUN_NAME,
    )
