"""The LightningDataModule over Neurosynth studies, rendered on the fly.

Curation writes peaks, not volumes: the renderer is fast enough to turn a batch
of peak lists into density maps inside the data loader (see
``benchmarks/render_benchmark.py``), so augmentation (left-right flip, kernel
choice) costs nothing and nothing large is cached on disk.

Batches are dicts: ``{"image": (batch, channels, D, H, W), "meta": {...}, "id": [...]}``
on the padded grid of the profile, with ``meta`` as in :mod:`sematlas.core.metadata`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sematlas.core.grid import Grid, pad_to
from sematlas.core.metadata import MetadataEncoder
from sematlas.core.params import Params
from sematlas.core.progress import progress
from sematlas.data.render import PeakRenderer
from sematlas.data.studies import StudyDataModule


@dataclass(frozen=True)
class PeakTable:
    """The peaks of a set of studies in CSR form, on one voxel grid.

    Attributes
    ----------
    studies : DataFrame
        One row per study, in table order.
    ijk : ndarray of int64, shape (n_peaks, 3)
        Voxel indices of all peaks, study after study.
    offsets : ndarray of int64, shape (n_studies + 1,)
        Peaks of study ``s`` are ``ijk[offsets[s]:offsets[s + 1]]``.
    """

    studies: pd.DataFrame
    ijk: np.ndarray
    offsets: np.ndarray

    @classmethod
    def build(cls, studies: pd.DataFrame, peaks: pd.DataFrame, grid: Grid) -> PeakTable:
        studies = studies.reset_index(drop=True)
        peaks = peaks.loc[peaks["id"].isin(studies["id"])]
        codes = pd.Categorical(peaks["id"], categories=studies["id"]).codes
        sort = np.argsort(codes, kind="stable")
        xyz = peaks[["x", "y", "z"]].to_numpy(dtype=float)[sort]
        counts = np.bincount(codes, minlength=len(studies))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(studies=studies, ijk=grid.mm_to_voxel(xyz), offsets=offsets)

    def __len__(self) -> int:
        return len(self.studies)

    def gather(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Peaks of the given study rows: ``ijk`` (n, 3) and ``study_index`` (n,) into ``rows``."""
        picked = np.asarray(rows, dtype=np.int64)
        starts, stops = self.offsets[picked], self.offsets[picked + 1]
        index = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(picked) else np.zeros(0, int)
        return self.ijk[index], np.repeat(np.arange(len(rows)), stops - starts)


class _Rows(Dataset):
    """Yields row indices; the collate function renders the whole batch at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class NeurosynthDataModule(StudyDataModule):
    """Rendered Neurosynth studies for training and evaluation.

    Parameters
    ----------
    processed_dir : Path
        ``data/processed/<profile>`` written by the curation stage.
    voxel_size : int
        2 or 4 mm.
    fwhms : sequence of float
        Kernel FWHMs (mm), one channel each when ``kernel_choice="all"``.
    truncate : float
        Kernel support in standard deviations.
    use_subset : bool
        Train on the stratified development subset and its splits instead of all studies.
    batch_size : int
    flip_probability : float
        Probability of a left-right flip of a training study.
    kernel_choice : {"all", "random"}
        ``random`` gives one channel: a random kernel per training batch, the
        widest for evaluation.
    seed : int
        Seeds shuffling and augmentation, so reruns see identical batches.
    """

    def __init__(
        self,
        processed_dir: Path,
        voxel_size: int = 4,
        fwhms: Sequence[float] = (6.0, 12.0),
        truncate: float = 4.0,
        use_subset: bool = True,
        batch_size: int = 16,
        flip_probability: float = 0.5,
        kernel_choice: str = "all",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.voxel_size = voxel_size
        self.fwhms = tuple(fwhms)
        self.truncate = truncate
        self.use_subset = use_subset
        self.batch_size = batch_size
        self.flip_probability = flip_probability
        self.kernel_choice = kernel_choice
        self.seed = seed
        self.tables: dict[str, PeakTable] = {}
        self.encoder: MetadataEncoder | None = None

    @classmethod
    def from_params(
        cls, params: Params, processed_dir: Path, batch_size: int, use_subset: bool
    ) -> NeurosynthDataModule:
        render = params["render"]
        return cls(
            processed_dir,
            voxel_size=render["voxel_size"],
            fwhms=render["fwhms"],
            truncate=render["truncate"],
            use_subset=use_subset,
            batch_size=batch_size,
            flip_probability=render["flip_probability"],
            kernel_choice=render["kernel_choice"],
            seed=int(params["seed"]),
        )

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> Grid:
        return Grid(self.voxel_size)

    @property
    def n_channels(self) -> int:
        return 1 if self.kernel_choice == "random" else len(self.fwhms)

    def brain_mask(self) -> torch.Tensor:
        """The brain mask on the padded grid, shape ``(D, H, W)`` bool."""
        mask = torch.from_numpy(self.grid.mask())
        return pad_to(mask.to(torch.uint8), self.grid.padded_shape).bool()

    # ----------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        peaks = pd.read_parquet(self.processed_dir / "peaks.parquet")
        self.renderer = PeakRenderer(self.grid, fwhms=self.fwhms, truncate=self.truncate)
        for split, rows in self._studies_by_split().items():
            self.tables[split] = PeakTable.build(rows, peaks, self.grid)
        self._fit_metadata()
        self._augment_rng = torch.Generator().manual_seed(self.seed)

    # --------------------------------------------------------------------- batches
    def render_rows(self, split: str, rows: Sequence[int], augment: bool = False) -> dict[str, Any]:
        """Render and assemble a batch of studies of ``split`` (row indices into its table)."""
        table = self.tables[split]
        ijk, study_index = table.gather(rows)
        flip, channels = None, None
        if augment:
            flip = (torch.rand(len(rows), generator=self._augment_rng) < self.flip_probability).numpy()
        if self.kernel_choice == "random":
            pick = (
                int(torch.randint(len(self.fwhms), (1,), generator=self._augment_rng))
                if augment
                else len(self.fwhms) - 1
            )
            channels = [pick]
        image = self.renderer.render(ijk, study_index, len(rows), flip=flip, channels=channels)
        rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {
            "image": pad_to(image, self.grid.padded_shape),
            "meta": {key: value[rows_t] for key, value in self.meta[split].items()},
            "id": table.studies["id"].iloc[list(rows)].tolist(),
        }

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split``; shuffled and augmented only when ``shuffle`` (training)."""
        generator = torch.Generator().manual_seed(self.seed)
        collate = partial(self._collate, split=split, augment=shuffle)
        return DataLoader(
            _Rows(len(self.tables[split])),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=collate,
            generator=generator,
            num_workers=0,
        )

    def _collate(self, rows: list[int], split: str, augment: bool) -> dict[str, Any]:
        return self.render_rows(split, rows, augment=augment)

    def all_images(self, split: str, batch_size: int = 64, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Studies of ``split`` rendered, un-augmented, on the native grid flattened to the mask.

        Parameters
        ----------
        split : str
        batch_size : int
            Studies rendered at a time.
        rows : sequence of int, optional
            Row indices into the split's table (default: every study), rendered in this order.

        Returns
        -------
        Tensor, shape (n_studies, channels, n_mask_voxels)
            For linear baselines (PCA, ridge) and evaluation.
        """
        mask = torch.from_numpy(self.grid.mask())
        wanted = np.arange(len(self.tables[split])) if rows is None else np.asarray(rows, dtype=np.int64)
        chunks = []
        for start in progress(range(0, len(wanted), batch_size), f"rendering {split}", unit="batch"):
            image = self.render_rows(split, wanted[start : start + batch_size].tolist())["image"]
            chunks.append(image[..., : mask.shape[0], : mask.shape[1], : mask.shape[2]][..., mask])
        return torch.cat(chunks)
