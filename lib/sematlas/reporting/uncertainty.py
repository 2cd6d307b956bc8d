"""Figures of stage 04: the reliability diagram of the predictive Gaussian and the OOD score histograms."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from sematlas.evaluation.uncertainty import CALIBRATION_LEVELS, ood_auroc


def plot_reliability(curves: Mapping[str, np.ndarray], levels: np.ndarray = CALIBRATION_LEVELS) -> Figure:
    """Reliability diagram: observed coverage of the central intervals against their level.

    Parameters
    ----------
    curves : mapping
        Label (e.g. ``"snapshot, before"``) -> observed coverage per level.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    for label, observed in curves.items():
        ece = float(np.mean(np.abs(np.asarray(observed) - levels)))
        ax.plot(levels, observed, marker="o", ms=3, label=f"{label} (ECE {ece:.3f})")
    ax.set(
        xlabel="central interval level p",
        ylabel="observed fraction inside",
        xlim=(0, 1),
        ylim=(0, 1),
        title="reliability of the predictive Gaussian",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ood_histograms(scores: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> Figure:
    """Histograms of each OOD score: test maps against each OOD kind, one row per (method, score).

    Parameters
    ----------
    scores : mapping
        Method -> score name (see :func:`sematlas.evaluation.uncertainty.ood_scores`) ->
        {``test``: values, kind: values, ...}.
        Positive scores (the disagreement) are shown on a log10 axis.
    """
    rows = [(method, name) for method, by_score in scores.items() for name in by_score]
    first = scores[rows[0][0]][rows[0][1]]
    kinds = [k for k in first if k != "test"]
    fig, axes = plt.subplots(len(rows), len(kinds), figsize=(3.6 * len(kinds), 2.6 * len(rows)), squeeze=False)
    for row, (method, name) in enumerate(rows):
        values = scores[method][name]
        positive = all(np.all(v > 0) for v in values.values())
        shown = {k: np.log10(v) if positive else np.asarray(v) for k, v in values.items()}
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            both = np.concatenate([shown["test"], shown[kind]])
            bins = np.linspace(both.min(), both.max() + 1e-9, 25)
            ax.hist(shown["test"], bins=bins, alpha=0.6, label="test")
            ax.hist(shown[kind], bins=bins, alpha=0.6, label=kind)
            auroc = ood_auroc(values["test"], values[kind])
            label = name.replace("_", " ")
            ax.set(
                title=f"{method}, {label}: {kind} (AUROC {auroc:.2f})", xlabel=f"log10 {label}" if positive else label
            )
            ax.title.set_fontsize(8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
