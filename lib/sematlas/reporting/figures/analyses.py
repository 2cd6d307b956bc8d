"""Manuscript figures 6 to 9: the analyses (the H-VAE's gate, CCA, clusters, forecasting)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sematlas.analysis.hierarchy import PASS
from sematlas.analysis.results import CCAResults, ClusteringResults, ForecastingResults, HierarchicalResults
from sematlas.reporting.clustering import plot_cluster_profiles
from sematlas.reporting.figures.style import BASELINE, FAIL_COLOUR, MODEL, PASS_COLOUR, REFERENCE, band, grow
from sematlas.reporting.forecasting import plot_frechet
from sematlas.reporting.hierarchy import plot_hierarchy


# ------------------------------------------------------------------------ figure 7
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


def plot_gate(results: HierarchicalResults) -> Figure:
    """Figure 7: each stage-gate criterion against its threshold (top), the learned hierarchy (bottom).

    Parameters
    ----------
    results : HierarchicalResults
        Stage 05's (``gate.criteria[name]``: ``value``, ``threshold``, ``pass``, ``rule``; ``gate.result``,
        ``hierarchy.top_lower_abs_correlation``, ``hierarchy.category_profile``); the bottom row is
        :func:`sematlas.reporting.hierarchy.plot_hierarchy`.

    Returns
    -------
    Figure
        One axes per criterion (bar green when it passes, red when it fails; the threshold dashed),
        then the hierarchy's axes and colour bars.
    """
    hierarchy, gate = results.hierarchy, results.gate
    profile = pd.DataFrame.from_dict(hierarchy.category_profile, orient="index")
    fig = plot_hierarchy(np.asarray(hierarchy.top_lower_abs_correlation, dtype=float), profile)
    criteria = gate.criteria
    ncols = len(criteria) if fig.get_size_inches()[0] >= 2.6 * len(criteria) else -(-len(criteria) // 2)
    nrows = -(-len(criteria) // ncols)
    total, top, _ = grow(fig, top=1.6 * nrows + 0.6)
    grid = band(fig, total, top, 1.0, nrows, ncols, pad=0.75, wspace=0.35, hspace=1.3)
    for i, (name, criterion) in enumerate(criteria.items()):
        _gate_panel(fig.add_subplot(grid[i // ncols, i % ncols]), name, criterion)
    fig.suptitle(
        f"H-VAE stage gate: {gate.result} ({gate.passed} of {len(criteria)} criteria; "
        f"top {results.top_dim} + lower {results.lower_dim} units, "
        f"{results.kl_per_level.n_studies} test studies)",
        fontsize=10,
        y=1 - 0.1 / total,
        color=PASS_COLOUR if gate.result == PASS else FAIL_COLOUR,
    )
    return fig


# ------------------------------------------------------------------------ figure 8
def plot_cca(results: CCAResults) -> Figure:
    """Figure 8: each canonical correlation against the 95th percentile of its permutation null.

    Parameters
    ----------
    results : CCAResults
        Stage 06's (``components``: ``component``, ``r``, ``null_q95``, ``p``, ``p_fwe``; ``variant``,
        ``dims``, ``n_studies``, ``split``, ``n_permutations``).

    Returns
    -------
    Figure
        One axes: a bar per component, the null's 95th percentile as a red line over it, p values above.
    """
    components = pd.DataFrame([component.to_dict() for component in results.components])
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
    dims = results.dims
    ax.set_title(
        f"CCA: {results.variant} ({dims.volumetric} units) vs point-cloud ({dims.pointcloud} units) latents\n"
        f"on {results.n_studies} {results.split} studies; null: {results.n_permutations} shuffled pairings",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ figure 9
def plot_clusters(
    clusters: pd.DataFrame,
    summary: ClusteringResults,
    lift: pd.DataFrame,
    shares: pd.DataFrame,
    centroids: Sequence[Any] = (),
) -> Figure:
    """Figure 9: cluster sizes and noise (top), topic lift and task shares (middle), centroid maps (bottom).

    Parameters
    ----------
    clusters : DataFrame
        ``clustering/clusters.parquet`` (``cluster``, ``name``, ``size``).
    summary : ClusteringResults
        Stage 07's (``n_studies``, ``noise_fraction``, ``variant``, ``params.top_topics``, ``ari_mean``,
        ``ari_sd``).
    lift, shares : DataFrame
        :func:`sematlas.analysis.clustering.cluster_profiles` of the saved assignments; the middle row is
        :func:`sematlas.reporting.clustering.plot_cluster_profiles`.
    centroids : sequence of Nifti1Image
        The decoded centroid map of each cluster (``centroid_<k>.nii.gz``), drawn as glass brains;
        empty to leave them out.

    Returns
    -------
    Figure
        The sizes axes has one bar per cluster plus one for noise.
    """
    names = clusters["name"].tolist()
    fig = plot_cluster_profiles(lift, shares, names, summary.params.top_topics)
    width = fig.get_size_inches()[0]
    ncols = max(1, min(len(centroids), int(width // 4.5)))
    nrows = -(-len(centroids) // ncols) if len(centroids) else 0
    total, top, bottom = grow(fig, top=0.28 * (len(clusters) + 1) + 1.3, bottom=2.3 * nrows)

    sizes = fig.add_subplot(band(fig, total, top, 1.0, 1, 1)[0, 0])
    n_noise = int(round(summary.noise_fraction * summary.n_studies))
    labels, counts = [*names, "noise (unclustered)"], [*clusters["size"].astype(int), n_noise]
    y = np.arange(len(labels))[::-1]
    sizes.barh(y, counts, color=[MODEL] * len(names) + ["lightgrey"])
    for yi, count in zip(y, counts):
        sizes.annotate(f" {count}", (count, yi), va="center", fontsize=7)
    sizes.set_yticks(y, labels, fontsize=7)
    sizes.set(xlabel="studies")
    sizes.set_title(
        f"HDBSCAN on the {summary.variant} latents of {summary.n_studies} studies: {len(names)} clusters, "
        f"{summary.noise_fraction:.0%} noise; bootstrap ARI {_mean_sd(summary.ari_mean, summary.ari_sd)}",
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


# ------------------------------------------------------------------------ figure 10
def plot_forecasting(table: pd.DataFrame, results: ForecastingResults) -> Figure:
    """Figure 10: Fréchet distance per held-out year of the GRU, persistence and the linear trend.

    Parameters
    ----------
    table : DataFrame
        ``forecasting/frechet_by_year.parquet`` (``year``, ``n``, ``method``, ``frechet``, ``mean_term``);
        drawn by :func:`sematlas.reporting.forecasting.plot_frechet`.
    results : ForecastingResults
        Stage 08's (``cutoff_year``, ``variant``, ``frechet_mean``, ``note``).

    Returns
    -------
    Figure
        The two axes of ``plot_frechet``, a title and the note that Neurosynth v7 stops in 2018.
    """
    fig = plot_frechet(table)
    total, _, bottom = grow(fig, top=0.45, bottom=0.7)
    means = ", ".join(f"{m} {v:.3g}" for m, v in results.frechet_mean.items())
    fig.text(
        0.5,
        bottom / 2,
        "\n".join(textwrap.wrap(f"Mean over held-out years: {means}. {results.note}", 150)),
        ha="center",
        va="center",
        fontsize=8,
    )
    fig.suptitle(
        f"forecast vs observed distribution of the {results.variant} latents in each year after "
        f"{results.cutoff_year}: GRU vs persistence vs linear trend",
        fontsize=10,
        y=1 - 0.1 / total,
    )
    return fig


def _mean_sd(mean: float | None, sd: float | None) -> str:
    """``0.52 ± 0.10``, or ``undefined`` where no subsample gave an ARI."""
    return "undefined" if mean is None or sd is None else f"{mean:.2f} ± {sd:.2f}"


__all__ = ["plot_cca", "plot_clusters", "plot_forecasting", "plot_gate"]
