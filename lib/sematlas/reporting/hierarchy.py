"""Figure of stage 05: the hierarchy the H-VAE learned, between its levels and across task categories."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_hierarchy(correlation: np.ndarray, profile: pd.DataFrame) -> Figure:
    """The learned hierarchy: which top-level units organise which lower-level units and task categories.

    Parameters
    ----------
    correlation : ndarray, shape (top_dim, lower_dim)
        :func:`sematlas.analysis.hierarchy.level_correlation` of the top level and the lower
        level (in its own coordinates).
    profile : DataFrame, shape (n_categories, top_dim)
        :func:`sematlas.analysis.hierarchy.category_profile`.

    Returns
    -------
    Figure
        Left: |r| heatmap, top units by lower units. Right: mean standardised
        top-level activation per category (diverging, symmetric about 0).
    """
    top_dim, lower_dim = correlation.shape
    n_categories = len(profile)
    width = 2.0 + 0.3 * lower_dim + 0.35 * top_dim + 3.0
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(width, 1.2 + 0.3 * max(top_dim, n_categories)),
        gridspec_kw={"width_ratios": [max(lower_dim, 1), max(top_dim, 1) + 2]},
    )
    image = left.imshow(np.ma.masked_invalid(correlation), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    left.set(
        xlabel="lower-level unit (z_low)",
        ylabel="top-level unit",
        title="|r| between levels",
        xticks=range(lower_dim),
        yticks=range(top_dim),
    )
    left.tick_params(labelsize=7)
    fig.colorbar(image, ax=left, fraction=0.05, pad=0.02)
    limit = float(np.nanmax(np.abs(profile.to_numpy()))) if profile.size else 1.0
    image = right.imshow(profile.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    right.set(
        xlabel="top-level unit",
        title="mean top-level activation (z-scored) per task",
        xticks=range(top_dim),
        yticks=range(n_categories),
    )
    right.set_yticklabels(profile.index, fontsize=7)
    right.tick_params(labelsize=7)
    fig.colorbar(image, ax=right, fraction=0.05, pad=0.02)
    fig.tight_layout()
    return fig
