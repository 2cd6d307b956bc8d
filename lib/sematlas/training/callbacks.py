"""Training callbacks for :class:`sematlas.training.module.AtlasModule`.

- :class:`GRLLambdaRamp`: ramps the gradient-reversal factor of a network's
  adversary (the ``cbvae``'s year head) on the DANN schedule.
- :class:`SnapshotCheckpoint`: saves a snapshot-ensemble member at the end of
  every learning-rate cycle.
- :class:`ReconSnapshots`: saves input / reconstruction / difference slices of
  fixed validation studies every few epochs, to watch training by eye.
- :class:`BatchSeed`: reseeds torch's global generator before every training
  and validation batch from (seed, run, epoch, batch).

They act only through state that is checkpointed (the GRL factor is recomputed from the
global step; snapshots are files) or recomputed from the epoch and batch, so resumed runs
continue where they stopped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from sematlas.core.grid import Grid
from sematlas.data.studies import stable_seed
from sematlas.models import GradientReversal


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


def gradient_reversal(pl_module: pl.LightningModule) -> GradientReversal | None:
    """The gradient reversal layer of a module's network (``pl_module.model.grl``), or ``None`` when it has none."""
    grl = getattr(getattr(pl_module, "model", None), "grl", None)
    return grl if isinstance(grl, GradientReversal) else None


class GRLLambdaRamp(pl.Callback):
    """Set the gradient-reversal factor before each training batch from :func:`dann_lambda`.

    Progress is ``global_step / estimated_stepping_batches``, identical on
    every DDP rank and recomputed after a resume. The network logs the value
    as ``grl_lambda``. It drives any module whose network has a gradient
    reversal layer (:func:`gradient_reversal`).

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
        if gradient_reversal(pl_module) is None:
            raise ValueError("GRLLambdaRamp needs a model with a gradient reversal layer (e.g. the 'cbvae')")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        total = trainer.estimated_stepping_batches
        progress = trainer.global_step / total if math.isfinite(total) and total > 0 else 0.0
        grl = gradient_reversal(pl_module)
        assert grl is not None, "checked in on_fit_start"
        grl.lambda_ = dann_lambda(progress, self.max_lambda, self.gamma)


class BatchSeed(pl.Callback):
    """Reseed torch's global generator before every training and validation batch from (seed, run, epoch, batch).

    The networks draw their reparameterisation noise and dropout masks from the
    global generator, whose state Lightning neither checkpoints nor restores; a
    run trained after others in one process would inherit their state; and a
    DataLoader without a generator of its own draws from it for every iterator,
    which Lightning creates before the first epoch of a session (a resumed one
    too) starts and after later ones start. Reseeding at each batch makes the draws of
    a step a function of the run, the epoch and the batch alone, so a run resumed
    at an epoch boundary continues exactly as an uninterrupted one. Each DDP rank
    gets its own stream (rank 0 that of a single-process run).

    Parameters
    ----------
    seed : int
        The run's seed.
    run_key : str
        The run's name (its folder under ``data/models/<profile>/``).
    """

    def __init__(self, seed: int, run_key: str) -> None:
        self.seed = seed
        self.run_key = run_key

    def _reseed(self, trainer: pl.Trainer, stage: str, batch_idx: int) -> None:
        parts = (self.seed, self.run_key, stage, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(stable_seed(*parts))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._reseed(trainer, "train", batch_idx)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # The point-cloud VAE samples its latent in validation too.
        self._reseed(trainer, "val", batch_idx)


class SnapshotCheckpoint(pl.Callback):
    """Save a checkpoint at the end of every learning-rate cycle: the members of a snapshot ensemble.

    Snapshot ensembles (Huang et al., ICLR 2017) train one network with a
    cyclical cosine learning rate (``AtlasModule(lr_schedule="cosine_restarts")``)
    and keep the model at the end of each cycle, where the annealed rate has
    settled it in a local minimum; the restart then throws it out towards another.
    Snapshots go through ``trainer.save_checkpoint``, so every callback's
    ``on_save_checkpoint`` runs and each file carries the ``AtlasPayload`` and
    loads alone (:meth:`sematlas.inference.atlas.AtlasModel.load`).

    Parameters
    ----------
    cycle_epochs : int
        Epochs per cycle (the module's ``lr_cycle_epochs``).
    dirpath : path, optional
        Folder of the snapshots; default ``<trainer.default_root_dir>/snapshots``.

    Notes
    -----
    Snapshot ``k`` (1-based) is ``snapshot_{k:02d}.ckpt``, saved after epoch
    ``k * cycle_epochs``; it is written under a temporary name and renamed, so a
    killed run never leaves a truncated snapshot.
    """

    def __init__(self, cycle_epochs: int, dirpath: str | os.PathLike[str] | None = None) -> None:
        if cycle_epochs < 1:
            raise ValueError(f"cycle_epochs must be >= 1, got {cycle_epochs!r}")
        self.cycle_epochs = cycle_epochs
        self.dirpath = dirpath

    def snapshot_dir(self, trainer: pl.Trainer) -> Path:
        """Where the snapshots of ``trainer``'s run go."""
        return Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "snapshots"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is None or trainer.max_epochs % self.cycle_epochs:
            raise ValueError(
                f"max_epochs ({trainer.max_epochs}) must be a multiple of cycle_epochs "
                f"({self.cycle_epochs}), so that training ends on a snapshot"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        completed = trainer.current_epoch + 1
        if completed % self.cycle_epochs:
            return
        target = self.snapshot_dir(trainer) / f"snapshot_{completed // self.cycle_epochs:02d}.ckpt"
        partial = target.with_name(f".{target.name}.partial")
        if trainer.is_global_zero:
            target.parent.mkdir(parents=True, exist_ok=True)
        # Every rank calls save_checkpoint (a collective for sharded strategies); rank 0 writes and renames.
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, target)
            rank_zero_info(f"SnapshotCheckpoint: saved {target}")


class ReconSnapshots(pl.Callback):
    """Input, reconstruction and absolute difference of fixed validation studies, every few epochs.

    At the end of every ``every_n_epochs``-th validation epoch, the first
    ``n_samples`` studies of the validation split are reconstructed (no
    augmentation, eval mode) and saved as one figure per study, central slices in
    three orientations of the widest kernel, to ``<run>/recon/epoch_<E>/study_<id>.png``.

    Parameters
    ----------
    every_n_epochs : int
        0 switches snapshots off.
    n_samples : int
        Validation studies shown (always the same ones).
    """

    def __init__(self, every_n_epochs: int, n_samples: int) -> None:
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs <= 0 or trainer.sanity_checking or (epoch + 1) % self.every_n_epochs:
            return
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        rows = list(range(min(self.n_samples, len(datamodule.tables["val"]))))
        if not rows or not trainer.is_global_zero:
            return
        batch = datamodule.render_rows("val", rows)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            meta = {key: value.to(pl_module.device) for key, value in batch["meta"].items()}
            out = pl_module(batch["image"].to(pl_module.device), meta)
        pl_module.train(was_training)
        folder = Path(trainer.default_root_dir) / "recon" / f"epoch_{epoch:03d}"
        save_recon_figures(batch["image"], out["x_hat"].cpu(), batch["id"], datamodule.grid, folder)


def save_recon_figures(
    inputs: torch.Tensor, reconstructions: torch.Tensor, ids: list[Any], grid: Grid, folder: Path
) -> list[Path]:
    """One PNG per study: input, reconstruction and |difference| (widest kernel), three orientations each.

    Parameters
    ----------
    inputs, reconstructions : Tensor, shape (n, C, d, h, w)
        On the network grid.
    ids : list
        Study ids, for the file names and titles.
    grid : Grid
        The maps' grid: they are drawn on its native grid.
    folder : Path
        Created if missing; files are written atomically.

    Returns
    -------
    list of Path
    """
    import matplotlib.pyplot as plt

    from sematlas.core.io import atomic_path
    from sematlas.reporting.plotting import plot_map_rows

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for study, x, x_hat in zip(ids, grid.to_native(inputs), grid.to_native(reconstructions)):
        x, x_hat = x[-1].numpy(), x_hat[-1].numpy()
        fig = plot_map_rows(
            {"maps": [x, x_hat, abs(x - x_hat)]},
            column_titles=["input", "reconstruction", "|difference|"],
            vmax=float(max(x.max(), 1e-6)),
        )
        fig.suptitle(f"study {study}", fontsize=9, y=1.02)
        target = folder / f"study_{study}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(target)
    return written
