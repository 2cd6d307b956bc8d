"""Manuscript figures 1 to 5: the corpus and the models (reconstruction, generation, point clouds, uncertainty)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.results import EnsembleResults, PointCloudResults, VolumetricResults, ZeroShotProbe
from sematlas.reporting.figures.style import (
    BASELINE,
    BASELINE_LIGHT,
    MODEL,
    REFERENCE,
    band,
    counts,
    grow,
    method_colour,
)
from sematlas.reporting.plotting import plot_category_maps, plot_generative_quality
from sematlas.reporting.pointcloud import plot_metric_comparison


# ------------------------------------------------------------------------ figure 1
def plot_corpus(studies: pd.DataFrame, manifest: Mapping[str, Any]) -> Figure:
    """Figure 1: share of studies per task category and per publication year, all curated vs the subset.

    Parameters
    ----------
    studies : DataFrame
        ``studies.parquet`` of stage 01 (``task_category``, ``year``, ``in_subset``).
    manifest : mapping
        ``manifest.json`` of stage 01 (``profile``, ``task_categories``, ``report.subset_splits``).
    """
    subset = studies[studies["in_subset"].fillna(False).astype(bool)]
    label_all, label_subset = f"all curated ({len(studies):,})", f"'{manifest['profile']}' subset ({len(subset):,})"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=[1, 1.5])

    categories = list(manifest["task_categories"])[::-1]
    share_all = studies["task_category"].value_counts(normalize=True).reindex(categories, fill_value=0)
    share_subset = subset["task_category"].value_counts(normalize=True).reindex(categories, fill_value=0)
    y = np.arange(len(categories))
    left.barh(y + 0.2, 100 * share_all, height=0.4, color="0.7", label=label_all)
    left.barh(y - 0.2, 100 * share_subset, height=0.4, color=MODEL, label=label_subset)
    left.set_yticks(y, [c.replace("_", " ") for c in categories])
    left.set(xlabel="share of studies (%)", title="task category (from LDA-50 topics)")
    left.legend(fontsize=8, loc="lower right")

    years = np.arange(int(studies["year"].min()), int(studies["year"].max()) + 1)
    per_year_all = studies["year"].value_counts(normalize=True).reindex(years, fill_value=0)
    per_year_subset = subset["year"].value_counts(normalize=True).reindex(years, fill_value=0)
    right.bar(years, 100 * per_year_all, width=0.8, color="0.7", label=label_all)
    right.plot(years, 100 * per_year_subset, "o-", color=MODEL, ms=4, label=label_subset)
    right.set(xlabel="publication year", ylabel="share of studies (%)", title="publication year")
    right.set_xticks(years[::2])
    right.legend(fontsize=8, loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x" if ax is left else "y")
    splits = manifest["report"]["subset_splits"]
    fig.suptitle(
        f"Neurosynth v7 after curation: {len(studies):,} studies; the '{manifest['profile']}' profile uses a "
        f"stratified subset of {len(subset):,} (train/val/test {splits['train']}/{splits['val']}/{splits['test']})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ figure 2
def plot_reconstruction(
    per_study: Mapping[str, pd.DataFrame], test_results: Mapping[str, VolumetricResults], seed: int = 0
) -> Figure:
    """Figure 2: per-study held-out Pearson r (top) and SSIM (bottom) of each model, PCA and the mean map.

    Parameters
    ----------
    per_study : mapping
        Variant -> its ``per_study.parquet`` (``reconstruction_{model,pca,mean_map}_{pearson_r,ssim}``).
    test_results : mapping
        Variant -> its :class:`~sematlas.evaluation.results.VolumetricResults` (``n_studies``, ``z_dim``,
        ``reconstruction.model_beats_pca_fraction``).
    seed : int
        Of the horizontal jitter of the points.

    Returns
    -------
    Figure
        Two axes; per variant a group of three boxes (model blue, PCA red, mean map light red) with the
        studies as points, and the share of studies where the model beats PCA written above the group.
    """
    methods = (("model", MODEL), ("pca", BASELINE), ("mean_map", BASELINE_LIGHT))
    variants = list(per_study)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.9 * len(variants) + 2), 6.4), sharex=True)
    for ax, metric, label in zip(axes, ("pearson_r", "ssim"), ("voxel-wise Pearson r", "SSIM")):
        for g, variant in enumerate(variants):
            for m, (method, colour) in enumerate(methods):
                values = per_study[variant][f"reconstruction_{method}_{metric}"].dropna().to_numpy(dtype=float)
                x = 4 * g + m
                box = ax.boxplot(values, positions=[x], widths=0.7, patch_artist=True, showfliers=False)
                box["boxes"][0].set(facecolor=colour, alpha=0.45, edgecolor=colour)
                box["medians"][0].set(color="black")
                ax.scatter(x + rng.uniform(-0.2, 0.2, len(values)), values, s=6, color=colour, zorder=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    for g, variant in enumerate(variants):
        axes[0].annotate(
            f"beats PCA on\n{test_results[variant].reconstruction.model_beats_pca_fraction:.0%} of studies",
            (4 * g + 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    axes[1].set_xticks([4 * g + 1 for g in range(len(variants))], variants)
    handles = [
        Patch(color=MODEL, alpha=0.6, label="model (posterior mean)"),
        Patch(color=BASELINE, alpha=0.6, label="PCA at equal latent size"),
        Patch(color=BASELINE_LIGHT, alpha=0.8, label="training mean map"),
    ]
    axes[1].legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    n = counts([r.n_studies for r in test_results.values()])
    z = counts([r.z_dim for r in test_results.values()])
    fig.suptitle(f"held-out reconstruction of {n} test studies (z = {z}): models vs linear baselines", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


# ------------------------------------------------------------------------ figure 3
def _probe_panel(ax: Axes, probe: ZeroShotProbe) -> None:
    """Balanced accuracy per feature set on all analyses and on the two study groups, against chance."""
    features = list(probe.features)
    groups = (
        ("balanced_accuracy", 1.0, f"all {probe.n_analyses} analyses (± fold SD)"),
        ("balanced_accuracy_neurosynth_studies", 0.6, f"{probe.n_in_neurosynth} analyses of Neurosynth studies"),
        ("balanced_accuracy_new_studies", 0.3, "analyses of studies not in Neurosynth"),
    )
    y = np.arange(len(features))[::-1]
    for offset, (key, alpha, label) in zip((-0.27, 0.0, 0.27), groups):
        values = [np.nan if probe.features[f].get(key) is None else probe.features[f][key] for f in features]
        errors = [probe.features[f]["fold_sd"] for f in features] if key == "balanced_accuracy" else None
        ax.barh(
            y - offset,
            values,
            height=0.26,
            xerr=errors,
            color=[method_colour(f) for f in features],
            alpha=alpha,
            label=label,
        )
    ax.axvline(probe.chance, color=REFERENCE, ls="--", lw=1, label=f"chance ({probe.chance:.2f})")
    ax.set_yticks(y, features)
    ax.set(xlim=(0, 1), xlabel="balanced accuracy")
    ax.set_title(
        f"zero-shot probe, {probe.task}: {probe.n_analyses} analyses of {probe.n_studies} studies, "
        "study-grouped CV (blue: model latents, red: baselines)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")


def plot_generation(quality: pd.DataFrame, probe: ZeroShotProbe) -> Figure:
    """Figure 3: generative precision/recall and Fréchet distance (top), zero-shot probe (bottom).

    Parameters
    ----------
    quality : DataFrame
        ``generative_quality.parquet`` of stage 09 (``method``, ``precision``, ``recall``,
        ``frechet_distance``, ``n``); drawn by :func:`sematlas.reporting.plotting.plot_generative_quality`.
    probe : ZeroShotProbe
        ``EvaluationResults.zero_shot_probe`` of stage 09 (``features``, ``chance``, ``n_analyses``, ...).

    Returns
    -------
    Figure
        Three axes: precision vs recall, Fréchet bars, and the probe with three bars
        per feature set and a chance line.
    """
    fig = plot_generative_quality(quality)
    total, top, bottom = grow(fig, top=0.4, bottom=0.5 * len(probe.features) + 1.6)
    _probe_panel(fig.add_subplot(band(fig, total, 0.0, bottom, 1, 1)[0, 0]), probe)
    fig.suptitle(
        f"samples of every model vs PPCA and real training maps on {counts(quality['n'])} held-out studies "
        "(blue: models, red: baselines)",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


# ------------------------------------------------------------------------ figure 5
def plot_pointcloud(results: PointCloudResults, per_study: pd.DataFrame) -> Figure:
    """Figure 5: the point-cloud C-VAE, per study (top) and median Chamfer/EMD per method (bottom).

    Parameters
    ----------
    results : PointCloudResults
        Stage 03's; the bottom row is :func:`sematlas.reporting.pointcloud.plot_metric_comparison`.
    per_study : DataFrame
        ``pointcloud/per_study.parquet`` (``<task>_<method>_chamfer_mm`` columns).

    Returns
    -------
    Figure
        Four axes: per-study Chamfer of the model against the nearest training study (reconstruction)
        and against the category pool (conditional generation), then the two median panels.
    """
    # Methods in alphabetical order within each task, as the manuscript figure has always listed them.
    summaries = results.to_dict()
    fig = plot_metric_comparison(
        {task: dict(sorted(summaries[task].items())) for task in ("reconstruction", "conditional_generation")}
    )
    total, top, _ = grow(fig, top=3.9)
    grid = band(fig, total, top, 1.0, 1, 2, pad=0.75, wspace=0.3)
    panels = (
        (
            "reconstruction",
            "nearest_training_study",
            "nearest training study",
            results.reconstruction.model_beats_nearest_training_fraction,
        ),
        (
            "conditional_generation",
            "category_pool",
            "category pool",
            results.conditional_generation.model_beats_category_pool_fraction,
        ),
    )
    for col, (task, baseline, label, beats) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        x = per_study[f"{task}_{baseline}_chamfer_mm"].to_numpy(dtype=float)
        y = per_study[f"{task}_model_chamfer_mm"].to_numpy(dtype=float)
        ax.scatter(x, y, s=12, color=MODEL, alpha=0.7)
        high = float(np.nanmax(np.concatenate([x, y]))) * 1.05
        ax.plot([0, high], [0, high], color=REFERENCE, ls="--", lw=1)
        ax.set(xlim=(0, high), ylim=(0, high), xlabel=f"{label}: Chamfer (mm)", ylabel="model: Chamfer (mm)")
        ax.set_title(
            f"{task.replace('_', ' ')}: model closer on {beats:.0%} of studies (below the line)",
            fontsize=9,
        )
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"point-cloud C-VAE on {results.n_test} held-out studies ({results.n_points} points each, "
        f"trained on {results.n_train}): model vs baselines, lower is closer",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


# ------------------------------------------------------------------------ figure 6
def plot_uncertainty(results: EnsembleResults) -> Figure:
    """Figure 6: ECE before/after temperature scaling (left) and OOD AUROC per kind (right), against the goals.

    Parameters
    ----------
    results : EnsembleResults
        Stage 04's (``methods[m].ece_test_before/after``, ``temperature``, ``ood_auroc[kind]``,
        ``ood_auroc_predictive_nll[kind]``; ``goals.ece_below``, ``goals.ood_auroc_above``).

    Returns
    -------
    Figure
        Two axes: two bars per method (ECE) and two bars per method and kind (AUROC of the disagreement,
        then hatched, of the predictive NLL), the goals as dashed lines and chance (AUROC 0.5) dotted.
    """
    methods = results.methods
    goals = results.goals
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[1, 1.6])
    x = np.arange(len(methods))
    before = [r.ece_test_before for r in methods.values()]
    after = [r.ece_test_after for r in methods.values()]
    left.bar(x - 0.2, before, width=0.4, color=MODEL, alpha=0.4, label="before")
    left.bar(x + 0.2, after, width=0.4, color=MODEL, label="after temperature scaling")
    left.axhline(goals.ece_below, color=REFERENCE, ls="--", lw=1, label=f"goal < {goals.ece_below}")
    left.set_xticks(x, [f"{m.replace('_', ' ')}\n(T = {r.temperature:.2f})" for m, r in methods.items()])
    left.set(ylabel="expected calibration error", title=f"calibration ({results.n_test} test studies)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)

    kinds = list(dict.fromkeys(k for r in methods.values() for k in r.ood_auroc))
    # One bar per method and OOD score: the ensemble disagreement, and the predictive NLL.
    series = [
        (m, aurocs, label)
        for m, r in methods.items()
        for aurocs, label in ((r.ood_auroc, "disagreement"), (r.ood_auroc_predictive_nll, "predictive NLL"))
    ]
    width = 0.8 / len(series)
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.9, len(methods)))
    for i, (m, aurocs, label) in enumerate(series):
        right.bar(
            np.arange(len(kinds)) + (i - (len(series) - 1) / 2) * width,
            [aurocs.get(k, np.nan) for k in kinds],
            width,
            color=shades[list(methods).index(m)],
            hatch="//" if label != "disagreement" else None,
            edgecolor="white",
            label=f"{m.replace('_', ' ')}: {label}",
        )
    right.axhline(goals.ood_auroc_above, color=REFERENCE, ls="--", lw=1, label=f"goal > {goals.ood_auroc_above}")
    right.axhline(0.5, color=REFERENCE, ls=":", lw=1, label="chance")
    right.set_xticks(np.arange(len(kinds)), [k.replace("_", " ") for k in kinds])
    right.set(
        ylim=(0, 1.05),
        ylabel="AUROC (test vs OOD maps)",
        title=f"OOD detection ({results.n_ood_per_kind} maps per kind)",
    )
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("uncertainty of the ensembles against the project's goals", fontsize=10)
    fig.tight_layout()
    return fig


#: The categories figure 4 draws (those measured, in this order): the field's best-known maps.
SHOWN_CATEGORIES = ("pain", "working_memory", "language", "visual", "motor", "face")
#: Figure 4's columns: the saved category maps it draws (``ConditionalAtlasResults.MAP_METHODS``) and their names.
CATEGORY_MAP_LABELS = {
    "held_out": "held-out studies",
    "model": "model",
    "sample_average": "study average",
    "mkda": "NiMARE MKDA",
}


def plot_conditional_atlas(
    results: ConditionalAtlasResults, table: pd.DataFrame, maps: Mapping[str, np.ndarray]
) -> Figure:
    """Figure 4: the model's map for a category query beside the held-out studies' mean map and MKDA's.

    Parameters
    ----------
    results : ConditionalAtlasResults
        Its ``category_level.categories`` order the volumes; its ``variant`` names the model.
    table : DataFrame
        ``conditional_atlas_categories.parquet``: each map's r with the held-out map, in the titles.
    maps : mapping of str to ndarray, shape (D, H, W, n_categories)
        ``held_out``, ``model`` and ``mkda``, as saved by stage 09.
    """
    fig = plot_category_maps(
        {method: maps[method] for method in CATEGORY_MAP_LABELS},
        results.category_level.categories,
        shown=SHOWN_CATEGORIES,
        table=table,
        labels=CATEGORY_MAP_LABELS | {"model": results.variant},
    )
    fig.suptitle(
        f"median r with the held-out map over {len(results.category_level.categories)} categories: "
        f"{results.variant} {results.category_level.model.median_r:.2f}, "
        f"study average {results.category_level.sample_average.median_r:.2f}, "
        f"MKDA {results.category_level.mkda.median_r:.2f}",
        y=1.01,
        fontsize=9,
    )
    return fig


__all__ = [
    "CATEGORY_MAP_LABELS",
    "SHOWN_CATEGORIES",
    "plot_conditional_atlas",
    "plot_corpus",
    "plot_generation",
    "plot_pointcloud",
    "plot_reconstruction",
    "plot_uncertainty",
]
