"""The manuscript's figures, remade from the results files the stages saved (stage 11).

:func:`load_results` reads every file a figure needs and names the stage that
writes a missing one; one ``plot_*`` function per manuscript figure turns those
tables and dictionaries into a :class:`matplotlib.figure.Figure`; and
:func:`save_figure` writes it as PNG and SVG. Nothing here trains or decodes a
model: every number drawn is read from ``data/results/<profile>/`` or
``data/processed/<profile>/``.

Where a stage already draws a panel from saved results (``plot_generative_quality``,
``plot_metric_comparison``, ``plot_hierarchy``, ``plot_cluster_profiles``,
``plot_frechet``), its figure is reused and grown by the panels the manuscript
adds. One style throughout: models in blue, baselines in red, chance, goals and
thresholds as grey dashed lines; each title says what is compared and on how
many held-out studies.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Patch

from sematlas.analysis.clustering import TOPIC_KEYS_FILE
from sematlas.analysis.hierarchy import PASS
from sematlas.core.io import atomic_path, read_json, write_json
from sematlas.core.params import Params
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline.registry import writer_of
from sematlas.reporting.clustering import plot_cluster_profiles
from sematlas.reporting.forecasting import plot_frechet
from sematlas.reporting.hierarchy import plot_hierarchy
from sematlas.reporting.plotting import BASELINES, plot_generative_quality
from sematlas.reporting.pointcloud import plot_metric_comparison

#: Colours shared by every figure: a model, a baseline, a second (weaker) baseline, a reference line.
MODEL = "tab:blue"
BASELINE = "tab:red"
BASELINE_LIGHT = "#f2a29b"
REFERENCE = "0.45"
PASS_COLOUR, FAIL_COLOUR = "tab:green", "tab:red"

#: Manuscript figure name -> title (also the README figure index and ``index.json``).
TITLES: dict[str, str] = {
    "fig1_data": "The curated Neurosynth v7 corpus and the profile's stratified subset",
    "fig2_reconstruction": "Held-out reconstruction of every volumetric model against PCA and the mean map",
    "fig3_generation": "Generative quality against PPCA and real maps; zero-shot task probe against chance",
    "fig4_pointcloud": "Point-cloud C-VAE against the noise floor, nearest-study retrieval and the category pool",
    "fig5_uncertainty": "Calibration and out-of-distribution detection of the ensembles against their goals",
    "fig6_hierarchy": "The H-VAE stage gate and the hierarchy it learned",
    "fig7_cca": "Canonical correlations between the volumetric and point-cloud latents against a permutation null",
    "fig8_clusters": "HDBSCAN clusters of the latents: sizes, topic and task profiles, centroid maps",
    "fig9_forecasting": "Forecasting the latent distribution of held-out years: GRU against persistence and trend",
    "fig10_ablations": "Ablations: each one-change variant of the locked cbvae against its declared criterion",
}


# ------------------------------------------------------------------------ loading
def volumetric_variants(paths: ProfilePaths, params: Params) -> list[str]:
    """The volumetric models of figure 2: ``model.variants``, then ``hvae`` when stage 05 wrote its results."""
    return [*params["model"]["variants"], *(["hvae"] if (paths.results / "hvae").is_dir() else [])]


def figure_sources(paths: ProfilePaths, params: Params) -> dict[str, list[Path]]:
    """The files each manuscript figure is drawn from (figure 8's centroid maps are added by :func:`load_results`)."""
    results = paths.results
    return {
        "fig1_data": [paths.processed / "studies.parquet", paths.processed / "manifest.json"],
        "fig2_reconstruction": [
            results / variant / name
            for variant in volumetric_variants(paths, params)
            for name in ("per_study.parquet", "test_results.json")
        ],
        "fig3_generation": [
            results / "evaluation" / "generative_quality.parquet",
            results / "evaluation" / "evaluation_results.json",
        ],
        "fig4_pointcloud": [results / "pointcloud" / "test_results.json", results / "pointcloud" / "per_study.parquet"],
        "fig5_uncertainty": [results / "ensemble" / "test_results.json"],
        "fig6_hierarchy": [results / "hierarchical" / "results.json"],
        "fig7_cca": [results / "cca" / "results.json"],
        "fig8_clusters": [
            results / "clustering" / "clusters.parquet",
            results / "clustering" / "results.json",
            results / "clustering" / "assignments.parquet",
            paths.processed / "studies.parquet",
            paths.raw / "neurosynth" / TOPIC_KEYS_FILE,
        ],
        "fig9_forecasting": [
            results / "forecasting" / "frechet_by_year.parquet",
            results / "forecasting" / "results.json",
        ],
        "fig10_ablations": [results / "evaluation" / "ablations.parquet"],
    }


def _writer(path: Path, paths: ProfilePaths) -> str:
    """``"06 cca"``: the stage that writes ``path``."""
    stage = writer_of(path, paths)
    return f"{stage.number} {stage.name}"


def _require(sources: Mapping[str, Sequence[Path]], paths: ProfilePaths) -> None:
    """Raise naming every missing file, the figure that needs it and the stage that writes it."""
    missing = [
        f"figure {figure} needs {path.relative_to(paths.root)}, written by stage {_writer(path, paths)}"
        for figure, files in sources.items()
        for path in files
        if not path.is_file()
    ]
    if missing:
        raise FileNotFoundError("\n".join(missing))


def load_results(paths: ProfilePaths, params: Params) -> dict[str, Any]:
    """Read everything the manuscript figures are drawn from.

    Parameters
    ----------
    paths : ProfilePaths
    params : mapping
        The profile's parameters (``model.variants`` names the volumetric models).

    Returns
    -------
    dict
        ``sources`` (figure -> files read) and one entry per figure with its
        loaded tables (DataFrames) and results (dicts).

    Raises
    ------
    FileNotFoundError
        One line per missing file, e.g. ``figure fig7_cca needs
        data/results/quick/cca/results.json, written by stage 06 cca``.
    """
    sources = figure_sources(paths, params)
    _require(sources, paths)
    results, processed = paths.results, paths.processed
    clusters = pd.read_parquet(results / "clustering" / "clusters.parquet")
    centroids = [results / "clustering" / f"centroid_{int(k)}.nii.gz" for k in clusters["cluster"]]
    _require({"fig8_clusters": centroids}, paths)
    sources["fig8_clusters"] += centroids

    studies = pd.read_parquet(processed / "studies.parquet")
    studies["id"] = studies["id"].astype(str)
    assignments = pd.read_parquet(results / "clustering" / "assignments.parquet")
    assignments["id"] = assignments["id"].astype(str)
    topics = [c for c in studies.columns if c.startswith("topic_")]
    variants = volumetric_variants(paths, params)
    return {
        "sources": sources,
        "fig1_data": {"studies": studies, "manifest": read_json(processed / "manifest.json")},
        "fig2_reconstruction": {
            "per_study": {v: pd.read_parquet(results / v / "per_study.parquet") for v in variants},
            "test_results": {v: read_json(results / v / "test_results.json") for v in variants},
        },
        "fig3_generation": {
            "quality": pd.read_parquet(results / "evaluation" / "generative_quality.parquet"),
            "probe": read_json(results / "evaluation" / "evaluation_results.json")["zero_shot_probe"],
        },
        "fig4_pointcloud": {
            "results": read_json(results / "pointcloud" / "test_results.json"),
            "per_study": pd.read_parquet(results / "pointcloud" / "per_study.parquet"),
        },
        "fig5_uncertainty": {"results": read_json(results / "ensemble" / "test_results.json")},
        "fig6_hierarchy": {"results": read_json(results / "hierarchical" / "results.json")},
        "fig7_cca": {"results": read_json(results / "cca" / "results.json")},
        "fig8_clusters": {
            "clusters": clusters,
            "results": read_json(results / "clustering" / "results.json"),
            # Cluster labels with the topic weights of their studies, for clustering.cluster_profiles.
            "members": assignments.merge(studies[["id", *topics]], on="id", how="left", validate="one_to_one"),
            "topic_keys": paths.raw / "neurosynth" / TOPIC_KEYS_FILE,
            "centroids": centroids,
        },
        "fig9_forecasting": {
            "table": pd.read_parquet(results / "forecasting" / "frechet_by_year.parquet"),
            "results": read_json(results / "forecasting" / "results.json"),
        },
        "fig10_ablations": {"table": pd.read_parquet(results / "evaluation" / "ablations.parquet")},
    }


# ------------------------------------------------------------------------ saving
def save_figure(fig: Figure, folder: str | os.PathLike[str], name: str, dpi: int = 150) -> list[Path]:
    """Write ``<name>.png`` (at ``dpi``) and ``<name>.svg`` into ``folder``, each atomically.

    The SVG carries no date and fixed element ids, so an unchanged figure gives
    an unchanged file.

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    written = []
    for fmt in ("png", "svg"):
        target = Path(folder) / f"{name}.{fmt}"
        with atomic_path(target) as tmp, mpl.rc_context({"svg.hashsalt": name}):
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        written.append(target)
    return written


def write_index(folder: str | os.PathLike[str], sources: Mapping[str, Sequence[Path]], root: Path) -> Path:
    """``index.json`` beside the figures: name -> title, PNG, SVG and the source files (relative to ``root``)."""
    index = {
        name: {
            "title": TITLES[name],
            "png": f"{name}.png",
            "svg": f"{name}.svg",
            "sources": [str(Path(path).relative_to(root)) for path in files],
        }
        for name, files in sources.items()
    }
    return write_json(index, Path(folder) / "index.json")


# ------------------------------------------------------------------------ layout helpers
def _grow(fig: Figure, top: float = 0.0, bottom: float = 0.0) -> tuple[float, float, float]:
    """Add ``top`` and ``bottom`` inches of empty space to a laid-out figure, its axes and legends unmoved.

    Returns
    -------
    (float, float, float)
        The new height in inches, and the figure fractions where the top band
        starts and the bottom band ends.
    """
    width, height = fig.get_size_inches()
    total = height + top + bottom
    for ax in fig.axes:
        x0, y0, w, h = ax.get_position().bounds
        ax.set_position((x0, (y0 * height + bottom) / total, w, h * height / total))
    for legend in fig.legends:
        legend.set_bbox_to_anchor((0, bottom / total, 1, height / total), transform=fig.transFigure)
    fig.set_size_inches(width, total)
    return total, 1 - top / total, bottom / total


def _band(
    fig: Figure, total: float, lower: float, upper: float, nrows: int, ncols: int, pad: float = 0.45, **kwargs: Any
) -> GridSpec:
    """A grid in the figure-fraction band ``[lower, upper]``, leaving ``pad`` inches above and 0.6 in below."""
    return fig.add_gridspec(
        nrows, ncols, bottom=lower + 0.6 / total, top=upper - pad / total, left=0.08, right=0.97, **kwargs
    )


def _colour(method: str) -> str:
    return BASELINE if method in BASELINES else MODEL


def _n(values: Sequence[int]) -> str:
    """``24`` or ``24/30`` when the models were scored on different numbers of studies."""
    unique = list(dict.fromkeys(int(v) for v in values))
    return "/".join(str(v) for v in unique)


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
    per_study: Mapping[str, pd.DataFrame], test_results: Mapping[str, Mapping[str, Any]], seed: int = 0
) -> Figure:
    """Figure 2: per-study held-out Pearson r (top) and SSIM (bottom) of each model, PCA and the mean map.

    Parameters
    ----------
    per_study : mapping
        Variant -> its ``per_study.parquet`` (``reconstruction_{model,pca,mean_map}_{pearson_r,ssim}``).
    test_results : mapping
        Variant -> its ``test_results.json`` (``n_studies``, ``z_dim``,
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
        beats = test_results[variant]["reconstruction"].get("model_beats_pca_fraction")
        if beats is not None:
            axes[0].annotate(
                f"beats PCA on\n{beats:.0%} of studies",
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
    n = _n([r["n_studies"] for r in test_results.values()])
    z = _n([r["z_dim"] for r in test_results.values()])
    fig.suptitle(f"held-out reconstruction of {n} test studies (z = {z}): models vs linear baselines", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


# ------------------------------------------------------------------------ figure 3
def _probe_panel(ax: Axes, probe: Mapping[str, Any]) -> None:
    """Balanced accuracy per feature set on all analyses and on the two study groups, against chance."""
    features = list(probe["features"])
    groups = (
        ("balanced_accuracy", 1.0, f"all {probe['n_analyses']} analyses (± fold SD)"),
        ("balanced_accuracy_neurosynth_studies", 0.6, f"{probe['n_in_neurosynth']} analyses of Neurosynth studies"),
        ("balanced_accuracy_new_studies", 0.3, "analyses of studies not in Neurosynth"),
    )
    y = np.arange(len(features))[::-1]
    for offset, (key, alpha, label) in zip((-0.27, 0.0, 0.27), groups):
        values = [np.nan if probe["features"][f].get(key) is None else probe["features"][f][key] for f in features]
        errors = [probe["features"][f]["fold_sd"] for f in features] if key == "balanced_accuracy" else None
        ax.barh(
            y - offset, values, height=0.26, xerr=errors, color=[_colour(f) for f in features], alpha=alpha, label=label
        )
    ax.axvline(probe["chance"], color=REFERENCE, ls="--", lw=1, label=f"chance ({probe['chance']:.2f})")
    ax.set_yticks(y, features)
    ax.set(xlim=(0, 1), xlabel="balanced accuracy")
    ax.set_title(
        f"zero-shot probe, {probe['task']}: {probe['n_analyses']} analyses of {probe['n_studies']} studies, "
        "study-grouped CV (blue: model latents, red: baselines)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")


def plot_generation(quality: pd.DataFrame, probe: Mapping[str, Any]) -> Figure:
    """Figure 3: generative precision/recall and Fréchet distance (top), zero-shot probe (bottom).

    Parameters
    ----------
    quality : DataFrame
        ``generative_quality.parquet`` of stage 09 (``method``, ``precision``, ``recall``,
        ``frechet_distance``, ``n``); drawn by :func:`sematlas.reporting.plotting.plot_generative_quality`.
    probe : mapping
        ``evaluation_results.json["zero_shot_probe"]`` (``features``, ``chance``, ``n_analyses``, ...).

    Returns
    -------
    Figure
        Three axes: precision vs recall, Fréchet bars, and the probe with three bars
        per feature set and a chance line.
    """
    fig = plot_generative_quality(quality)
    total, top, bottom = _grow(fig, top=0.4, bottom=0.5 * len(probe["features"]) + 1.6)
    _probe_panel(fig.add_subplot(_band(fig, total, 0.0, bottom, 1, 1)[0, 0]), probe)
    fig.suptitle(
        f"samples of every model vs PPCA and real training maps on {_n(quality['n'])} held-out studies "
        "(blue: models, red: baselines)",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


# ------------------------------------------------------------------------ figure 4
def plot_pointcloud(results: Mapping[str, Any], per_study: pd.DataFrame) -> Figure:
    """Figure 4: the point-cloud C-VAE, per study (top) and median Chamfer/EMD per method (bottom).

    Parameters
    ----------
    results : mapping
        ``pointcloud/test_results.json``; the bottom row is
        :func:`sematlas.evaluation.pointcloud.plot_metric_comparison`.
    per_study : DataFrame
        ``pointcloud/per_study.parquet`` (``<task>_<method>_chamfer_mm`` columns).

    Returns
    -------
    Figure
        Four axes: per-study Chamfer of the model against the nearest training study (reconstruction)
        and against the category pool (conditional generation), then the two median panels.
    """
    fig = plot_metric_comparison(results)
    total, top, _ = _grow(fig, top=3.9)
    grid = _band(fig, total, top, 1.0, 1, 2, pad=0.75, wspace=0.3)
    panels = (
        ("reconstruction", "nearest_training_study", "nearest training study", "model_beats_nearest_training_fraction"),
        ("conditional_generation", "category_pool", "category pool", "model_beats_category_pool_fraction"),
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
            f"{task.replace('_', ' ')}: model closer on {results[task][beats]:.0%} of studies (below the line)",
            fontsize=9,
        )
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"point-cloud C-VAE on {results['n_test']} held-out studies ({results['n_points']} points each, "
        f"trained on {results['n_train']}): model vs baselines, lower is closer",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


# ------------------------------------------------------------------------ figure 5
def plot_uncertainty(results: Mapping[str, Any]) -> Figure:
    """Figure 5: ECE before/after temperature scaling (left) and OOD AUROC per kind (right), against the goals.

    Parameters
    ----------
    results : mapping
        ``ensemble/test_results.json`` (``methods.<m>.ece_test_before/after``, ``temperature``,
        ``ood_auroc.<kind>`` and, where present, ``ood_auroc_predictive_nll.<kind>``;
        ``goals.ece_below``, ``goals.ood_auroc_above``).

    Returns
    -------
    Figure
        Two axes: two bars per method (ECE) and one bar per method, OOD score and kind (AUROC), the goals as
        dashed lines and chance (AUROC 0.5) dotted.
    """
    methods = list(results["methods"])
    goals = results["goals"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[1, 1.6])
    x = np.arange(len(methods))
    before = [results["methods"][m]["ece_test_before"] for m in methods]
    after = [results["methods"][m]["ece_test_after"] for m in methods]
    left.bar(x - 0.2, before, width=0.4, color=MODEL, alpha=0.4, label="before")
    left.bar(x + 0.2, after, width=0.4, color=MODEL, label="after temperature scaling")
    left.axhline(goals["ece_below"], color=REFERENCE, ls="--", lw=1, label=f"goal < {goals['ece_below']}")
    left.set_xticks(x, [f"{m.replace('_', ' ')}\n(T = {results['methods'][m]['temperature']:.2f})" for m in methods])
    left.set(ylabel="expected calibration error", title=f"calibration ({results['n_test']} test studies)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)

    kinds = list(dict.fromkeys(k for m in methods for k in results["methods"][m]["ood_auroc"]))
    # One bar per method and OOD score: the ensemble disagreement, and the predictive NLL where present.
    series = [
        (m, key, label)
        for m in methods
        for key, label in (("ood_auroc", "disagreement"), ("ood_auroc_predictive_nll", "predictive NLL"))
        if key in results["methods"][m]
    ]
    width = 0.8 / len(series)
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.9, len(methods)))
    for i, (m, key, label) in enumerate(series):
        values = [results["methods"][m][key].get(k, np.nan) for k in kinds]
        right.bar(
            np.arange(len(kinds)) + (i - (len(series) - 1) / 2) * width,
            values,
            width,
            color=shades[methods.index(m)],
            hatch="//" if key != "ood_auroc" else None,
            edgecolor="white",
            label=f"{m.replace('_', ' ')}: {label}",
        )
    right.axhline(goals["ood_auroc_above"], color=REFERENCE, ls="--", lw=1, label=f"goal > {goals['ood_auroc_above']}")
    right.axhline(0.5, color=REFERENCE, ls=":", lw=1, label="chance")
    right.set_xticks(np.arange(len(kinds)), [k.replace("_", " ") for k in kinds])
    right.set(
        ylim=(0, 1.05),
        ylabel="AUROC (test vs OOD maps)",
        title=f"OOD detection ({results['n_ood_per_kind']} maps per kind)",
    )
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("uncertainty of the ensembles against the project's goals", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ figure 6
def _gate_panel(ax: Axes, name: str, criterion: Mapping[str, Any]) -> None:
    value, threshold, passed = float(criterion["value"]), float(criterion["threshold"]), bool(criterion["pass"])
    colour = PASS_COLOUR if passed else FAIL_COLOUR
    ax.barh([0], [value], color=colour, height=0.5)
    ax.plot([value], [0], "o", color=colour)  # visible where the bar is too short to see
    ax.axvline(threshold, color="black", ls="--", lw=1.2)
    ax.axvline(0, color=REFERENCE, lw=0.8)
    low, high = min(0.0, value, threshold), max(0.0, value, threshold)
    pad = 0.15 * (high - low or 1.0)
    ax.set(xlim=(low - pad, high + pad), yticks=[])
    ax.set_title(f"{name.replace('_', ' ')}: {'PASS' if passed else 'FAIL'}", fontsize=9)
    label = f"{value:.3g} vs threshold {threshold:.3g} (dashed): {criterion['rule']}"
    ax.set_xlabel("\n".join(textwrap.wrap(label, 40)), fontsize=7)
    ax.tick_params(labelsize=7)


def plot_gate(results: Mapping[str, Any]) -> Figure:
    """Figure 6: each stage-gate criterion against its threshold (top), the learned hierarchy (bottom).

    Parameters
    ----------
    results : mapping
        ``hierarchical/results.json`` of stage 05 (``gate.criteria.<name>.{value, threshold, pass, rule}``,
        ``gate.result``, ``hierarchy.top_lower_abs_correlation``, ``hierarchy.category_profile``);
        the bottom row is :func:`sematlas.analysis.hierarchy.plot_hierarchy`.

    Returns
    -------
    Figure
        One axes per criterion (bar green when it passes, red when it fails; the threshold dashed),
        then the hierarchy's axes and colour bars.
    """
    hierarchy = results["hierarchy"]
    profile = pd.DataFrame.from_dict(hierarchy["category_profile"], orient="index")
    fig = plot_hierarchy(np.asarray(hierarchy["top_lower_abs_correlation"], dtype=float), profile)
    criteria = results["gate"]["criteria"]
    ncols = len(criteria) if fig.get_size_inches()[0] >= 2.6 * len(criteria) else -(-len(criteria) // 2)
    nrows = -(-len(criteria) // ncols)
    total, top, _ = _grow(fig, top=1.6 * nrows + 0.6)
    grid = _band(fig, total, top, 1.0, nrows, ncols, pad=0.75, wspace=0.35, hspace=1.3)
    for i, (name, criterion) in enumerate(criteria.items()):
        _gate_panel(fig.add_subplot(grid[i // ncols, i % ncols]), name, criterion)
    gate = results["gate"]
    fig.suptitle(
        f"H-VAE stage gate: {gate['result']} ({gate['passed']} of {len(criteria)} criteria; "
        f"top {results['top_dim']} + lower {results['lower_dim']} units, "
        f"{results['kl_per_level']['n_studies']} test studies)",
        fontsize=10,
        y=1 - 0.1 / total,
        color=PASS_COLOUR if gate["result"] == PASS else FAIL_COLOUR,
    )
    return fig


# ------------------------------------------------------------------------ figure 7
def plot_cca(results: Mapping[str, Any]) -> Figure:
    """Figure 7: each canonical correlation against the 95th percentile of its permutation null.

    Parameters
    ----------
    results : mapping
        ``cca/results.json`` of stage 06 (``components``: ``component``, ``r``, ``null_q95``, ``p``,
        ``p_fwe``; ``variant``, ``dims``, ``n_studies``, ``split``, ``n_permutations``).

    Returns
    -------
    Figure
        One axes: a bar per component, the null's 95th percentile as a red line over it, p values above.
    """
    components = pd.DataFrame(results["components"])
    k = components["component"].to_numpy()
    fig, ax = plt.subplots(figsize=(max(4.5, 2.0 + 0.7 * len(k)), 3.8))
    ax.bar(k, components["r"], width=0.6, color=MODEL, label="observed canonical correlation")
    ax.hlines(components["null_q95"], k - 0.4, k + 0.4, color=BASELINE, lw=2, label="null, 95th percentile")
    for row in components.itertuples():
        ax.annotate(
            f"p={row.p:.3f}\np_FWE={row.p_fwe:.3f}",
            (row.component, max(row.r, row.null_q95)),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=7,
        )
    ax.set(xticks=k, xlabel="canonical component", ylabel="canonical correlation r", ylim=(0, 1.18))
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    dims = results["dims"]
    ax.set_title(
        f"CCA: {results['variant']} ({dims['volumetric']} units) vs point-cloud ({dims['pointcloud']} units) latents\n"
        f"on {results['n_studies']} {results['split']} studies; null: {results['n_permutations']} shuffled pairings",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ figure 8
def plot_clusters(
    clusters: pd.DataFrame,
    summary: Mapping[str, Any],
    lift: pd.DataFrame,
    shares: pd.DataFrame,
    centroids: Sequence[Any] = (),
) -> Figure:
    """Figure 8: cluster sizes and noise (top), topic lift and task shares (middle), centroid maps (bottom).

    Parameters
    ----------
    clusters : DataFrame
        ``clustering/clusters.parquet`` (``cluster``, ``name``, ``size``).
    summary : mapping
        ``clustering/results.json`` (``n_studies``, ``noise_fraction``, ``variant``, ``params.top_topics``,
        ``ari_mean``, ``ari_sd``).
    lift, shares : DataFrame
        :func:`sematlas.analysis.clustering.cluster_profiles` of the saved assignments; the middle row is
        :func:`sematlas.analysis.clustering.plot_cluster_profiles`.
    centroids : sequence of Nifti1Image
        The decoded centroid map of each cluster (``centroid_<k>.nii.gz``), drawn as glass brains;
        empty to leave them out.

    Returns
    -------
    Figure
        The sizes axes has one bar per cluster plus one for noise.
    """
    names = clusters["name"].tolist()
    fig = plot_cluster_profiles(lift, shares, names, int(summary["params"]["top_topics"]))
    width = fig.get_size_inches()[0]
    ncols = max(1, min(len(centroids), int(width // 4.5)))
    nrows = -(-len(centroids) // ncols) if len(centroids) else 0
    total, top, bottom = _grow(fig, top=0.28 * (len(clusters) + 1) + 1.3, bottom=2.3 * nrows)

    sizes = fig.add_subplot(_band(fig, total, top, 1.0, 1, 1)[0, 0])
    n_noise = int(round(summary["noise_fraction"] * summary["n_studies"]))
    labels, counts = [*names, "noise (unclustered)"], [*clusters["size"].astype(int), n_noise]
    y = np.arange(len(labels))[::-1]
    sizes.barh(y, counts, color=[MODEL] * len(names) + ["lightgrey"])
    for yi, count in zip(y, counts):
        sizes.annotate(f" {count}", (count, yi), va="center", fontsize=7)
    sizes.set_yticks(y, labels, fontsize=7)
    sizes.set(xlabel="studies")
    sizes.set_title(
        f"HDBSCAN on the {summary['variant']} latents of {summary['n_studies']} studies: {len(names)} clusters, "
        f"{summary['noise_fraction']:.0%} noise; bootstrap ARI {summary['ari_mean']:.2f} ± {summary['ari_sd']:.2f}",
        fontsize=9,
    )
    if nrows:
        from nilearn import plotting

        grid = fig.add_gridspec(nrows, ncols, bottom=0.02 / total, top=bottom - 0.1 / total, left=0.02, right=0.98)
        for i, (image, name) in enumerate(zip(centroids, names)):
            ax = fig.add_subplot(grid[i // ncols, i % ncols])
            # Thresholded like stage 07's centroid figure: the top 5% of the in-brain values.
            inside = np.abs(np.asarray(image.get_fdata()))
            inside = inside[inside > 0]
            threshold = float(np.quantile(inside, 0.95)) if inside.size else 0.0
            plotting.plot_glass_brain(
                image, display_mode="ortho", axes=ax, threshold=threshold, cmap="hot", colorbar=False, annotate=False
            )
            ax.set_title(name, fontsize=9)
    return fig


# ------------------------------------------------------------------------ figure 9
def plot_forecasting(table: pd.DataFrame, results: Mapping[str, Any]) -> Figure:
    """Figure 9: Fréchet distance per held-out year of the GRU, persistence and the linear trend.

    Parameters
    ----------
    table : DataFrame
        ``forecasting/frechet_by_year.parquet`` (``year``, ``n``, ``method``, ``frechet``, ``mean_term``);
        drawn by :func:`sematlas.analysis.forecasting.plot_frechet`.
    results : mapping
        ``forecasting/results.json`` (``cutoff_year``, ``variant``, ``frechet_mean``, ``note``).

    Returns
    -------
    Figure
        The two axes of ``plot_frechet``, a title and the note that Neurosynth v7 stops in 2018.
    """
    fig = plot_frechet(table)
    total, _, bottom = _grow(fig, top=0.45, bottom=0.7)
    means = ", ".join(f"{m} {v:.3g}" for m, v in results["frechet_mean"].items())
    fig.text(
        0.5,
        bottom / 2,
        "\n".join(textwrap.wrap(f"Mean over held-out years: {means}. {results['note']}", 150)),
        ha="center",
        va="center",
        fontsize=8,
    )
    fig.suptitle(
        f"forecast vs observed distribution of the {results['variant']} latents in each year after "
        f"{results['cutoff_year']}: GRU vs persistence vs linear trend",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


__all__ = [
    "TITLES",
    "figure_sources",
    "load_results",
    "plot_clusters",
    "plot_corpus",
    "plot_cca",
    "plot_forecasting",
    "plot_gate",
    "plot_generation",
    "plot_pointcloud",
    "plot_reconstruction",
    "plot_uncertainty",
    "save_figure",
    "volumetric_variants",
    "write_index",
]
