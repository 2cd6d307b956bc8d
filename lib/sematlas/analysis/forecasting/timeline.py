"""What the Zeitgeist timeline draws: cluster and topic prevalence by year, and a task's map drifting with year."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sematlas.analysis.clustering import NOISE
from sematlas.core.io import write_nifti
from sematlas.inference.atlas import AtlasModel


def cluster_prevalence(assignments: pd.DataFrame, names: Mapping[int, str]) -> pd.DataFrame:
    """Fraction of each year's studies in each cluster, ``(years, clusters)``.

    Parameters
    ----------
    assignments : DataFrame
        ``year`` and ``cluster`` (:data:`sematlas.analysis.clustering.NOISE` for noise).
    names : mapping
        Cluster -> name; noise is named ``"noise"``.

    Returns
    -------
    DataFrame
        Index: the years that have studies; columns: cluster names (noise last); rows sum to 1.
    """
    labels = assignments["cluster"].map(lambda c: "noise" if c == NOISE else names.get(c, f"cluster {c}"))
    table = pd.crosstab(assignments["year"], labels, normalize="index")
    order = [c for c in table.columns if c != "noise"] + (["noise"] if "noise" in table.columns else [])
    return table[order]


def topic_prevalence(studies: pd.DataFrame, names: pd.Series, top: int) -> pd.DataFrame:
    """Mean LDA weight per year of the ``top`` topics whose weight changed most.

    Change is the absolute least-squares slope of a topic's yearly mean weight.

    Parameters
    ----------
    studies : DataFrame
        ``year`` and ``topic_00`` ...
    names : Series
        Topic column -> short name (:func:`sematlas.analysis.clustering.topic_names`).
    top : int

    Returns
    -------
    DataFrame
        Index: years; columns: topic names, steepest first.
    """
    yearly = studies.groupby("year")[list(names.index)].mean()
    slopes = np.polyfit(yearly.index.to_numpy(float), yearly.to_numpy(), 1)[0]
    steepest = yearly.iloc[:, np.argsort(-np.abs(slopes))[:top]]
    return steepest.rename(columns=lambda c: f"{c[-2:]} {names[c]}")


# ------------------------------------------------------------------------ drift
def drift_maps(
    atlas: AtlasModel, task: str, years: Sequence[int], n_samples: int, seed: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """A task's predicted map at several years: mean and sd over prior samples.

    The same ``n_samples`` standard-normal draws ``eps`` become codes
    ``z = mu(m) + sigma(m) * eps`` of the prior at every year (common random numbers),
    so differences between years come from the model's year input alone. The sd is the
    spread the latent prior induces, not the disagreement of an ensemble.

    Parameters
    ----------
    atlas : AtlasModel
        A conditional model.
    task : str
    years : sequence of int
    n_samples : int
        At least 2.
    seed : int

    Returns
    -------
    dict
        Year -> ``(mean, sd)``, each ``(D, H, W)`` on the native grid (widest kernel).
    """
    if n_samples < 2:
        raise ValueError(f"an sd needs at least 2 prior samples, got {n_samples}")
    eps = torch.randn(n_samples, atlas.z_dim, generator=torch.Generator().manual_seed(seed))
    maps = {}
    for year in years:
        request = {"task": task, "year": int(year)}
        samples = atlas.decode(atlas.prior_codes(request, eps), request)[:, -1].double().cpu().numpy()
        maps[int(year)] = (samples.mean(0), samples.std(0, ddof=1))
    return maps


def write_drift_maps(
    atlas: AtlasModel, maps: Mapping[int, tuple[np.ndarray, np.ndarray]], task: str, folder: str | os.PathLike[str]
) -> list[Path]:
    """Write ``drift_<task>_<year>_{mean,sd}.nii.gz`` atomically; return the paths."""
    written = []
    for year, pair in maps.items():
        for field, volume in zip(("mean", "sd"), pair):
            written.append(write_nifti(atlas.to_nifti(volume), Path(folder) / f"drift_{task}_{year}_{field}.nii.gz"))
    return written
