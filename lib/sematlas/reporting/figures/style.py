"""The manuscript figures' one style: colours, and growing a stage's figure by the panels the manuscript adds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from sematlas.reporting.plotting import BASELINES

#: Colours shared by every figure: a model, a baseline, a second (weaker) baseline, a reference line.
MODEL = "tab:blue"
BASELINE = "tab:red"
BASELINE_LIGHT = "#f2a29b"
REFERENCE = "0.45"
PASS_COLOUR, FAIL_COLOUR = "tab:green", "tab:red"


def grow(fig: Figure, top: float = 0.0, bottom: float = 0.0) -> tuple[float, float, float]:
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


def band(
    fig: Figure, total: float, lower: float, upper: float, nrows: int, ncols: int, pad: float = 0.45, **kwargs: Any
) -> GridSpec:
    """A grid in the figure-fraction band ``[lower, upper]``, leaving ``pad`` inches above and 0.6 in below."""
    return fig.add_gridspec(
        nrows, ncols, bottom=lower + 0.6 / total, top=upper - pad / total, left=0.08, right=0.97, **kwargs
    )


def method_colour(method: str) -> str:
    """Red for a baseline of :data:`~sematlas.reporting.plotting.BASELINES`, blue for a model."""
    return BASELINE if method in BASELINES else MODEL


def counts(values: Sequence[int]) -> str:
    """``24`` or ``24/30`` when the models were scored on different numbers of studies."""
    unique = list(dict.fromkeys(int(v) for v in values))
    return "/".join(str(v) for v in unique)
