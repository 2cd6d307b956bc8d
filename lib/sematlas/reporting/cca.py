"""Figures of stage 06: canonical correlations against their permutation null, and decoded canonical variates."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sematlas.analysis.cca import LatentCCA


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now out of the garbage collector's reach for a while.

    nilearn's ``safe_get_data`` forces ``gc.collect()`` on every image it reads (dozens per
    figure); in a process holding torch each full collection takes about half a second, so a
    few glass brains took 20 s. Frozen objects are skipped by collections (nothing is leaked:
    they are unfrozen on exit), which brings those calls down to milliseconds.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def plot_canonical_correlations(cca: LatentCCA) -> Figure:
    """Canonical correlations (bars, annotated with p) against their stepwise permutation null:
    a grey box from the null's 2.5th to 97.5th percentile and a line at its 95th percentile."""
    import matplotlib.pyplot as plt

    records = cca.results()
    k = np.arange(1, len(records) + 1)
    low, high = np.quantile(cca.null_, [0.025, 0.975], axis=0)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 0.6 * len(k)), 3.4))
    ax.bar(k, high - low, bottom=low, width=0.8, color="0.85", label="null, middle 95% (shuffled pairing)")
    ax.hlines([r["null_q95"] for r in records], k - 0.4, k + 0.4, color="0.3", lw=1.2, label="null 95th percentile")
    ax.bar(k, cca.correlations_, width=0.5, color="tab:blue", alpha=0.85, label="observed")
    for record in records:
        ax.annotate(
            f"p={record['p']:.3f}",
            (record["component"], max(record["r"], record["null_q95"])),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=7,
        )
    ax.set(xticks=k, xlabel="canonical component", ylabel="canonical correlation r", ylim=(0, 1.05))
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_decoded_maps(
    maps: Sequence[tuple[nib.Nifti1Image, nib.Nifti1Image]], titles: Sequence[str], step: float
) -> Figure:
    """Decoded maps of canonical variates: one row per variate, glass brains of the map at
    ``-step`` and ``+step`` SD (one colour scale for all) and slices of their difference
    (``+`` minus ``-``).

    Parameters
    ----------
    maps : sequence of (NIfTI, NIfTI)
        The ``-step`` and ``+step`` map of each variate.
    titles : sequence of str
        One per variate, written above its row.
    step : float
        In SD of the variate, for the panel titles.
    """
    import matplotlib.pyplot as plt
    from nilearn import datasets, image, plotting

    background = datasets.load_mni152_template(resolution=2)  # the 1 mm default is slower to draw, no clearer at 4 mm
    fig, axes = plt.subplots(len(maps), 3, figsize=(15, 3.0 * len(maps)), squeeze=False)
    vmax = max(float(np.max(m.get_fdata())) for pair in maps for m in pair) or 1.0
    with _frozen_heap():
        for row, ((minus, plus), title) in enumerate(zip(maps, titles)):
            for col, (volume, sign) in enumerate(((minus, "-"), (plus, "+"))):
                plotting.plot_glass_brain(
                    volume, axes=axes[row, col], title=f"{sign}{step:g} SD", vmax=vmax, cmap="hot", annotate=False
                )
            plotting.plot_stat_map(
                image.math_img("b - a", a=minus, b=plus),
                bg_img=background,
                axes=axes[row, 2],
                title=f"+{step:g} minus -{step:g} SD",
                display_mode="ortho",
                cmap="RdBu_r",
                annotate=False,
                draw_cross=False,
            )
            axes[row, 0].set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.subplots_adjust(hspace=0.35)
    return fig
