"""Figures shared by the notebooks: maps as orthogonal slices, curves, comparisons.

Every function returns a :class:`matplotlib.figure.Figure` and draws nothing
interactively, so notebooks show it and stages save it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Methods drawn as baselines (red) rather than models (blue) in comparison plots.
BASELINES = ("pca", "ridge", "mean_map", "ppca", "raw_voxels", "training_maps")


def central_slices(volume: np.ndarray, peak: bool = False) -> list[np.ndarray]:
    """Sagittal, coronal and axial slices of ``(D, H, W)``, oriented for display.

    Through the centre of the grid, or through the volume's maximum when ``peak``.
    """
    volume = np.asarray(volume)
    centre = np.unravel_index(np.argmax(volume), volume.shape) if peak else tuple(s // 2 for s in volume.shape)
    i, j, k = centre
    return [np.rot90(volume[i, :, :]), np.rot90(volume[:, j, :]), np.rot90(volume[:, :, k])]


def plot_map_rows(
    rows: Mapping[str, Sequence[np.ndarray]],
    column_titles: Sequence[str] | None = None,
    cmap: str = "hot",
    vmax: float | None = 1.0,
) -> Figure:
    """A grid of maps: one row per label, three orthogonal slices per map.

    Parameters
    ----------
    rows : mapping
        Row label -> list of ``(D, H, W)`` volumes shown side by side.
    column_titles : sequence of str, optional
        One title per volume of a row.
    """
    n_rows = len(rows)
    n_maps = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(n_rows, 3 * n_maps, figsize=(1.6 * 3 * n_maps, 1.9 * n_rows), squeeze=False)
    for r, (label, volumes) in enumerate(rows.items()):
        for m, volume in enumerate(volumes):
            for s, image in enumerate(central_slices(volume)):
                ax = axes[r, 3 * m + s]
                ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax if vmax is not None else float(np.max(volume)) or 1)
                ax.set_xticks([])
                ax.set_yticks([])
                if s == 0 and m == 0:
                    ax.set_ylabel(label, fontsize=8)
                if r == 0 and s == 1 and column_titles:
                    ax.set_title(column_titles[m], fontsize=9)
        for m in range(len(volumes), n_maps):
            for s in range(3):
                axes[r, 3 * m + s].axis("off")
    fig.tight_layout()
    return fig


def plot_training_curves(
    metrics: Mapping[str, pd.DataFrame], columns: Sequence[str] = ("val/loss", "val/recon", "val/kl")
) -> Figure:
    """Per-epoch validation curves of several runs (one panel per metric)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for name, frame in metrics.items():
            if column in frame:
                ax.plot(frame["epoch"], frame[column], marker="o", ms=3, label=name)
        ax.set(title=column, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_method_comparison(
    table: pd.DataFrame, metric: str = "pearson_r_median", title: str = "held-out median Pearson r"
) -> Figure:
    """Horizontal bars of one metric for every (task, method) row of a results table."""
    ordered = table.sort_values(metric)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ordered) + 1.2))
    colours = ["tab:red" if m in BASELINES else "tab:blue" for m in ordered["method"]]
    ax.barh(ordered["label"], ordered[metric], color=colours)
    for y, value in enumerate(ordered[metric]):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    ax.set(title=f"{title} (blue: models, red: linear baselines)", xlabel=metric)
    fig.tight_layout()
    return fig


def plot_generative_quality(table: pd.DataFrame) -> Figure:
    """Precision against recall (left) and the Fréchet distance (right) of every method.

    ``table`` has ``method``, ``precision``, ``recall`` and ``frechet_distance`` columns.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for row in table.itertuples():
        colour = "tab:red" if row.method in BASELINES else "tab:blue"
        left.scatter(row.recall, row.precision, color=colour, s=40)
        left.annotate(row.method, (row.recall, row.precision), fontsize=8, xytext=(4, 4), textcoords="offset points")
    left.set(
        xlim=(-0.05, 1.05),
        ylim=(-0.05, 1.05),
        xlabel="recall",
        ylabel="precision",
        title="improved precision / recall (k-NN manifolds)",
    )
    left.grid(alpha=0.3)
    ordered = table.sort_values("frechet_distance")
    colours = ["tab:red" if m in BASELINES else "tab:blue" for m in ordered["method"]]
    right.barh(ordered["method"], ordered["frechet_distance"], color=colours)
    right.set(xlabel="Fréchet distance (lower is closer)", title="blue: models, red: baselines")
    fig.tight_layout()
    return fig


def plot_probe(table: pd.DataFrame, chance: float = 0.5) -> Figure:
    """Balanced accuracy of the zero-shot probe per feature set, all analyses and new studies only.

    ``table`` has ``features``, ``balanced_accuracy``, ``fold_sd`` and ``balanced_accuracy_new_studies``.
    """
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.4))
    y = np.arange(len(table))
    colours = ["tab:red" if f in BASELINES else "tab:blue" for f in table["features"]]
    ax.barh(y, table["balanced_accuracy"], xerr=table["fold_sd"], color=colours, alpha=0.8, label="all analyses")
    new = pd.to_numeric(table["balanced_accuracy_new_studies"], errors="coerce")
    ax.scatter(new, y, color="black", marker="D", s=18, zorder=3, label="studies not in Neurosynth")
    ax.axvline(chance, color="grey", ls="--", lw=1)
    ax.set_yticks(y, table["features"])
    ax.set(xlim=(0, 1), xlabel="balanced accuracy (n-back vs flanker)", title="zero-shot linear probe")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_ablations(table: pd.DataFrame) -> Figure:
    """Each ablation's change of its declared criterion metric (left) and its win rate against PCA (right).

    ``table`` is :func:`sematlas.analysis.ablation.ablation_table`: ``ablation``,
    ``criterion``, ``delta``, ``threshold``, ``verdict``, ``beats_pca`` and
    ``beats_pca_delta``. Left: ``ablated - locked`` of each criterion's metric,
    green where the criterion holds (PASS), grey where it does not (FAIL), with
    the criterion's threshold as a black tick. Right: the fraction
    of held-out studies each ablation reconstructs better than PCA, with the
    locked model's as a dashed line.
    """
    y = np.arange(len(table))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 0.45 * len(table) + 1.6), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    colours = ["tab:green" if verdict == "PASS" else "tab:grey" for verdict in table["verdict"]]
    left.barh(y, table["delta"], color=colours)
    left.scatter(table["threshold"], y, marker="|", s=300, color="black", zorder=3, label="threshold")
    for row, (criterion, verdict) in enumerate(zip(table["criterion"], table["verdict"], strict=True)):
        left.text(0, row, f"  {verdict}: {criterion}", va="center", fontsize=7)
    left.axvline(0, color="black", lw=0.8)
    left.set_yticks(y, table["ablation"])
    left.invert_yaxis()
    left.set(xlabel="ablated - locked, on the criterion's metric", title="declared criteria (green: PASS)")
    left.legend(fontsize=8, loc="lower right")
    locked_rate = float((table["beats_pca"] - table["beats_pca_delta"]).iloc[0]) if len(table) else float("nan")
    right.barh(y, table["beats_pca"], color="tab:blue", alpha=0.8)
    right.axvline(locked_rate, color="black", ls="--", lw=1, label=f"locked model ({locked_rate:.2f})")
    right.set(xlim=(0, 1), xlabel="fraction of held-out studies better than PCA", title="per-study win rate vs PCA")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_category_maps(
    maps: Mapping[str, np.ndarray],
    categories: Sequence[str],
    shown: Sequence[str],
    table: pd.DataFrame | None = None,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Category maps side by side: one row per category, three orthogonal slices per map.

    Every map of a row is cut through the same voxel, the maximum of the row's first map (the
    held-out category map), so the slices show the same place. Each map is scaled to its own
    maximum: the methods' units differ (a mean rendered map, an MKDA count of studies).

    Parameters
    ----------
    maps : mapping of str to ndarray, shape (D, H, W, n_categories)
        Method -> its category maps as saved (:meth:`~sematlas.evaluation.conditional.ConditionalAtlasEvaluation.save`),
        volume ``k`` for ``categories[k]``; the first method is the reference the slices go through.
    categories : sequence of str
    shown : sequence of str
        The categories drawn, those of ``categories`` in this order (the first ones when none is).
    table : DataFrame, optional
        ``category`` and ``r_<method>`` columns (:func:`sematlas.evaluation.conditional.category_level`):
        each map's r with the reference, in its title.
    labels : mapping of str to str, optional
        Method -> the name in the titles (default: the method).
    """
    rows = [name for name in shown if name in categories] or list(categories[: len(shown)])
    methods, labels = list(maps), labels or {}
    r = table.set_index("category") if table is not None else pd.DataFrame()
    fig, axes = plt.subplots(len(rows), 3 * len(methods), figsize=(4.2 * len(methods), 1.8 * len(rows)), squeeze=False)
    for row, name in enumerate(rows):
        index = list(categories).index(name)
        volumes = [np.asarray(maps[method][..., index]) for method in methods]
        i, j, k = np.unravel_index(np.argmax(volumes[0]), volumes[0].shape)
        for m, (method, volume) in enumerate(zip(methods, volumes)):
            for s, image in enumerate((volume[i, :, :], volume[:, j, :], volume[:, :, k])):
                ax = axes[row, 3 * m + s]
                ax.imshow(np.rot90(image), cmap="hot", vmin=0, vmax=float(volume.max()) or 1.0)
                ax.set_xticks([])
                ax.set_yticks([])
            title = labels.get(method, method)
            if f"r_{method}" in r:
                title += f" (r = {r.loc[name, f'r_{method}']:.2f})"
            axes[row, 3 * m + 1].set_title(title, fontsize=8)
        axes[row, 0].set_ylabel(name.replace("_", " "), fontsize=8)
    fig.tight_layout()
    return fig
