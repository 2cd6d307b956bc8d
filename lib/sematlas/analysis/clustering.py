"""HDBSCAN of a model's latent space: clusters of studies, named by their LDA topics and task categories.

>>> clustering = LatentClustering(min_cluster_size=15, min_samples=5, n_bootstrap=20, seed=0)  # doctest: +SKIP
>>> clustering.fit(latent_matrix(latents))                                                  # doctest: +SKIP
>>> clustering.labels_, clustering.noise_fraction_, clustering.bootstrap_ari_.mean()         # doctest: +SKIP

Choices, and why:

- **Standardised latents.** HDBSCAN (Campello et al., 2013; McInnes et al., 2017) works on
  Euclidean distances, and the posterior means of a VAE do not share a scale: a dimension the
  KL term has nearly collapsed varies by a few hundredths, an informative one by a unit or
  more, and their means sit far from zero. Standardising each dimension (z-scores over the
  clustered studies) lets every latent direction count equally instead of the widest one.
- **Topic lift, not raw weight.** A few LDA topics (generic ones about cortex, networks or
  methods) carry a large weight in nearly every abstract, so the highest *mean* topics of any
  cluster are the same handful. Dividing a cluster's mean topic weight by the mean over all
  studies of the analysis, noise included (the lift), names a cluster by what sets it apart.
- **Stability by subsampling.** Each bootstrap draws ``bootstrap_fraction`` of the studies
  *without replacement* (duplicated points would form spurious dense clumps for a density
  method), reruns the whole pipeline (standardisation + HDBSCAN) and compares its labels with
  the full-data labels on the studies both saw, by the adjusted Rand index (Hubert & Arabie,
  1985). Noise is handled two ways, both reported: ``ari`` treats noise (-1) as one more label
  over all shared studies, so a study moving between noise and a cluster counts as a
  disagreement; ``ari_clustered`` keeps only the studies that both fits put in a cluster.
  When the full data has no cluster there is nothing to be stable: both are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hdbscan
import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score

from sematlas.core.io import write_nifti

NOISE = -1


# ------------------------------------------------------------------------- inputs
def latent_columns(frame: pd.DataFrame) -> list[str]:
    """The latent columns ``z_00``, ``z_01``, ... of a latents table, in order."""
    columns = sorted(c for c in frame.columns if c.startswith("z_"))
    if not columns:
        raise ValueError("no latent columns (z_00, z_01, ...) in the latents table")
    return columns


def latent_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Posterior means of a latents table as an array of shape ``(n_studies, z_dim)``, float64."""
    return frame[latent_columns(frame)].to_numpy(dtype=np.float64)


def topic_names(keys_path: str | Path, n_words: int = 3) -> pd.Series:
    """Short topic names from the Neurosynth LDA keys: the first ``n_words`` key words.

    Returns
    -------
    Series
        Indexed by the ``topic_XX`` column names of ``studies.parquet``, e.g.
        ``topic_00 -> "network state resting"``.
    """
    keys = pd.read_csv(keys_path, sep="\t", header=None, names=["topic", "weight", "words"])
    return pd.Series(
        [" ".join(str(words).split()[:n_words]) for words in keys["words"]],
        index=[f"topic_{int(t):02d}" for t in keys["topic"]],
        name="topic",
    )


def load_inputs(latents_path: str | Path, studies_path: str | Path) -> pd.DataFrame:
    """Latents joined with the study metadata (year, task category, topic weights), one row per latent.

    Raises
    ------
    ValueError
        A latent row whose study is not in the studies table.
    """
    latents = pd.read_parquet(latents_path)
    latents["id"] = latents["id"].astype(str)
    studies = pd.read_parquet(studies_path)
    studies["id"] = studies["id"].astype(str)
    keep = ["id", "year", "task_category", *[c for c in studies.columns if c.startswith("topic_")]]
    joined = latents.merge(studies[keep], on="id", how="left", validate="one_to_one")
    missing = joined["year"].isna()
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} latent rows have no study metadata, e.g. id {joined['id'][missing].iloc[0]}"
        )
    return joined


# ------------------------------------------------------------------------ fitting
def standardise(z: np.ndarray) -> np.ndarray:
    """Z-scores of each latent dimension over the rows given (a constant dimension becomes 0), same shape."""
    z = np.asarray(z, dtype=np.float64)
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _hdbscan_labels(z: np.ndarray, min_cluster_size: int, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    # Standardise over the rows given (see the module notes), then HDBSCAN; deterministic for given data.
    model = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, core_dist_n_jobs=1)
    model.fit(standardise(z))
    return model.labels_.astype(np.int64), model.probabilities_.astype(np.float64)


def _ari(reference: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    # (noise as a label over all studies, only the studies clustered by both fits)
    both = (reference != NOISE) & (labels != NOISE)
    clustered = float(adjusted_rand_score(reference[both], labels[both])) if both.sum() >= 2 else float("nan")
    return float(adjusted_rand_score(reference, labels)), clustered


class LatentClustering:
    """HDBSCAN of standardised latents with bootstrap stability.

    Parameters
    ----------
    min_cluster_size : int
        HDBSCAN's smallest cluster.
    min_samples : int
        HDBSCAN's density smoothing (neighbours of a core point); larger = more noise.
    n_bootstrap : int
        Subsamples refitted for the stability estimate (0 skips it).
    bootstrap_fraction : float
        Fraction of the studies in each subsample, in (0, 1].
    seed : int
        Seeds the subsamples; HDBSCAN itself is deterministic.

    Attributes
    ----------
    labels_ : ndarray, shape (n_studies,)
        Cluster of each study, ``-1`` = noise; clusters are numbered ``0 .. n_clusters_ - 1``.
    probabilities_ : ndarray, shape (n_studies,)
        HDBSCAN membership strength in [0, 1]; 0 for noise.
    n_clusters_ : int
    noise_fraction_ : float
    bootstrap_ari_ : ndarray, shape (n_bootstrap,)
        ARI with the full-data labels, noise as one more label (NaN without clusters).
    bootstrap_ari_clustered_ : ndarray, shape (n_bootstrap,)
        ARI on the studies both fits put in a cluster (NaN with fewer than two of them).
    bootstrap_n_clusters_ : ndarray, shape (n_bootstrap,)
        Clusters found in each subsample.

    Notes
    -----
    ``__init__`` only stores parameters; :meth:`fit` does the work.
    """

    def __init__(
        self,
        min_cluster_size: int = 15,
        min_samples: int = 5,
        n_bootstrap: int = 20,
        bootstrap_fraction: float = 0.8,
        seed: int = 0,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.n_bootstrap = n_bootstrap
        self.bootstrap_fraction = bootstrap_fraction
        self.seed = seed

    @classmethod
    def from_params(cls, section: Mapping[str, Any], seed: int) -> LatentClustering:
        """From the ``clustering`` section of a parameter profile."""
        return cls(
            min_cluster_size=int(section["min_cluster_size"]),
            min_samples=int(section["min_samples"]),
            n_bootstrap=int(section["n_bootstrap"]),
            bootstrap_fraction=float(section["bootstrap_fraction"]),
            seed=int(seed),
        )

    def fit(self, z: np.ndarray) -> LatentClustering:
        """Cluster the latents and estimate stability.

        Parameters
        ----------
        z : array, shape (n_studies, z_dim)
            Posterior means in the model's units.

        Returns
        -------
        self
        """
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or len(z) < 2:
            raise ValueError(f"expected latents of shape (n_studies >= 2, z_dim), got {z.shape}")
        if not 0 < self.bootstrap_fraction <= 1 or self.n_bootstrap < 0:
            raise ValueError(
                f"need 0 < bootstrap_fraction <= 1 and n_bootstrap >= 0, got {self.bootstrap_fraction}, "
                f"{self.n_bootstrap}"
            )
        self.labels_, self.probabilities_ = _hdbscan_labels(z, self.min_cluster_size, self.min_samples)
        self.n_clusters_ = int(self.labels_.max() + 1)
        self.noise_fraction_ = float(np.mean(self.labels_ == NOISE))
        rng = np.random.default_rng(self.seed)
        size = max(2, round(self.bootstrap_fraction * len(z)))
        ari, ari_clustered, n_clusters = [], [], []
        for _ in range(self.n_bootstrap):
            rows = np.sort(rng.choice(len(z), size=size, replace=False))
            labels, _ = _hdbscan_labels(z[rows], self.min_cluster_size, self.min_samples)
            pair = _ari(self.labels_[rows], labels) if self.n_clusters_ else (float("nan"), float("nan"))
            ari.append(pair[0])
            ari_clustered.append(pair[1])
            n_clusters.append(int(labels.max() + 1))
        self.bootstrap_ari_ = np.asarray(ari, dtype=np.float64)
        self.bootstrap_ari_clustered_ = np.asarray(ari_clustered, dtype=np.float64)
        self.bootstrap_n_clusters_ = np.asarray(n_clusters, dtype=np.int64)
        return self

    def summary(self) -> dict[str, Any]:
        """Cluster count, noise fraction and stability, JSON-ready: ``None`` where a statistic is undefined.

        ``ari_mean`` / ``ari_sd`` (and the ``_clustered`` pair) are over the subsamples where the
        ARI is defined; ``bootstrap_*`` list every subsample.
        """

        def defined(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        def stats(values: np.ndarray) -> tuple[float | None, float | None]:
            finite = values[np.isfinite(values)]
            return (float(finite.mean()), float(finite.std())) if len(finite) else (None, None)

        ari_mean, ari_sd = stats(self.bootstrap_ari_)
        clustered_mean, clustered_sd = stats(self.bootstrap_ari_clustered_)
        return {
            "n_clusters": self.n_clusters_,
            "noise_fraction": self.noise_fraction_,
            "n_studies": len(self.labels_),
            "ari_mean": ari_mean,
            "ari_sd": ari_sd,
            "ari_clustered_mean": clustered_mean,
            "ari_clustered_sd": clustered_sd,
            "bootstrap_ari": [defined(v) for v in self.bootstrap_ari_],
            "bootstrap_ari_clustered": [defined(v) for v in self.bootstrap_ari_clustered_],
            "bootstrap_n_clusters": self.bootstrap_n_clusters_.tolist(),
        }


def describe(summary: Mapping[str, Any]) -> str:
    """One sentence on a :meth:`LatentClustering.summary`: clusters, noise and stability, or that none was found."""

    def mean_sd(mean: float | None, sd: float | None) -> str:
        return "undefined" if mean is None else f"{mean:.3f} ± {sd:.3f}"

    if summary["n_clusters"] == 0:
        return (
            f"HDBSCAN found no cluster among {summary['n_studies']} studies: every study is noise, "
            "the stability ARI is undefined and there is no centroid map."
        )
    return (
        f"HDBSCAN found {summary['n_clusters']} clusters among {summary['n_studies']} studies; "
        f"noise fraction {summary['noise_fraction']:.3f}; "
        f"bootstrap ARI {mean_sd(summary['ari_mean'], summary['ari_sd'])} "
        f"(noise as a label), {mean_sd(summary['ari_clustered_mean'], summary['ari_clustered_sd'])} "
        "(clustered studies only)."
    )


# ---------------------------------------------------------------------- summaries
def topic_lift(labels: np.ndarray, topics: pd.DataFrame) -> pd.DataFrame:
    """Mean topic weight of each cluster divided by the mean over all studies given.

    Parameters
    ----------
    labels : array, shape (n_studies,)
    topics : DataFrame, shape (n_studies, n_topics)
        LDA topic weights, aligned with ``labels``.

    Returns
    -------
    DataFrame, shape (n_clusters, n_topics)
        Indexed by cluster (noise excluded); 1 = the corpus average.
    """
    labels = np.asarray(labels)
    corpus = topics.mean(axis=0).replace(0.0, np.nan)
    means = topics[labels != NOISE].groupby(labels[labels != NOISE]).mean()
    means.index.name = "cluster"
    return means.div(corpus, axis=1).fillna(0.0)


def task_shares(labels: np.ndarray, tasks: pd.Series) -> pd.DataFrame:
    """Share of each task category among the members of each cluster, shape ``(n_clusters, n_categories)``."""
    labels = np.asarray(labels)
    member = labels != NOISE
    shares = pd.crosstab(labels[member], tasks.to_numpy()[member], normalize="index")
    shares.index.name = "cluster"
    shares.columns.name = "task_category"
    return shares


def cluster_profiles(labels: np.ndarray, studies: pd.DataFrame, names: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Topic lift (columns named by :func:`topic_names`) and task shares per cluster.

    What :func:`sematlas.reporting.clustering.plot_cluster_profiles` draws.

    Returns
    -------
    lift : DataFrame, shape (n_clusters, n_topics)
    shares : DataFrame, shape (n_clusters, n_categories)
    """
    lift = topic_lift(labels, studies[list(names.index)]).rename(columns=names)
    return lift, task_shares(labels, studies["task_category"])


def summarise_clusters(
    labels: np.ndarray, studies: pd.DataFrame, names: pd.Series, top_topics: int = 3
) -> pd.DataFrame:
    """One row per cluster: size, top topics by lift, top task categories, a short name, decode metadata.

    Parameters
    ----------
    labels : array, shape (n_studies,)
    studies : DataFrame
        Aligned with ``labels``; ``year``, ``task_category`` and ``topic_XX`` columns.
    names : Series
        Topic column -> short name (:func:`topic_names`).
    top_topics : int
        Topics listed per cluster; as many task categories are listed.

    Returns
    -------
    DataFrame
        ``cluster``, ``name`` (e.g. ``"C3: pain · pain painful"``: the most common task category
        and the first two key words of the highest-lift topic), ``size``, ``top_topics`` (list of
        topic names), ``top_topic_columns``, ``top_topic_lifts``, ``top_tasks``,
        ``top_task_shares``, and the metadata its centroid is decoded with: ``decode_task`` (most
        common category, ties broken alphabetically) and ``decode_year`` (median year, rounded).
        Empty, with these columns, when there is no cluster.
    """
    labels = np.asarray(labels)
    topics = studies[[c for c in studies.columns if c.startswith("topic_")]]
    lift = topic_lift(labels, topics)
    shares = task_shares(labels, studies["task_category"])
    rows = []
    for cluster in lift.index:
        members = studies[labels == cluster]
        top = lift.loc[cluster].sort_values(ascending=False, kind="stable").head(top_topics)
        share = shares.loc[cluster]
        tasks = share[share > 0].sort_index().sort_values(ascending=False, kind="stable").head(top_topics)
        first_topic = " ".join(names[top.index[0]].split()[:2])
        rows.append(
            {
                "cluster": int(cluster),
                "name": f"C{cluster}: {tasks.index[0].replace('_', ' ')} · {first_topic}",
                "size": len(members),
                "top_topics": [names[c] for c in top.index],
                "top_topic_columns": list(top.index),
                "top_topic_lifts": [float(v) for v in top],
                "top_tasks": list(tasks.index),
                "top_task_shares": [float(v) for v in tasks],
                "decode_task": str(tasks.index[0]),
                "decode_year": int(round(float(members["year"].median()))),
            }
        )
    columns = [
        "cluster",
        "name",
        "size",
        "top_topics",
        "top_topic_columns",
        "top_topic_lifts",
        "top_tasks",
        "top_task_shares",
        "decode_task",
        "decode_year",
    ]
    return pd.DataFrame(rows, columns=columns)


def assignments_frame(studies: pd.DataFrame, labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """The per-study table later stages read.

    Returns
    -------
    DataFrame
        ``id`` (str), ``cluster`` (int, -1 = noise), ``probability`` (float), ``year`` (int),
        ``task_category`` (str), and ``split`` when ``studies`` has it.
    """
    frame = pd.DataFrame(
        {
            "id": studies["id"].astype(str).to_numpy(),
            "cluster": np.asarray(labels, dtype=np.int64),
            "probability": np.asarray(probabilities, dtype=np.float64),
            "year": studies["year"].to_numpy(dtype=np.int64),
            "task_category": studies["task_category"].astype(str).to_numpy(),
        }
    )
    if "split" in studies:
        frame["split"] = studies["split"].astype(str).to_numpy()
    return frame


# ---------------------------------------------------------------------- centroids
def centroid_latents(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean latent of each cluster's members, in the model's units: shape ``(n_clusters, z_dim)``."""
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    centroids = [z[labels == k].mean(axis=0) for k in range(int(labels.max()) + 1)]
    return np.stack(centroids) if centroids else np.zeros((0, z.shape[1]))


def decode_centroids(atlas: Any, centroids: np.ndarray, clusters: pd.DataFrame) -> torch.Tensor:
    """Decode centroid latents with each cluster's ``decode_task`` and ``decode_year``.

    Parameters
    ----------
    atlas : sematlas.inference.atlas.AtlasModel
    centroids : array, shape (n_clusters, z_dim)
    clusters : DataFrame
        :func:`summarise_clusters` output, same order.

    Returns
    -------
    Tensor, shape (n_clusters, C, D, H, W)
        On the native grid; empty when there is no cluster.
    """
    if len(centroids) == 0:
        return torch.zeros(0, atlas.config.in_channels, *atlas.grid.shape)
    metadata = [{"task": t, "year": int(y)} for t, y in zip(clusters["decode_task"], clusters["decode_year"])]
    return atlas.decode(torch.as_tensor(centroids, dtype=torch.float32), metadata).cpu()


def write_centroid_maps(atlas: Any, maps: torch.Tensor, clusters: pd.Series, folder: str | Path) -> list[Path]:
    """Write ``centroid_<k>.nii.gz`` (widest kernel, MNI152) per cluster, atomically; return the paths.

    Centroid files of an earlier run that found more clusters are removed.
    """
    stale = set(Path(folder).glob("centroid_*.nii.gz"))
    written = []
    for cluster, volume in zip(clusters, maps):
        written.append(write_nifti(atlas.to_nifti(volume), Path(folder) / f"centroid_{int(cluster)}.nii.gz"))
    for path in stale - set(written):
        path.unlink()
    return written


# ------------------------------------------------------------------ embedding
def embed_2d(z: np.ndarray, seed: int, max_studies: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded t-SNE of the standardised latents (PCA start, perplexity <= 30), of at most ``max_studies``.

    A picture of many thousand overlapping points shows no more than one of a few thousand, and
    Barnes-Hut t-SNE costs ``O(n log n)``: beyond ``max_studies`` (0: no limit) a seeded sample is embedded.

    Returns
    -------
    rows : ndarray of int64, shape (n_embedded,)
        The embedded studies, sorted rows of ``z``.
    embedding : ndarray, shape (n_embedded, 2)
    """
    rows = np.arange(len(z))
    if 0 < max_studies < len(z):
        rows = np.sort(np.random.default_rng(seed).choice(len(z), max_studies, replace=False))
    x = standardise(z)[rows]  # standardised with every study's moments, as the clustering saw them
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1).fit_transform(x)
    return rows, embedding
