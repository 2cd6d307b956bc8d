"""What every DataModule of the compendium shares: the curated studies by split and their metadata.

Both :class:`~sematlas.data.datamodule.NeurosynthDataModule` (rendered maps) and
:class:`~sematlas.data.pointcloud.PointCloudDataModule` (peak sets) read the
curated study table of stage 01, keep the development subset's split or the
full split, and encode every study's metadata with a
:class:`~sematlas.core.metadata.MetadataEncoder` fitted on the training split
alone, so that no statistic of the held-out studies leaks into the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
from torch import Tensor
from torch.utils.data import DataLoader

from sematlas.core.io import read_json
from sematlas.core.metadata import MetadataEncoder
from sematlas.data.splits import SPLITS


class StudyDataModule(pl.LightningDataModule):
    """Base of the DataModules: studies by split, the metadata encoder, and the three loaders.

    Subclasses set ``processed_dir`` and ``use_subset`` in their constructor, fill
    ``tables`` (one entry per split, each with a ``studies`` frame) in ``setup``
    and implement :meth:`loader`.

    Attributes
    ----------
    tables : dict
        Split name -> that split's studies and data.
    encoder : MetadataEncoder or None
        Fitted on the training split by :meth:`_fit_metadata`.
    meta : dict
        Split name -> encoded metadata tensors, one row per study.
    """

    processed_dir: Path
    use_subset: bool
    tables: dict[str, Any]
    encoder: MetadataEncoder | None
    meta: dict[str, dict[str, Tensor]]

    @property
    def split_column(self) -> str:
        """The column that assigns studies to splits: the subset's own split when training on the subset."""
        return "subset_split" if self.use_subset else "split"

    @property
    def train_size(self) -> int:
        return len(self.tables["train"])

    def _studies_by_split(self) -> dict[str, pd.DataFrame]:
        """The curated studies of each split, in table order (the subset's only, when asked)."""
        studies = pd.read_parquet(self.processed_dir / "studies.parquet")
        if self.use_subset:
            studies = studies.loc[studies["in_subset"]]
        return {split: studies.loc[studies[self.split_column] == split] for split in SPLITS}

    def _fit_metadata(self) -> None:
        """Fit the metadata encoder on the training studies and encode every split with it."""
        manifest = read_json(self.processed_dir / "manifest.json")
        self.encoder = MetadataEncoder(
            categories=manifest["task_categories"], year_bin_edges=manifest["report"]["year_bin_edges"]
        )
        self.encoder.fit(self.tables["train"].studies)
        self.meta = {split: self.encoder.transform(table.studies) for split, table in self.tables.items()}

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split``; shuffled (seeded) only when ``shuffle`` (training)."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)


__all__ = ["StudyDataModule"]
