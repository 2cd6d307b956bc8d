"""The linear baselines' scores on a held-out split, computed once per profile and kept on disk.

Every volumetric evaluation (stage 02's variants, stage 05's H-VAE, stage 09's
ablation runs) compares its model with the same linear predictions of the
held-out maps (:mod:`sematlas.evaluation.baselines`): PCA at the model's latent size
(reconstruction), ridge regression and an MLP from the metadata vector (generation) and
the training mean map. They depend on the studies, how they are rendered, the latent
size, the PCA sample size and the seed, never on the model. So :func:`linear_baseline_scores`
fits and scores them once, saves the per-study metrics as a
:class:`LinearBaselineScores` under a fingerprint of those inputs (in
``data/cache/<profile>/linear_baselines/``, outside every stage's outputs), and every later
evaluation with the same fingerprint (in this stage or a later one) reads them back
instead of rendering the training split and refitting.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from sematlas.core.io import read_json, sha256_file, write_json, write_parquet
from sematlas.evaluation.baselines import (
    MLPBaseline,
    PCABaseline,
    RidgeBaseline,
    metadata_matrix,
    training_sample_rows,
)
from sematlas.evaluation.metrics import map_metrics

if TYPE_CHECKING:
    from sematlas.data.datamodule import NeurosynthDataModule
    from sematlas.evaluation.rendered import RenderedSplits

logger = logging.getLogger(__name__)

#: The baselines of :func:`linear_baseline_scores`, in the order their metric columns are stored.
LINEAR_METHODS = ("pca", "ridge", "mlp", "mean_map")
#: Raised when the scoring itself changes, so that scores saved by older code are not read back.
#: 2: the MLP baseline (:class:`~sematlas.evaluation.baselines.MLPBaseline`).
_SCORING_VERSION = 2


@dataclass(frozen=True)
class LinearBaselineScores:
    """Per-study metrics of the linear baselines on one held-out split; saves and loads itself.

    Attributes
    ----------
    metrics : dict of DataFrame
        ``pca``, ``ridge``, ``mlp``, ``mean_map`` -> the :func:`~sematlas.evaluation.metrics.map_metrics`
        frame of that baseline's predictions, one row per study of the split in split order.
    n_train : int
        Training studies (the mean map averages all of them).
    fitted_on : int
        Training maps PCA, ridge and the MLP were fitted on (a seeded sample,
        :func:`~sematlas.evaluation.baselines.training_sample_rows`).
    fingerprint : str
        :func:`baseline_fingerprint` of the inputs the scores were computed from.
    """

    metrics: dict[str, pd.DataFrame]
    n_train: int
    fitted_on: int
    fingerprint: str

    def save(self, folder: Path) -> Path:
        """Write ``<fingerprint>.parquet`` (columns ``<method>__<metric>``) and its ``.json`` summary, atomically.

        Returns
        -------
        Path
            The parquet file.
        """
        frame = pd.concat({method: self.metrics[method] for method in LINEAR_METHODS}, axis=1)
        frame.columns = [f"{method}__{metric}" for method, metric in frame.columns]
        table = write_parquet(frame, folder / f"{self.fingerprint}.parquet")
        # The summary last: it is what load() looks for, so a half-written pair is never read.
        summary = {"fingerprint": self.fingerprint, "n_train": self.n_train, "fitted_on": self.fitted_on}
        write_json(summary, table.with_suffix(".json"))
        return table

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> LinearBaselineScores | None:
        """The scores saved under ``fingerprint`` in ``folder``, or ``None`` when there are none."""
        summary_file, table_file = folder / f"{fingerprint}.json", folder / f"{fingerprint}.parquet"
        if not (summary_file.is_file() and table_file.is_file()):
            return None
        summary = read_json(summary_file)
        frame = pd.read_parquet(table_file)
        metrics = {
            method: frame[[c for c in frame.columns if c.startswith(f"{method}__")]].rename(
                columns=lambda column: column.split("__", 1)[1]
            )
            for method in LINEAR_METHODS
        }
        return cls(metrics, int(summary["n_train"]), int(summary["fitted_on"]), fingerprint)


def _ids_digest(datamodule: NeurosynthDataModule, split: str) -> str:
    ids = datamodule.tables[split].studies["id"].astype(str)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def baseline_fingerprint(
    datamodule: NeurosynthDataModule, split: str, z_dim: int, pca_max_train: int, seed: int
) -> str:
    """SHA-256 of everything the linear baselines' scores on ``split`` depend on.

    The curated peaks and studies (file contents), the training and held-out studies
    (their ids, in order), how maps are rendered (voxel size, kernels, truncation,
    kernel choice), the latent size, the PCA sample size, the seed and the scoring code's version.
    """
    processed = datamodule.processed_dir
    payload: dict[str, Any] = {
        "version": _SCORING_VERSION,
        "peaks": sha256_file(processed / "peaks.parquet"),
        "studies": sha256_file(processed / "studies.parquet"),
        "train_ids": _ids_digest(datamodule, "train"),
        "split": split,
        "split_ids": _ids_digest(datamodule, split),
        "render": [datamodule.voxel_size, list(datamodule.fwhms), datamodule.truncate, datamodule.kernel_choice],
        "z_dim": z_dim,
        "pca_max_train": pca_max_train,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _score(
    maps: RenderedSplits, datamodule: NeurosynthDataModule, split: str, z_dim: int, pca_max_train: int, seed: int
) -> tuple[dict[str, pd.DataFrame], int, int]:
    """Fit PCA (``z_dim`` components), ridge and the MLP on a seeded training sample; score them and the mean map."""
    all_train = maps.images("train")  # (n_train, C, V)
    held_out = maps.images(split)
    target = held_out[:, -1]  # the widest kernel
    rows = training_sample_rows(len(all_train), pca_max_train, seed)
    train_maps = all_train[torch.from_numpy(rows)]
    pca = PCABaseline(z_dim, seed).fit(train_maps.flatten(1).numpy())
    pca_reconstruction = torch.from_numpy(pca.reconstruct(held_out.flatten(1).numpy())).float()
    train_metadata = metadata_matrix(datamodule.meta["train"])[rows]
    held_out_metadata = metadata_matrix(datamodule.meta[split])
    ridge = RidgeBaseline().fit(train_metadata, train_maps[:, -1].numpy())
    mlp = MLPBaseline(seed=seed).fit(train_metadata, train_maps[:, -1].numpy())
    predictions = {
        "pca": pca_reconstruction.view_as(held_out)[:, -1],
        "ridge": torch.from_numpy(ridge.predict(held_out_metadata)).float(),
        "mlp": torch.from_numpy(mlp.predict(held_out_metadata)).float(),
        "mean_map": all_train[:, -1].mean(0, keepdim=True).expand_as(target),
    }
    mask = torch.from_numpy(datamodule.grid.mask())
    metrics = {method: map_metrics(predictions[method], target, mask) for method in LINEAR_METHODS}
    return metrics, len(all_train), len(rows)


def linear_baseline_scores(
    maps: RenderedSplits,
    datamodule: NeurosynthDataModule,
    split: str,
    z_dim: int,
    pca_max_train: int,
    seed: int,
    store: Path | None = None,
) -> LinearBaselineScores:
    """The linear baselines' per-study metrics on ``split``: read from ``store`` when saved there, else computed.

    Parameters
    ----------
    maps : RenderedSplits
        The stage's rendered splits (the training and held-out maps, rendered only on a miss).
    datamodule : NeurosynthDataModule
        Set up; its metadata and studies.
    split : str
        The held-out split scored.
    z_dim : int
        PCA components: the model's latent size.
    pca_max_train : int
        Training maps PCA, ridge and the MLP are fitted on, at most (a seeded sample).
    seed : int
    store : Path, optional
        Folder of saved scores (``data/cache/<profile>/linear_baselines``); computed scores are
        saved there. ``None``: always computed, nothing written.

    Returns
    -------
    LinearBaselineScores
    """
    fingerprint = baseline_fingerprint(datamodule, split, z_dim, pca_max_train, seed)
    if store is not None:
        saved = LinearBaselineScores.load(store, fingerprint)
        if saved is not None:
            logger.info("linear baselines on %s (k = %d) read from %s", split, z_dim, store / f"{fingerprint}.parquet")
            return saved
    logger.info("fitting the linear baselines (k = %d) and scoring them on %s", z_dim, split)
    scores = LinearBaselineScores(*_score(maps, datamodule, split, z_dim, pca_max_train, seed), fingerprint)
    if store is not None:
        scores.save(store)
    return scores


__all__ = ["LINEAR_METHODS", "LinearBaselineScores", "baseline_fingerprint", "linear_baseline_scores"]
