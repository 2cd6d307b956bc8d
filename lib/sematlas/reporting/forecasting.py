"""Figures of stage 08: forecast trajectories, Fréchet distances per held-out year, the Zeitgeist timeline."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sematlas.analysis.forecasting.series import Forecast, YearlySeries
from sematlas.pipeline.registry import writer

#: Colour and marker of each forecasting method.
METHOD_STYLE = {
    "gru": {"color": "tab:blue", "marker": "o"},
    "persistence": {"color": "tab:red", "marker": "s"},
    "linear_trend": {"color": "tab:orange", "marker": "^"},
}


def plot_trajectories(series: YearlySeries, forecasts: Mapping[str, Forecast], cutoff: int) -> Figure:
    """Observed and forecast yearly means on the first two principal components of the observed means.

    Observed means carry +- 1 standard error of the projected mean; the grey band
    marks the held-out years.
    """
    observed = series.observed
    years, means = series.years[observed], series.mean[observed]
    centre = means.mean(0)
    _, _, components = np.linalg.svd(means - centre, full_matrices=False)
    components = components[: min(2, len(components))]
    fig, axes = plt.subplots(1, len(components), figsize=(6 * len(components), 3.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        direction = components[k]
        spread = np.einsum("i,tij,j->t", direction, series.cov[observed], direction)
        error = np.sqrt(spread / series.n[observed])
        ax.errorbar(years, (means - centre) @ direction, yerr=error, color="black", fmt="o-", ms=3, label="observed")
        for method, forecast in forecasts.items():
            style = METHOD_STYLE.get(method, {})
            ahead = forecast.years > cutoff
            values = (forecast.mean - centre) @ direction
            ax.plot(forecast.years[ahead], values[ahead], ms=4, label=method, **style)
            if (~ahead).any():
                ax.plot(forecast.years[~ahead], values[~ahead], ls=":", color=style.get("color"))
        ax.axvspan(cutoff + 0.5, series.years[-1] + 0.5, color="grey", alpha=0.15, lw=0)
        ax.set(xlabel="publication year", ylabel=f"PC{k + 1} of the yearly mean latent")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("yearly mean latent: observed vs forecast (dotted: in-sample fit; shaded: held out)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_frechet(table: pd.DataFrame) -> Figure:
    """Fréchet distance (left) and its mean term (right) per held-out year and method.

    ``table`` is :func:`sematlas.analysis.forecasting.scoring.frechet_by_year`'s output.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method, part in table.groupby("method", sort=False):
        for ax, column in zip(axes, ("frechet", "mean_term")):
            ax.plot(part["year"], part[column], label=method, ms=5, **METHOD_STYLE.get(method, {}))
    counts = table.drop_duplicates("year")
    for ax, title in zip(axes, ("Fréchet distance (lower is closer)", "mean term ||mu_f - mu_obs||^2")):
        ax.set_xticks(counts["year"], [f"{y}\nn={n}" for y, n in zip(counts["year"], counts["n"])])
        ax.set(title=title, xlabel="held-out year")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_zeitgeist(
    clusters: pd.DataFrame,
    topics: pd.DataFrame,
    drift: Mapping[int, tuple[nib.Nifti1Image, nib.Nifti1Image]],
    task: str,
) -> Figure:
    """The Zeitgeist timeline: cluster prevalence, topic prevalence and a task's map drifting with year.

    Parameters
    ----------
    clusters : DataFrame
        :func:`sematlas.analysis.forecasting.timeline.cluster_prevalence` (years x clusters, rows
        sum to 1), drawn as a stacked area.
    topics : DataFrame
        :func:`sematlas.analysis.forecasting.timeline.topic_prevalence` (years x topics).
    drift : mapping
        Year -> ``(mean, sd)`` NIfTI images of the task's predicted map; one column
        each, glass brains with a colour scale shared across years.
    task : str

    Returns
    -------
    Figure
    """
    from nilearn import plotting

    columns = len(drift)
    fig = plt.figure(figsize=(3.6 * max(columns, 4), 13.0))
    grid = fig.add_gridspec(4, columns, height_ratios=[1.0, 1.0, 0.8, 0.8], hspace=0.55)
    ax = fig.add_subplot(grid[0, :])
    palette = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(clusters.columns), 2)))
    colours = [("lightgrey" if name == "noise" else palette[i]) for i, name in enumerate(clusters.columns)]
    ax.stackplot(clusters.index, clusters.T.to_numpy(), labels=clusters.columns, colors=colours, alpha=0.9)
    ax.set(xlim=(clusters.index.min(), clusters.index.max()), ylim=(0, 1), ylabel="fraction of the year's studies")
    ax.set_title(
        f"cluster prevalence (stage {writer('results/clustering').number} HDBSCAN clusters of the latents)", fontsize=10
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax = fig.add_subplot(grid[1, :])
    for name in topics.columns:
        ax.plot(topics.index, topics[name], marker="o", ms=3, label=name)
    ax.set(ylabel="mean LDA-50 weight", xlabel="publication year")
    ax.set_title("topics whose prevalence changed most (all curated studies)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for row, field in enumerate(("mean", "sd")):
        volumes = [pair[row].get_fdata() for pair in drift.values()]
        vmax = max(float(v.max()) for v in volumes) or 1.0
        # Show the top decile of the in-brain values of the year maps, on one scale across years.
        threshold = float(np.quantile(np.concatenate([v[v > 0] for v in volumes]), 0.9))
        for col, (year, pair) in enumerate(drift.items()):
            ax = fig.add_subplot(grid[2 + row, col])
            plotting.plot_glass_brain(
                pair[row],
                axes=ax,
                display_mode="ortho",
                cmap="hot" if field == "mean" else "viridis",
                vmin=0.0,
                vmax=vmax,
                plot_abs=False,
                threshold=threshold,
                colorbar=col == columns - 1,
                title=f"{year} {field}",
            )
            if row == 0 and col == 0:
                top = ax.get_position().y1
    fig.text(
        0.5,
        top + 0.03,
        f"predicted '{task}' map by year: mean (top) and sd (bottom) over prior samples (latent uncertainty); "
        "top decile shown",
        ha="center",
        fontsize=10,
    )
    return fig
