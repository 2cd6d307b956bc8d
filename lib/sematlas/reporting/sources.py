"""The files the figures and the manuscript are drawn from: where each lies, who writes it, how it is read.

A results file is declared by its class (:func:`results_file`): the class knows
its location under ``data/results/<profile>/`` and reads itself. Tables and stage
01's files are declared by their place. The stage that writes a file is the stage
registry's answer (:func:`sematlas.pipeline.registry.writer_of`), never typed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from sematlas.core.io import read_json
from sematlas.core.paths import ProfilePaths
from sematlas.core.results import StageResults
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.pipeline.registry import Stage, writer_of

_T = TypeVar("_T")
_U = TypeVar("_U")
_R = TypeVar("_R", bound=StageResults)


@dataclass(frozen=True)
class Source(Generic[_T]):
    """One file a report reads.

    Parameters
    ----------
    locate : callable
        ``ProfilePaths -> Path``.
    read : callable
        ``Path -> object``.
    """

    locate: Callable[[ProfilePaths], Path]
    read: Callable[[Path], _T]

    def load(self, paths: ProfilePaths) -> _T:
        """Read the file of a profile."""
        return self.read(self.locate(paths))

    def writer(self, paths: ProfilePaths) -> Stage:
        """The stage that writes the file (asked of the stage registry)."""
        return writer_of(self.locate(paths), paths)

    def then(self, part: Callable[[_T], _U]) -> Source[_U]:
        """The same file, read on to a part of it, e.g. one section of a results object."""
        read = self.read
        return Source(self.locate, lambda path: part(read(path)))


def results_file(cls: type[_R], **names: str) -> Source[_R]:
    """A results file, read as its class, e.g. ``results_file(VolumetricResults, variant=variant)``."""
    return Source(lambda paths: cls.path(paths, **names), cls.load)


def results_table(relative: str) -> Source[pd.DataFrame]:
    """A Parquet table under ``data/results/<profile>/``."""
    return Source(lambda paths: paths.results / relative, pd.read_parquet)


#: Stage 01's files: the curated studies and the curation manifest (plain JSON, no results class).
STUDIES: Source[pd.DataFrame] = Source(lambda paths: paths.processed / "studies.parquet", pd.read_parquet)
MANIFEST: Source[Any] = Source(lambda paths: paths.processed / "manifest.json", read_json)


def category_maps(method: str) -> Source[np.ndarray]:
    """One method's category maps of stage 09 (``ConditionalAtlasResults.map_file``), ``(D, H, W, n_categories)``."""
    return Source(lambda paths: ConditionalAtlasResults.map_file(paths, method), _read_4d_nifti)


def _read_4d_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image) or image.ndim != 4:
        raise ValueError(f"{path} is not a 4-D NIfTI-1 image of category maps")
    return np.asarray(image.dataobj, dtype=np.float32)


def raw_file(name: str) -> Source[Path]:
    """A fetched input under ``data/raw/``, passed on as its path."""
    return Source(lambda paths: paths.raw / name, lambda path: path)


__all__ = ["MANIFEST", "STUDIES", "Source", "category_maps", "raw_file", "results_file", "results_table"]
