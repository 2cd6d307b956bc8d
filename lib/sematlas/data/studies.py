"""What every DataModule of the compendium shares: the curated studies by split, their metadata, and the draws.

Both :class:`~sematlas.data.datamodule.NeurosynthDataModule` (rendered maps) and
:class:`~sematlas.data.pointcloud.PointCloudDataModule` (peak sets) read the
curated study table of stage 01, keep the development subset's split or the
full split, and encode every study's metadata with a
:class:`~sematlas.core.metadata.MetadataEncoder` fitted on the training split
alone, so that no statistic of the held-out studies leaks into the inputs. What the
metadata vector says the study is about (``metadata``: its LDA topic weights, or
its task category) is the profile's ``model.metadata``; the encoder also keeps
the topics' key words (for topic names and text queries) from the LDA-50 keys
file the project fetched (``data/raw/neurosynth``).

Every random draw of a training run is a function of (seed, run, epoch,
position) and of nothing that happened before: the epoch's studies and their
order come from an :class:`EpochSampler` seeded by (seed, run, epoch), and each
training batch's augmentation from a generator seeded by (seed, run, epoch,
position of its first study in the epoch's draw). So a run resumed at an epoch
boundary, a run trained after others on the same DataModule and an
uninterrupted run see identical batches. The run is named by
:meth:`StudyDataModule.for_run` (``fit_run`` calls it); seeds are derived by
:func:`stable_seed`, never by Python's per-process salted ``hash``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Self

import lightning.pytorch as pl
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from sematlas.core.io import read_json
from sematlas.core.metadata import TOPIC_KEYS_FILE, MetadataEncoder, read_topic_keys
from sematlas.data.splits import SPLITS

logger = logging.getLogger(__name__)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (their ``str``), the same in every process, platform and Python version.

    Parameters
    ----------
    *parts
        What the stream depends on, e.g. ``(seed, run_key, "order", epoch)``.

    Returns
    -------
    int
        In ``[0, 2**63)``: valid for ``torch.Generator.manual_seed`` and NumPy.
    """
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def seeded_generator(*parts: object) -> torch.Generator:
    """A fresh CPU generator seeded by :func:`stable_seed` of ``parts``."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def epoch_size(n_rows: int, per_epoch: int) -> int:
    """Studies drawn per epoch from ``n_rows``: ``per_epoch`` (capped at ``n_rows``), or all when 0."""
    if per_epoch < 0:
        raise ValueError(f"studies per epoch must be >= 0 (0: all), got {per_epoch!r}")
    return n_rows if per_epoch == 0 else min(per_epoch, n_rows)


class EpochDraw(NamedTuple):
    """One study of an epoch's draw: the epoch, its position in the draw, and its row in the split's table."""

    epoch: int
    position: int
    row: int


class EpochSampler(Sampler[EpochDraw]):
    """The training studies of one epoch, in order: a seeded draw without replacement, fresh every epoch.

    Lightning calls :meth:`set_epoch` before every training epoch (also after a
    resume, with the number of completed epochs), so the draw of epoch ``e`` is
    the same whatever ran before. Under DDP Lightning wraps this sampler in its
    ``DistributedSamplerWrapper`` (without shuffling, since this is not a
    ``RandomSampler``), which forwards ``set_epoch`` and gives rank ``r`` the draws
    ``r, r + world_size, ...`` of the same epoch's list: disjoint shares (the last
    ones padded with the first draws to equal length).

    Parameters
    ----------
    n_rows : int
        Studies in the split.
    per_epoch : int
        Studies per epoch (0: all of them, reshuffled every epoch).
    seed : int
    run_key : str
        The run (see :meth:`StudyDataModule.for_run`).

    Notes
    -----
    Yields :class:`EpochDraw` items, so the epoch and position travel with each
    study to the collate function (also into worker processes, where this
    sampler's ``epoch`` would be a stale copy).
    """

    def __init__(self, n_rows: int, per_epoch: int = 0, *, seed: int, run_key: str) -> None:
        self.n_rows = n_rows
        self.size = epoch_size(n_rows, per_epoch)
        self.seed = seed
        self.run_key = run_key
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def rows(self) -> list[int]:
        """This epoch's rows, in order (``len(self)`` distinct rows of the split's table)."""
        order = torch.randperm(self.n_rows, generator=seeded_generator(self.seed, self.run_key, "order", self.epoch))
        return order[: self.size].tolist()

    def __iter__(self) -> Iterator[EpochDraw]:
        return (EpochDraw(self.epoch, position, row) for position, row in enumerate(self.rows()))


class IndexDataset(Dataset[Any]):
    """Hands each key of the sampler (a row index or an :class:`EpochDraw`) to the collate function,
    which builds the whole batch at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Any) -> Any:
        return key


class StudyDataModule(pl.LightningDataModule):
    """Base of the DataModules: studies by split, the metadata encoder, the loaders and their seeded draws.

    Subclasses set ``processed_dir``, ``use_subset``, ``batch_size``, ``seed`` and
    ``metadata`` in their constructor, fill ``tables`` (one entry per split, each with a
    ``studies`` frame) in ``setup`` and implement :meth:`_batch`.

    Attributes
    ----------
    tables : dict
        Split name -> that split's studies and data.
    metadata : {"topics", "category"}
        What the encoder's ``cond`` holds besides year, peaks and space
        (:class:`~sematlas.core.metadata.MetadataEncoder` ``inputs``).
    encoder : MetadataEncoder or None
        Fitted on the training split by :meth:`_fit_metadata`.
    meta : dict
        Split name -> encoded metadata tensors, one row per study.
    studies_per_epoch : int
        Training studies drawn per epoch (0: all).
    val_studies : int
        Validation studies the Trainer validates on, the first of the split (0: all).
    run_key : str
        The run whose draws this DataModule makes (set by :meth:`for_run`).
    """

    processed_dir: Path
    use_subset: bool
    batch_size: int
    seed: int
    metadata: str = "topics"
    tables: dict[str, Any]
    encoder: MetadataEncoder | None
    meta: dict[str, dict[str, Tensor]]
    studies_per_epoch: int = 0
    val_studies: int = 0
    run_key: str = ""

    def for_run(self, run_key: str, seed: int | None = None) -> Self:
        """This DataModule (sharing its tables) drawing for one run: runs that share a DataModule draw apart.

        Parameters
        ----------
        run_key : str
            The run's name (its folder under ``data/models/<profile>/``).
        seed : int, optional
            The run's seed, when it differs from the DataModule's (e.g. an ensemble member's).

        Returns
        -------
        StudyDataModule
            A shallow copy; ``self`` is unchanged.
        """
        view = copy.copy(self)
        view.run_key = run_key
        view.seed = self.seed if seed is None else int(seed)
        return view

    @property
    def split_column(self) -> str:
        """The column that assigns studies to splits: the subset's own split when training on the subset."""
        return "subset_split" if self.use_subset else "split"

    @property
    def train_size(self) -> int:
        """Studies in the training split."""
        return len(self.tables["train"])

    @property
    def studies_per_epoch_count(self) -> int:
        """Training studies of one epoch (``studies_per_epoch``, capped at the split, or all of it)."""
        return epoch_size(self.train_size, self.studies_per_epoch)

    def _studies_by_split(self) -> dict[str, pd.DataFrame]:
        """The curated studies of each split, in table order (the subset's only, when asked)."""
        studies = pd.read_parquet(self.processed_dir / "studies.parquet")
        if self.use_subset:
            studies = studies.loc[studies["in_subset"]]
        return {split: studies.loc[studies[self.split_column] == split] for split in SPLITS}

    def _topic_keys_file(self, manifest: dict[str, Any]) -> Path | None:
        """The LDA-50 topic keys the project fetched, or None where there are none.

        Looked for in ``data/raw/neurosynth/`` of the project holding ``processed_dir``
        (``data/processed/<profile>``), then in the folder the curation manifest records
        its inputs came from (``report.inputs_source.folder``).

        Parameters
        ----------
        manifest : dict
            The curation manifest of ``processed_dir``.

        Returns
        -------
        Path or None
        """
        folders = [self.processed_dir.resolve().parent.parent / "raw" / "neurosynth"]
        recorded = manifest.get("report", {}).get("inputs_source", {}).get("folder")
        if recorded:
            folders.append(Path(recorded))
        for folder in folders:
            if (folder / TOPIC_KEYS_FILE).is_file():
                return folder / TOPIC_KEYS_FILE
        logger.warning(
            "no %s in %s: the metadata encoder is fitted without topic keys, so it has no topic names "
            "and refuses text queries",
            TOPIC_KEYS_FILE,
            " or ".join(str(folder) for folder in folders),
        )
        return None

    def _fit_metadata(self) -> None:
        """Fit the metadata encoder on the training studies and encode every split with it."""
        manifest = read_json(self.processed_dir / "manifest.json")
        self.encoder = MetadataEncoder(
            categories=manifest["task_categories"],
            year_bin_edges=manifest["report"]["year_bin_edges"],
            inputs=self.metadata,
        )
        keys_file = self._topic_keys_file(manifest)
        topic_keys = read_topic_keys(keys_file) if keys_file is not None else None
        self.encoder.fit(self.tables["train"].studies, topic_keys=topic_keys)
        self.meta = {split: self.encoder.transform(table.studies) for split, table in self.tables.items()}

    def epoch_sampler(self, split: str = "train") -> EpochSampler:
        """The seeded per-epoch draw of ``split``'s studies (``studies_per_epoch`` of them) for this run."""
        return EpochSampler(len(self.tables[split]), self.studies_per_epoch, seed=self.seed, run_key=self.run_key)

    def loader(self, split: str, shuffle: bool = False, first: int = 0) -> DataLoader:
        """Batches of ``split``.

        Parameters
        ----------
        split : str
        shuffle : bool
            Training batches: the epoch's draw of :meth:`epoch_sampler`, augmented.
            Otherwise the studies in table order, unaugmented.
        first : int
            Unshuffled only: serve the first ``first`` studies (0: all of them).

        Returns
        -------
        DataLoader
        """
        n_rows = len(self.tables[split])
        # A generator of the loader's own: without one, every iterator draws its workers' base
        # seed from (and so advances) torch's global generator.
        generator = seeded_generator(self.seed, self.run_key, "loader", split)
        if shuffle:
            return DataLoader(
                IndexDataset(n_rows),
                batch_size=self.batch_size,
                sampler=self.epoch_sampler(split),
                collate_fn=partial(self._collate_draws, split=split),
                generator=generator,
                num_workers=0,
            )
        return DataLoader(
            IndexDataset(min(first, n_rows) if first > 0 else n_rows),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=partial(self._collate_rows, split=split),
            generator=generator,
            num_workers=0,
        )

    def _collate_rows(self, rows: list[int], split: str) -> dict[str, Any]:
        return self._batch(split, rows, None)

    def _collate_draws(self, draws: list[EpochDraw], split: str) -> dict[str, Any]:
        # The batch's first draw names it: distinct batches (and DDP ranks) get distinct streams.
        first = draws[0]
        generator = seeded_generator(self.seed, self.run_key, "augment", first.epoch, first.position)
        return self._batch(split, [draw.row for draw in draws], generator)

    def _batch(self, split: str, rows: list[int], generator: torch.Generator | None) -> dict[str, Any]:
        """The batch of ``split``'s ``rows``: augmented with draws from ``generator`` (training), or not (``None``)."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", first=self.val_studies)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


__all__ = [
    "EpochDraw",
    "EpochSampler",
    "IndexDataset",
    "StudyDataModule",
    "epoch_size",
    "seeded_generator",
    "stable_seed",
]
