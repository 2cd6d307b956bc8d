"""Figures of the point-cloud model (stages 03 and 06): metric comparison, point sets on glass brains, a 3-D view."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sematlas.evaluation.pointcloud import results_frame


def plot_metric_comparison(results: Mapping[str, Any]) -> Figure:
    """Median Chamfer and EMD (mm) of the model and the baselines, one panel per task (lower is better)."""
    import matplotlib.pyplot as plt

    table = results_frame(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), squeeze=False)
    for ax, task in zip(axes[0], ("reconstruction", "conditional_generation")):
        frame = table.loc[task]
        y = np.arange(len(frame))
        ax.barh(y - 0.2, frame["chamfer_mm_median"], height=0.4, label="Chamfer")
        ax.barh(y + 0.2, frame["emd_mm_median"], height=0.4, label="EMD")
        ax.set_yticks(y, [m.replace("_", " ") for m in frame.index])
        ax.set(title=f"{task.replace('_', ' ')} (test, median)", xlabel="mm (lower is better)")
        ax.grid(axis="x", alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_glass_brain_points(sets: Mapping[str, np.ndarray], titles: Sequence[str]) -> Figure:
    """Point sets over a glass brain: one row per study, sets overlaid in colours (static, matplotlib).

    Parameters
    ----------
    sets : mapping
        Label -> ndarray, shape (n_studies, n_points, 3), MNI mm. The first set is drawn largest.
    titles : sequence of str
        One per study.
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    colours = ["black", "tab:red", "tab:blue", "tab:green"]
    n = len(titles)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n), squeeze=False)
    for row, title in enumerate(titles):
        display = plotting.plot_glass_brain(None, display_mode="ortho", axes=axes[row, 0], title=title, annotate=False)
        for (label, points), colour, size in zip(sets.items(), colours, (40, 18, 18, 18)):
            display.add_markers(points[row], marker_color=colour, marker_size=size, label=label)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=label) for label, c in zip(sets, colours)]
    fig.legend(handles=handles, loc="lower center", ncol=len(sets), fontsize=9, frameon=False)
    fig.subplots_adjust(bottom=0.3 / n)
    return fig


def view_points_3d(sets: Mapping[str, np.ndarray], sizes: Sequence[float] = (8.0, 5.0, 5.0, 5.0)) -> Any:
    """Interactive 3-D view of point sets over a glass brain (nilearn ``view_markers``; plotly.js is
    embedded, so it works offline).

    Parameters
    ----------
    sets : mapping
        Label -> ndarray, shape (n_points, 3), MNI mm. Colours: black, red, blue, green in order.

    Returns
    -------
    nilearn.plotting.html_connectome.ConnectomeView
        Displays inline in a notebook; ``.save_as_html(path)`` writes a standalone page.
    """
    from nilearn import plotting

    colours = ["black", "red", "blue", "green"]
    coords = np.concatenate([np.asarray(points) for points in sets.values()])
    colour = [c for points, c in zip(sets.values(), colours) for _ in range(len(points))]
    size = [s for points, s in zip(sets.values(), sizes) for _ in range(len(points))]
    labels = [label for label, points in sets.items() for _ in range(len(points))]
    return plotting.view_markers(
        coords,
        marker_color=colour,
        marker_size=size,
        marker_labels=labels,
        title=" / ".join(f"{label} ({c})" for label, c in zip(sets, colours)),
        title_fontsize=12,
    )
