"""The LightningDataModule over Neurosynth studies, rendered on the fly.

Curation writes peaks, not volumes: the renderer is fast enough to turn a batch
of peak lists into density maps inside the data loader (see
``benchmarks/render_benchmark.py``), so augmentation (left-right flip, kernel
choice) costs nothing and nothing large is cached on disk.

Batches are dicts: ``{"image": (batch, channels, d, h, w), "meta": {...}, "id": [...]}``
on the network grid of the profile (:attr:`~sematlas.core.grid.Grid.network_shape`), with
``meta`` as in :mod:`sematlas.core.metadata`. A training epoch is ``training.studies_per_epoch``
studies drawn afresh every epoch, each training batch augmented from its own seeded stream
(:mod:`sematlas.data.studies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.grid import Grid
from sematlas.core.metadata import MetadataEncoder
from sematlas.core.params import Params
from sematlas.core.progress import progress
from sematlas.data.render import PeakRenderer
from sematlas.data.studies import StudyDataModule, seeded_generator


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
        Seeds the epochs' draws and the augmentation, so reruns see identical batches.
    studies_per_epoch : int
        Training studies drawn per epoch, afresh each epoch (0: every training study).
    val_studies : int
        Validation studies of the Trainer's validation loader, the first of the
        split (0: all); :meth:`loader` gives the whole split for evaluation.
    metadata : {"topics", "category"}
        What the metadata vector says the study is about: its LDA topic weights, or
        its task category (:class:`~sematlas.core.metadata.MetadataEncoder` ``inputs``).
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
        studies_per_epoch: int = 0,
        val_studies: int = 0,
        metadata: str = "topics",
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
        self.studies_per_epoch = studies_per_epoch
        self.val_studies = val_studies
        self.metadata = metadata
        self.tables: dict[str, PeakTable] = {}
        self.encoder: MetadataEncoder | None = None

    @classmethod
    def from_params(
        cls, params: Params, processed_dir: Path, batch_size: int, use_subset: bool
    ) -> NeurosynthDataModule:
        render, training = params["render"], params["training"]
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
            studies_per_epoch=training["studies_per_epoch"],
            val_studies=training["val_studies"],
            metadata=params["model"]["metadata"],
        )

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> Grid:
        return Grid(self.voxel_size)

    @property
    def n_channels(self) -> int:
        return 1 if self.kernel_choice == "random" else len(self.fwhms)

    def brain_mask(self) -> torch.Tensor:
        """The brain mask on the network grid, shape ``(d, h, w)`` bool."""
        return torch.from_numpy(self.grid.network_mask())

    # ----------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.tables:
            return
        peaks = pd.read_parquet(self.processed_dir / "peaks.parquet")
        self.renderer = PeakRenderer(self.grid, fwhms=self.fwhms, truncate=self.truncate)
        for split, rows in self._studies_by_split().items():
            self.tables[split] = PeakTable.build(rows, peaks, self.grid)
        self._fit_metadata()

    # --------------------------------------------------------------------- batches
    def render_rows(
        self, split: str, rows: Sequence[int], augment: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Render and assemble a batch of studies of ``split``.

        Parameters
        ----------
        split : str
        rows : sequence of int
            Row indices into the split's table.
        augment : bool
            Flip studies left-right with ``flip_probability`` and, with
            ``kernel_choice="random"``, pick the batch's kernel at random.
        generator : torch.Generator, optional
            The augmentation's draws (the training loader passes one per batch);
            default: a stream seeded by the DataModule's seed, run and ``rows``,
            so the same call gives the same batch.

        Returns
        -------
        dict
            ``image`` (batch, channels, D, H, W) on the network grid, ``meta`` and ``id``.
        """
        table = self.tables[split]
        ijk, study_index = table.gather(rows)
        flip, channels = None, None
        if augment:
            if generator is None:
                generator = seeded_generator(self.seed, self.run_key, "rows", *rows)
            flip = (torch.rand(len(rows), generator=generator) < self.flip_probability).numpy()
        if self.kernel_choice == "random":
            pick = int(torch.randint(len(self.fwhms), (1,), generator=generator)) if augment else len(self.fwhms) - 1
            channels = [pick]
        image = self.renderer.render(ijk, study_index, len(rows), flip=flip, channels=channels)
        rows_t = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {
            "image": self.grid.to_network(image),
            "meta": {key: value[rows_t] for key, value in self.meta[split].items()},
            "id": table.studies["id"].iloc[list(rows)].tolist(),
        }

    def _batch(self, split: str, rows: list[int], generator: torch.Generator | None) -> dict[str, Any]:
        return self.render_rows(split, rows, augment=generator is not None, generator=generator)

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
        mask = self.brain_mask()
        wanted = np.arange(len(self.tables[split])) if rows is None else np.asarray(rows, dtype=np.int64)
        chunks = []
        for start in progress(range(0, len(wanted), batch_size), f"rendering {split}", unit="batch"):
            image = self.render_rows(split, wanted[start : start + batch_size].tolist())["image"]
            chunks.append(image[..., mask])
        return torch.cat(chunks)
