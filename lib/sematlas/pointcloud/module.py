"""Data, LightningModule and training run of the point-cloud C-VAE.

Batches are dicts: ``{"points": (batch, n_points, 3), "weights": (batch, n_points),
"meta": {...}, "id": [...]}``, points in the cache's scaled frame and ``meta`` as
in :mod:`sematlas.metadata`. Training goes through :func:`sematlas.train.fit_run`,
so the run folder ``data/models/<profile>/pointcloud/`` has the layout, resume
and fingerprint rules of every trained model of the compendium.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sematlas.curation import SPLITS
from sematlas.io import read_json
from sematlas.lightning import beta_at
from sematlas.losses import pointcloud_vae_loss
from sematlas.metadata import MetadataEncoder
from sematlas.paths import ProfilePaths
from sematlas.pointcloud.cache import PointCloudCache, load_or_build_cache
from sematlas.pointcloud.model import PointCloudConfig, PointCloudVAE
from sematlas.train import TrainedRun, fingerprint, fit_run

#: The run's name: its folder under ``data/models/<profile>/`` and the variant in its checkpoints.
RUN_NAME = "pointcloud"
#: Library sources whose change invalidates a point-cloud checkpoint.
SOURCES = ("pointcloud", "losses.py", "metadata.py")


@dataclass(frozen=True)
class PointSplit:
    """The studies of one split and their point sets.

    Attributes
    ----------
    studies : DataFrame
        One row per study, in table order.
    points : Tensor, shape (n_studies, n_points, 3)
        Scaled frame.
    weights : Tensor, shape (n_studies, n_points)
    counts : Tensor of int64, shape (n_studies,)
        Original peak counts.
    """

    studies: pd.DataFrame
    points: Tensor
    weights: Tensor
    counts: Tensor

    def __len__(self) -> int:
        return len(self.studies)


class _Indices(Dataset[int]):
    """Yields row indices; the collate function gathers the batch at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def cache_path(paths: ProfilePaths) -> Path:
    """Where a profile's point-cloud cache lives (beside the curated tables it is derived from)."""
    return paths.processed / "pointcloud.h5"


class PointCloudDataModule(pl.LightningDataModule):
    """Fixed-size peak sets of the Neurosynth studies, by split.

    Parameters
    ----------
    processed_dir : Path
        ``data/processed/<profile>`` written by the curation stage.
    cache_file : Path
        The HDF5 point-cloud cache (built on first use).
    n_points : int
    centre_mm : sequence of float
    scale_mm : float
        The cache's frame (see :mod:`sematlas.pointcloud.cache`).
    use_subset : bool
        The stratified development subset and its splits instead of all studies.
    batch_size : int
    seed : int
        Seeds the cache's resampling and the shuffling, so reruns see identical batches.
    """

    def __init__(
        self,
        processed_dir: Path,
        cache_file: Path,
        n_points: int = 30,
        centre_mm: tuple[float, float, float] = (0.0, -18.0, 18.0),
        scale_mm: float = 120.0,
        use_subset: bool = True,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.cache_file = Path(cache_file)
        self.n_points = n_points
        self.centre_mm = centre_mm
        self.scale_mm = scale_mm
        self.use_subset = use_subset
        self.batch_size = batch_size
        self.seed = seed
        self.tables: dict[str, PointSplit] = {}
        self.encoder: MetadataEncoder | None = None
        self.meta: dict[str, dict[str, Tensor]] = {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], paths: ProfilePaths) -> PointCloudDataModule:
        section = params["pointcloud"]
        return cls(
            paths.processed,
            cache_path(paths),
            n_points=section["n_points"],
            centre_mm=tuple(section["centre_mm"]),
            scale_mm=section["scale_mm"],
            use_subset=params["training"]["use_subset"],
            batch_size=section["batch_size"],
            seed=int(params["seed"]),
        )

    @property
    def split_column(self) -> str:
        return "subset_split" if self.use_subset else "split"

    @property
    def train_size(self) -> int:
        return len(self.tables["train"])

    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        self.cache: PointCloudCache = load_or_build_cache(
            self.processed_dir, self.cache_file, self.n_points, self.centre_mm, self.scale_mm, self.seed
        )
        studies = pd.read_parquet(self.processed_dir / "studies.parquet")
        if self.use_subset:
            studies = studies.loc[studies["in_subset"]]
        for split in SPLITS:
            rows = studies.loc[studies[self.split_column] == split].reset_index(drop=True)
            index = self.cache.rows(rows["id"].astype(str).tolist())
            self.tables[split] = PointSplit(
                studies=rows,
                points=torch.from_numpy(self.cache.points[index]),
                weights=torch.from_numpy(self.cache.weights[index]),
                counts=torch.from_numpy(self.cache.counts[index]),
            )
        manifest = read_json(self.processed_dir / "manifest.json")
        self.encoder = MetadataEncoder(
            categories=manifest["task_categories"], year_bin_edges=manifest["report"]["year_bin_edges"]
        )
        self.encoder.fit(self.tables["train"].studies)
        self.meta = {split: self.encoder.transform(table.studies) for split, table in self.tables.items()}

    def rows(self, split: str, rows: list[int]) -> dict[str, Any]:
        """A batch of ``split`` (row indices into its table)."""
        table = self.tables[split]
        index = torch.as_tensor(rows, dtype=torch.long)
        return {
            "points": table.points[index],
            "weights": table.weights[index],
            "meta": {key: value[index] for key, value in self.meta[split].items()},
            "id": table.studies["id"].iloc[rows].astype(str).tolist(),
        }

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split``; shuffled (seeded) only when ``shuffle`` (training)."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            _Indices(len(self.tables[split])),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=partial(self._collate, split=split),
            generator=generator,
            num_workers=0,
        )

    def _collate(self, rows: list[int], split: str) -> dict[str, Any]:
        return self.rows(split, rows)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


class PointCloudModule(pl.LightningModule):
    """Trains a :class:`PointCloudVAE` with :func:`sematlas.losses.pointcloud_vae_loss`.

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


def run_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's parameters with ``training.max_epochs``, ``batch_size`` and ``lr`` taken from
    ``pointcloud`` (what :func:`sematlas.train.fit_run` reads for the Trainer)."""
    resolved = copy.deepcopy(dict(params))
    section = resolved["pointcloud"]
    resolved["training"].update(max_epochs=section["max_epochs"], batch_size=section["batch_size"], lr=section["lr"])
    return resolved


def build_module(params: Mapping[str, Any], datamodule: PointCloudDataModule) -> PointCloudModule:
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


def make_datamodule(params: Mapping[str, Any], paths: ProfilePaths) -> PointCloudDataModule:
    """The profile's point-cloud DataModule, set up (cache read or built, metadata encoder fitted on train)."""
    datamodule = PointCloudDataModule.from_params(params, paths)
    datamodule.setup()
    return datamodule


def train_pointcloud(
    params: Mapping[str, Any],
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
        train_size=datamodule.train_size,
    )
