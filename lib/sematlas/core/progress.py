"""Progress bars for the library's long loops: what is running, the time spent and an estimate of the time left.

In a terminal or in JupyterLab a bar is tqdm's own (text, or a widget in a
notebook). A stage run by the pipeline (``python -m sematlas.pipeline run``) is
a papermill kernel whose output goes into its executed notebook, not to the
user's terminal; the pipeline names a file in the kernel's environment
(:data:`PROGRESS_FILE`) and the stage (:data:`PROGRESS_LABEL`), every bar writes
its text to that file with the stage in front, and the pipeline copies the file
to the terminal as it grows (:mod:`sematlas.pipeline.console`). Under the
pipeline every bar is drawn on one line (position 0), so the copy stays readable
in a log file too.

>>> for batch in progress(batches, "rendering test"):   # doctest: +SKIP
...     ...
02_train_volumetric  rendering test:  45%|#########           | 9/20 [00:04<00:05, 2.1it/s]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import IO, Any, TypeVar

#: Environment variable naming the file bars write to (set by the pipeline for a stage's kernel).
PROGRESS_FILE = "SEMATLAS_PROGRESS_FILE"
#: Environment variable naming what runs (the stage, e.g. ``02_train_volumetric``), put in front of every bar.
PROGRESS_LABEL = "SEMATLAS_PROGRESS_LABEL"
#: Environment variable with the width of the pipeline's terminal: the kernel cannot ask the file it writes to.
PROGRESS_COLUMNS = "SEMATLAS_PROGRESS_COLUMNS"

#: What a bar shows: description, percentage, bar, count, ``[elapsed<remaining, rate]``.
BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

#: Seconds between redraws under the pipeline: often enough to watch, rare enough for a log file.
REDRAW_SECONDS = 1.0

_T = TypeVar("_T")


@functools.cache
def _open_side_channel(path: str) -> IO[str]:
    # Appending: several processes of one stage (data-loader workers, a launcher's ranks) may share the file.
    return open(path, "a", encoding="utf-8", newline="", buffering=1)  # noqa: SIM115 (open while the kernel lives)


def side_channel() -> IO[str] | None:
    """The file the pipeline copies to the terminal, or None outside the pipeline."""
    path = os.environ.get(PROGRESS_FILE)
    return _open_side_channel(path) if path else None


def describe(description: str) -> str:
    """``description`` with the running stage in front under the pipeline (``02_train_volumetric  rendering``)."""
    label = os.environ.get(PROGRESS_LABEL)
    return f"{label}  {description}" if label else description


def progress_bar(
    iterable: Iterable[_T] | None = None,
    description: str = "",
    *,
    total: float | None = None,
    unit: str = "it",
    leave: bool = True,
    **options: Any,
) -> Any:  # tqdm.tqdm: the package ships no types
    """A tqdm bar where the user sees it: on the pipeline's side channel, else tqdm's own (terminal or widget).

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; without one, advance the bar with ``update``.
    description : str
        What runs, e.g. ``"rendering test"``; :func:`describe` adds the stage.
    total : float, optional
        Number of items (default ``len(iterable)`` where it has one); without
        it the bar shows the count and the elapsed time only.
    unit : str
        What one item is (``"batch"``, ``"study"``).
    leave : bool
        Keep the finished bar on screen (one line per loop), or clear it.
    **options
        Further ``tqdm`` arguments (``smoothing``, ``disable``).

    Returns
    -------
    tqdm.tqdm
    """
    stream = side_channel()
    # ": " as tqdm's set_description adds it, so a bar reads the same before and after a new description.
    settings: dict[str, Any] = {"desc": describe(description) + ": ", "total": total, "unit": unit, "leave": leave}
    settings["bar_format"] = BAR_FORMAT
    if stream is None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        return tqdm(iterable, **settings, **options)
    from tqdm import tqdm  # type: ignore[import-untyped]

    columns = int(os.environ.get(PROGRESS_COLUMNS, "100"))
    settings |= {"file": stream, "position": 0, "mininterval": REDRAW_SECONDS, "ncols": columns}
    return tqdm(iterable, **settings, **options)


def progress(iterable: Iterable[_T], description: str, *, total: float | None = None, unit: str = "it") -> Iterable[_T]:
    """``iterable`` with a :func:`progress_bar` that advances with each item and clears when the loop ends.

    Library loops run many times in a stage (each split, each model): only the one running is shown.

    >>> chunks = [image for image in progress(batches(), "rendering train", total=n_batches)]   # doctest: +SKIP
    """
    bar: Iterable[_T] = progress_bar(iterable, description, total=total, unit=unit, leave=False)
    return bar


__all__ = [
    "BAR_FORMAT",
    "PROGRESS_COLUMNS",
    "PROGRESS_FILE",
    "PROGRESS_LABEL",
    "REDRAW_SECONDS",
    "describe",
    "progress",
    "progress_bar",
    "side_channel",
]
