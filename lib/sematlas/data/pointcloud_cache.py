"""The point-cloud cache: every study's peaks as a fixed-size set of points, in HDF5.

A study has 3 to a few hundred peaks; the point-cloud model reads exactly
``n_points`` per study. :func:`normalise_points` gets there by seeded random
duplication of peaks (fewer peaks) or dropout (more peaks), and gives each point
a weight so that every original peak carries the same mass (a peak copied k
times puts 1/k of it on each copy). Coordinates stay in MNI mm in the curated
tables; the cache holds them shifted by ``centre_mm`` and divided by
``scale_mm`` into [-1, 1], with both stored so that :meth:`PointCloudCache.to_mm`
maps any decoded point back to millimetres.

The cache (``data/processed/<profile>/pointcloud.h5``) is written atomically and
rebuilt only when its key changes: the checksums of the curated tables (from
the curation manifest), ``n_points``, the frame and the seed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from sematlas.core.io import atomic_path, read_json

#: Bumped when the cache layout or the normalisation changes.
CACHE_VERSION = 1


def study_rng(seed: int, study_id: str) -> np.random.Generator:
    """The random stream of one study, keyed by its id (not its row), so a study gets the
    same points whatever other studies share the table."""
    return np.random.default_rng([int(seed), zlib.crc32(str(study_id).encode())])


def normalise_points(xyz: np.ndarray, n_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``n_points`` points drawn from a study's peaks, and their weights.

    More peaks than ``n_points``: a uniformly random subset (dropout). Fewer:
    every peak once, plus ``n_points - n`` copies of peaks drawn uniformly with
    replacement (duplication). Every returned point is one of the peaks.

    Parameters
    ----------
    xyz : ndarray, shape (n, 3)
        The study's peaks, ``n >= 1``.
    n_points : int
    rng : numpy Generator

    Returns
    -------
    points : ndarray, shape (n_points, 3)
    weights : ndarray of float64, shape (n_points,)
        ``1 / (multiplicity * min(n, n_points))``: sums to 1, and each distinct
        peak that was kept carries the same total weight.
    """
    n = len(xyz)
    if n == 0:
        raise ValueError("a study without peaks cannot be normalised")
    if n >= n_points:
        index = rng.choice(n, n_points, replace=False)
    else:
        index = np.concatenate([np.arange(n), rng.choice(n, n_points - n, replace=True)])
    multiplicity = np.bincount(index, minlength=n)[index]
    return np.asarray(xyz, dtype=np.float64)[index], 1.0 / (multiplicity * min(n, n_points))


def normalise_studies(
    ids: Sequence[str], peaks: pd.DataFrame, n_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`normalise_points` for many studies, each with its own :func:`study_rng`.

    Parameters
    ----------
    ids : sequence of str
        Study ids, in output order.
    peaks : DataFrame
        Columns ``id``, ``x``, ``y``, ``z`` (MNI mm).
    n_points, seed : int

    Returns
    -------
    points_mm : ndarray of float32, shape (n_studies, n_points, 3)
    weights : ndarray of float32, shape (n_studies, n_points)
    counts : ndarray of int64, shape (n_studies,)
        The original number of peaks of each study.
    """
    ids = [str(i) for i in ids]
    peaks = peaks.loc[peaks["id"].astype(str).isin(ids)]
    codes = pd.Categorical(peaks["id"].astype(str), categories=ids).codes
    order = np.argsort(codes, kind="stable")
    xyz = peaks[["x", "y", "z"]].to_numpy(dtype=np.float64)[order]
    counts = np.bincount(codes, minlength=len(ids)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    points = np.empty((len(ids), n_points, 3), dtype=np.float32)
    weights = np.empty((len(ids), n_points), dtype=np.float32)
    for row, study_id in enumerate(ids):
        if counts[row] == 0:
            raise ValueError(f"study {study_id} has no peaks in the peak table")
        points[row], weights[row] = normalise_points(
            xyz[offsets[row] : offsets[row + 1]], n_points, study_rng(seed, study_id)
        )
    return points, weights, counts


@dataclass(frozen=True)
class PointCloudCache:
    """Fixed-size point sets of studies, in the scaled frame.

    Attributes
    ----------
    ids : ndarray of str, shape (n_studies,)
    points : ndarray of float32, shape (n_studies, n_points, 3)
        ``(xyz_mm - centre_mm) / scale_mm``, inside [-1, 1].
    weights : ndarray of float32, shape (n_studies, n_points)
        Point masses, summing to 1 per study (see :func:`normalise_points`).
    counts : ndarray of int64, shape (n_studies,)
        Original peak counts.
    centre_mm : ndarray of float64, shape (3,)
    scale_mm : float
    seed : int
    """

    ids: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    centre_mm: np.ndarray
    scale_mm: float
    seed: int

    @property
    def n_points(self) -> int:
        return int(self.points.shape[1])

    def to_mm(self, points: np.ndarray) -> np.ndarray:
        """Scaled points ``(..., 3)`` -> MNI mm."""
        return np.asarray(points) * self.scale_mm + self.centre_mm

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row indices of study ids (KeyError naming the first unknown id)."""
        lookup = {study_id: row for row, study_id in enumerate(self.ids)}
        missing = [i for i in map(str, ids) if i not in lookup]
        if missing:
            raise KeyError(f"study {missing[0]!r} is not in the point-cloud cache")
        return np.array([lookup[str(i)] for i in ids], dtype=np.int64)


def build_cache(
    studies: pd.DataFrame, peaks: pd.DataFrame, n_points: int, centre_mm: Sequence[float], scale_mm: float, seed: int
) -> PointCloudCache:
    """Normalise and scale the peaks of every study in ``studies``.

    Raises
    ------
    ValueError
        A study without peaks, or a peak outside the ``scale_mm`` box around ``centre_mm``.
    """
    ids = studies["id"].astype(str).to_numpy()
    points_mm, weights, counts = normalise_studies(list(ids), peaks, n_points, seed)
    centre = np.asarray(centre_mm, dtype=np.float64)
    points = ((points_mm - centre) / scale_mm).astype(np.float32)
    outside = np.abs(points).max(axis=(1, 2)) > 1.0
    if outside.any():
        raise ValueError(
            f"study {ids[outside][0]} has a peak more than {scale_mm} mm from {centre.tolist()} "
            f"on some axis; raise pointcloud.scale_mm"
        )
    return PointCloudCache(
        ids=ids,
        points=points,
        weights=weights,
        counts=counts,
        centre_mm=centre,
        scale_mm=float(scale_mm),
        seed=int(seed),
    )


def write_cache(cache: PointCloudCache, path: Path, key: str) -> None:
    """Write the cache atomically, with the key that decides whether it is still up to date."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("ids", data=cache.ids.astype(object), dtype=h5py.string_dtype())
        handle.create_dataset("points", data=cache.points)
        handle.create_dataset("weights", data=cache.weights)
        handle.create_dataset("counts", data=cache.counts)
        handle.attrs.update(
            {
                "key": key,
                "centre_mm": cache.centre_mm,
                "scale_mm": cache.scale_mm,
                "seed": cache.seed,
                "version": CACHE_VERSION,
            }
        )


def read_cache(path: Path) -> tuple[PointCloudCache, str]:
    """The cache at ``path`` and its key."""
    with h5py.File(path, "r") as handle:
        cache = PointCloudCache(
            ids=np.asarray(handle["ids"].asstr()[:], dtype=str),
            points=handle["points"][:],
            weights=handle["weights"][:],
            counts=handle["counts"][:],
            centre_mm=np.asarray(handle.attrs["centre_mm"], dtype=np.float64),
            scale_mm=float(handle.attrs["scale_mm"]),
            seed=int(handle.attrs["seed"]),
        )
        return cache, str(handle.attrs["key"])


def cache_key(processed_dir: Path, n_points: int, centre_mm: Sequence[float], scale_mm: float, seed: int) -> str:
    """What the cache depends on: the curated tables (their manifest checksums) and the settings."""
    outputs: dict[str, Any] = read_json(Path(processed_dir) / "manifest.json")["outputs_sha256"]
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "studies": outputs["studies.parquet"],
            "peaks": outputs["peaks.parquet"],
            "n_points": int(n_points),
            "centre_mm": [float(c) for c in centre_mm],
            "scale_mm": float(scale_mm),
            "seed": int(seed),
        },
        sort_keys=True,
    )


def load_or_build_cache(
    processed_dir: Path, path: Path, n_points: int, centre_mm: Sequence[float], scale_mm: float, seed: int
) -> PointCloudCache:
    """The cache of every curated study: read from ``path`` when up to date, else built and written.

    Parameters
    ----------
    processed_dir : Path
        ``data/processed/<profile>`` (``studies.parquet``, ``peaks.parquet``, ``manifest.json``).
    path : Path
        The HDF5 file.
    n_points, centre_mm, scale_mm, seed
        See :func:`build_cache`.

    Returns
    -------
    PointCloudCache
    """
    key = cache_key(processed_dir, n_points, centre_mm, scale_mm, seed)
    if path.is_file():
        cache, stored = read_cache(path)
        if stored == key:
            return cache
    studies = pd.read_parquet(Path(processed_dir) / "studies.parquet", columns=["id"])
    peaks = pd.read_parquet(Path(processed_dir) / "peaks.parquet", columns=["id", "x", "y", "z"])
    cache = build_cache(studies, peaks, n_points, centre_mm, scale_mm, seed)
    write_cache(cache, path, key)
    return cache
