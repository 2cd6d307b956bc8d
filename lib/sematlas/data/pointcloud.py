"""The point-cloud C-VAE's data: every study's fixed-size peak set, by split.

Batches are dicts: ``{"points": (batch, n_points, 3), "weights": (batch, n_points),
"meta": {...}, "id": [...]}``, points in the cache's scaled frame
(:mod:`sematlas.data.pointcloud_cache`) and ``meta`` as in :mod:`sematlas.core.metadata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from sematlas.core.metadata import MetadataEncoder
from sematlas.core.params import Params
from sematlas.core.paths import ProfilePaths
from sematlas.data.pointcloud_cache import PointCloudCache, load_or_build_cache
from sematlas.data.studies import StudyDataModule


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


def cache_path(paths: ProfilePaths) -> Path:
    """Where a profile's point-cloud cache lives (beside the curated tables it is derived from)."""
    return paths.processed / "pointcloud.h5"


class PointCloudDataModule(StudyDataModule):
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
        The cache's frame (see :mod:`sematlas.data.pointcloud_cache`).
    use_subset : bool
        The stratified development subset and its splits instead of all studies.
    batch_size : int
    seed : int
        Seeds the cache's resampling and the epochs' draws, so reruns see identical batches.
    metadata : {"topics", "category"}
        What the metadata vector says the study is about: its LDA topic weights, or
        its task category (:class:`~sematlas.core.metadata.MetadataEncoder` ``inputs``).

    Notes
    -----
    The peaks' duplication and dropout to ``n_points`` is drawn once per study
    (keyed by its id, in the cache), so training batches carry no further
    augmentation; every epoch is the whole training split in a fresh order
    seeded by (seed, run, epoch) (:class:`~sematlas.data.studies.EpochSampler`).
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
        metadata: str = "topics",
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
        self.metadata = metadata
        self.tables: dict[str, PointSplit] = {}
        self.encoder: MetadataEncoder | None = None
        self.meta: dict[str, dict[str, Tensor]] = {}

    @classmethod
    def from_params(cls, params: Params, paths: ProfilePaths) -> PointCloudDataModule:
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
            metadata=params["model"]["metadata"],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        self.cache: PointCloudCache = load_or_build_cache(
            self.processed_dir, self.cache_file, self.n_points, self.centre_mm, self.scale_mm, self.seed
        )
        for split, studies in self._studies_by_split().items():
            rows = studies.reset_index(drop=True)
            index = self.cache.rows(rows["id"].astype(str).tolist())
            self.tables[split] = PointSplit(
                studies=rows,
                points=torch.from_numpy(self.cache.points[index]),
                weights=torch.from_numpy(self.cache.weights[index]),
                counts=torch.from_numpy(self.cache.counts[index]),
            )
        self._fit_metadata()

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

    def _batch(self, split: str, rows: list[int], generator: torch.Generator | None) -> dict[str, Any]:
        # Nothing to augment (see the class notes): training and evaluation batches are alike.
        return self.rows(split, rows)


def make_datamodule(params: Params, paths: ProfilePaths) -> PointCloudDataModule:
    """The profile's point-cloud DataModule, set up (cache read or built, metadata encoder fitted on train)."""
    datamodule = PointCloudDataModule.from_params(params, paths)
    datamodule.setup()
    return datamodule


__all__ = ["PointCloudDataModule", "PointSplit", "cache_path", "make_datamodule"]
