"""Figures of stage 07: the clusters in a 2-D embedding, their decoded centroid maps, their topic and task profiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sematlas.analysis.clustering import NOISE


def _cluster_colours(n_clusters: int) -> np.ndarray:
    return plt.get_cmap("tab20" if n_clusters > 10 else "tab10")(np.arange(max(n_clusters, 1)) % 20)


def plot_embedding(embedding: np.ndarray, labels: np.ndarray, names: Sequence[str] = ()) -> Figure:
    """2-D embedding coloured by cluster, noise in grey.

    Parameters
    ----------
    embedding : array, shape (n_studies, 2)
    labels : array, shape (n_studies,)
    names : sequence of str
        Legend label per cluster (default ``C<k>``).
    """
    labels = np.asarray(labels)
    n_clusters = int(labels.max()) + 1
    colours = _cluster_colours(n_clusters)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    noise = labels == NOISE
    ax.scatter(embedding[noise, 0], embedding[noise, 1], s=8, c="lightgrey", label=f"noise ({int(noise.sum())})")
    for k in range(n_clusters):
        member = labels == k
        label = names[k] if k < len(names) else f"C{k}"
        ax.scatter(
            embedding[member, 0], embedding[member, 1], s=12, color=colours[k], label=f"{label} ({int(member.sum())})"
        )
    title = "t-SNE of the latents" + ("" if n_clusters else ": HDBSCAN found no cluster")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_centroid_maps(images: Sequence[Any], titles: Sequence[str], quantile: float = 0.95) -> Figure:
    """Glass brains of the decoded centroid maps, one row per cluster.

    Parameters
    ----------
    images : sequence of Nifti1Image
    titles : sequence of str
    quantile : float
        Each map is thresholded at this quantile of its nonzero (in-brain) voxels.
    """
    from nilearn import plotting

    if not images:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no cluster: no centroid map", ha="center", va="center")
        ax.axis("off")
        return fig
    fig, axes = plt.subplots(len(images), 1, figsize=(8, 2.6 * len(images)), squeeze=False)
    for ax, image, title in zip(axes[:, 0], images, titles):
        data = np.asarray(image.get_fdata())
        inside = np.abs(data[data != 0])  # glass brains show absolute values
        threshold = float(np.quantile(inside, quantile)) if inside.size else 0.0
        plotting.plot_glass_brain(
            image, display_mode="lzry", axes=ax, title=title, threshold=threshold, cmap="hot", colorbar=True
        )
    return fig


def plot_cluster_profiles(
    lift: pd.DataFrame, shares: pd.DataFrame, names: Sequence[str], top_topics: int = 3
) -> Figure:
    """Heatmaps per cluster: log2 lift of the topics that top any cluster (left), task shares (right).

    Parameters
    ----------
    lift : DataFrame, shape (n_clusters, n_topics)
        :func:`sematlas.analysis.clustering.topic_lift`, columns renamed to topic names.
    shares : DataFrame, shape (n_clusters, n_categories)
        :func:`sematlas.analysis.clustering.task_shares`.
    names : sequence of str
        Row label per cluster.
    top_topics : int
        Topics per cluster included in the left panel.
    """
    if lift.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no cluster: no topic or task profile", ha="center", va="center")
        ax.axis("off")
        return fig
    shown = list(dict.fromkeys(c for k in lift.index for c in lift.loc[k].nlargest(top_topics).index))
    log_lift = np.log2(lift[shown].clip(lower=1e-3))
    bound = float(np.abs(log_lift.to_numpy()).max()) or 1.0
    height = 1.6 + 0.4 * len(lift)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(0.45 * (len(shown) + shares.shape[1]) + 5, height), width_ratios=[len(shown), shares.shape[1]]
    )
    image = left.imshow(log_lift.to_numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    left.set_xticks(range(len(shown)), shown, rotation=60, ha="right", fontsize=7)
    left.set_yticks(range(len(lift)), names, fontsize=8)
    left.set_title("topic lift (log2, vs all studies)", fontsize=9)
    fig.colorbar(image, ax=left, shrink=0.8)
    image = right.imshow(shares.to_numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    right.set_xticks(range(shares.shape[1]), [c.replace("_", " ") for c in shares.columns], rotation=60, ha="right")
    right.tick_params(axis="x", labelsize=7)
    right.set_yticks([])
    right.set_title("task category share", fontsize=9)
    fig.colorbar(image, ax=right, shrink=0.8)
    fig.tight_layout()
    return fig
