"""What the demos share: the study catalogue, the study picker, the conditioning controls, model loading and timing."""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
import torch

from sematlas.core.grid import Grid
from sematlas.core.metadata import YEAR_RANGE
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.render import PeakRenderer
from sematlas.inference.atlas import AtlasModel
from sematlas.models.registry import MAIN_VARIANT

#: Range of the sample-size slider (participants).
SAMPLE_SIZE_RANGE = (5, 500)
#: Studies listed by the picker at once (the search narrows them down).
PICKER_LIMIT = 300
#: The redraw budget of a control change at 4 mm on a 2-core CPU (milliseconds).
REDRAW_BUDGET_MS = 200.0


class StudyCatalogue:
    """The studies a demo can pick from: metadata, peaks in MNI mm, and their rendered maps.

    Parameters
    ----------
    studies : DataFrame
        One row per study: ``id``, ``title``, ``year``, ``task_category``, ``n_peaks``,
        ``space``, ``sample_size`` (NaN = unknown); optionally ``split``.
    peaks : DataFrame
        ``id``, ``x``, ``y``, ``z`` (MNI mm) of every peak of those studies.
    renderer : PeakRenderer
        Renders a study's map as the models saw it (kernels and grid of the profile).
    channels : sequence of int, optional
        Kernels to render (default all; the widest only for ``kernel_choice: random`` profiles).
    """

    def __init__(
        self,
        studies: pd.DataFrame,
        peaks: pd.DataFrame,
        renderer: PeakRenderer,
        channels: Sequence[int] | None = None,
    ) -> None:
        self.studies = studies.assign(id=studies["id"].astype(str)).set_index("id", drop=False)
        ids = peaks["id"].astype(str)
        self._peaks = {
            key: group[["x", "y", "z"]].to_numpy(dtype=float) for key, group in peaks.groupby(ids, sort=False)
        }
        self.renderer = renderer
        self.channels = channels

    @classmethod
    def from_profile(cls, profile: str) -> StudyCatalogue:
        """The studies of a profile as its models were trained on them (the subset when ``training.use_subset``)."""
        params = load_params(profile)
        paths = ProfilePaths.for_profile(profile)
        studies = pd.read_parquet(paths.processed / "studies.parquet")
        if params["training"]["use_subset"]:
            studies = studies.loc[studies["in_subset"]].assign(split=lambda s: s["subset_split"])
        peaks = pd.read_parquet(paths.processed / "peaks.parquet", columns=["id", "x", "y", "z"])
        render = params["render"]
        renderer = PeakRenderer(Grid(int(render["voxel_size"])), fwhms=render["fwhms"], truncate=render["truncate"])
        channels = None if render["kernel_choice"] == "all" else [len(render["fwhms"]) - 1]
        return cls(studies, peaks.loc[peaks["id"].isin(studies["id"])], renderer, channels)

    @property
    def grid(self) -> Grid:
        return self.renderer.grid

    @property
    def ids(self) -> list[str]:
        return self.studies.index.tolist()

    def search(self, text: str = "", task: str | None = None, limit: int = PICKER_LIMIT) -> pd.DataFrame:
        """Studies whose title or id contains ``text`` (case-insensitive), of task category ``task`` if given."""
        keep = pd.Series(True, index=self.studies.index)
        if text:
            keep &= self.studies["title"].fillna("").str.contains(text, case=False, regex=False) | self.studies[
                "id"
            ].str.contains(text, regex=False)
        if task:
            keep &= self.studies["task_category"] == task
        return self.studies.loc[keep].head(limit)

    def label(self, study_id: str) -> str:
        """``id · year · task · title`` (title shortened) for menus and captions."""
        row = self.studies.loc[study_id]
        title = str(row["title"])
        title = title if len(title) <= 70 else title[:69] + "…"
        return f"{study_id} · {int(row['year'])} · {row['task_category']} · {title}"

    def request(self, study_id: str) -> dict[str, Any]:
        """The study's own metadata as a request for :meth:`sematlas.core.metadata.MetadataEncoder.request`."""
        row = self.studies.loc[study_id]
        sample_size = row.get("sample_size", np.nan)
        return {
            "task": str(row["task_category"]),
            "year": int(np.clip(int(row["year"]), *YEAR_RANGE)),
            "n_peaks": float(row["n_peaks"]),
            "space": str(row["space"]),
            "sample_size": None if pd.isna(sample_size) else float(sample_size),
        }

    def peaks_mm(self, study_id: str) -> np.ndarray:
        """The study's peaks, shape ``(n_peaks, 3)`` in MNI mm."""
        return self._peaks.get(study_id, np.zeros((0, 3)))

    def render(self, study_id: str) -> torch.Tensor:
        """The study's rendered map, shape ``(1, C, D, H, W)`` on the native grid."""
        xyz = self.peaks_mm(study_id)
        ijk = self.grid.mm_to_voxel(xyz)
        return self.renderer.render(ijk, np.zeros(len(ijk), dtype=np.int64), 1, channels=self.channels)


def load_atlas(profile: str, variant: str = MAIN_VARIANT) -> tuple[AtlasModel, Path]:
    """The profile's trained model of ``variant`` and its checkpoint path.

    Raises
    ------
    FileNotFoundError
        The profile has not trained the variant yet (naming the command that does).
    """
    paths = ProfilePaths.for_profile(profile)
    checkpoint = paths.models / variant / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{checkpoint} does not exist: train the '{profile}' profile first (./run_all.sh {profile})"
        )
    return AtlasModel.load(checkpoint, voxel_size=profile_voxel_size(profile)), checkpoint


def profile_voxel_size(profile: str) -> int:
    """The profile's grid (``render.voxel_size``, mm)."""
    return int(load_params(profile)["render"]["voxel_size"])


def describe_source(payload: Mapping[str, Any], checkpoint: Path | str | None, what: str) -> str:
    """The header every demo shows: which model, trained on which profile, from which file."""
    where = "built in memory (not from a checkpoint)"
    if checkpoint is not None:
        path = Path(checkpoint)
        try:
            path = path.relative_to(ProfilePaths.for_profile(str(payload.get("profile", ""))).root)
        except (ValueError, FileNotFoundError):
            pass
        where = f"<code>{html.escape(str(path))}</code>"
    return (
        f"<b>{html.escape(what)}</b>: profile <b>{html.escape(str(payload.get('profile', '?')))}</b>, "
        f"{int(payload.get('voxel_size', 0))} mm grid, loaded from {where}"
    )


class StudyPicker:
    """Search box, task filter and study menu; calls ``on_pick(study_id)`` when the pick changes.

    Parameters
    ----------
    catalogue : StudyCatalogue
    on_pick : callable
    initial : str, optional
        The first study shown (default: the first of the catalogue).
    """

    def __init__(self, catalogue: StudyCatalogue, on_pick: Callable[[str], None], initial: str | None = None) -> None:
        self.catalogue = catalogue
        categories = sorted(catalogue.studies["task_category"].unique())
        self.search = w.Text(placeholder="title or id", description="Search", continuous_update=False)
        self.task = w.Dropdown(options=[("any task", "")] + [(c, c) for c in categories], description="Category")
        self.study = w.Dropdown(description="Study", layout=w.Layout(width="95%"))
        self.study.add_class("sematlas-study")
        self._on_pick = on_pick
        self._quiet = False
        self._refresh(initial or catalogue.ids[0])
        self.search.observe(lambda _: self._refresh(self.study.value), names="value")
        self.task.observe(lambda _: self._refresh(self.study.value), names="value")
        self.study.observe(self._picked, names="value")
        self.widget = w.VBox([w.HBox([self.search, self.task]), self.study])

    def _picked(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self._on_pick(change["new"])

    def _refresh(self, keep: str | None) -> None:
        """List the studies the filters match, keeping the current one (first) when they hide it."""
        found = self.catalogue.search(self.search.value, self.task.value or None)
        options = [(self.catalogue.label(i), i) for i in found.index]
        if keep is not None and keep in self.catalogue.studies.index and keep not in found.index:
            options.insert(0, (self.catalogue.label(keep), keep))
        self._quiet = True
        try:
            self.study.options = options
            self.study.value = keep
        finally:
            self._quiet = False

    def pick(self, study_id: str) -> None:
        """Show ``study_id`` (clearing the filters if they hide it)."""
        if study_id not in self.catalogue.studies.index:
            raise KeyError(f"unknown study id {study_id!r}")
        if study_id not in {value for _, value in self.study.options}:
            self.search.value, self.task.value = "", ""
        self.study.value = study_id


class ConditioningControls:
    """Task menu, publication-year slider and sample-size slider (with "unknown": the model imputes it).

    Parameters
    ----------
    categories : sequence of str
        The model's task categories.
    on_change : callable
        Called with the name of the control that changed.
    default_sample_size : int
        Where the slider sits while the sample size is unknown.
    """

    def __init__(
        self, categories: Sequence[str], on_change: Callable[[str], None], default_sample_size: int = 20
    ) -> None:
        self.task = w.Dropdown(options=list(categories), description="Task")
        self.task.add_class("sematlas-task")
        self.year = w.IntSlider(min=YEAR_RANGE[0], max=YEAR_RANGE[1], description="Year", continuous_update=False)
        self.sample_size = w.IntSlider(
            value=default_sample_size, min=SAMPLE_SIZE_RANGE[0], max=SAMPLE_SIZE_RANGE[1], description="Sample size"
        )
        self.sample_size.continuous_update = False
        self.unknown = w.Checkbox(description="sample size unknown (imputed)", indent=False)
        self.default_sample_size = default_sample_size
        self._on_change = on_change
        self._quiet = False
        for name in ("task", "year", "sample_size", "unknown"):
            getattr(self, name).observe(lambda _, name=name: self._changed(name), names="value")
        self.widget = w.VBox([self.task, self.year, w.HBox([self.sample_size, self.unknown])])

    def _changed(self, name: str) -> None:
        if self._quiet:
            return
        if name == "sample_size" and self.unknown.value:
            self._quiet = True
            self.unknown.value = False
            self._quiet = False
        self._on_change(name)

    @property
    def request(self) -> dict[str, Any]:
        """The conditioning as a metadata request (without the study's own peak count and space)."""
        return {
            "task": self.task.value,
            "year": int(self.year.value),
            "sample_size": None if self.unknown.value else float(self.sample_size.value),
        }

    def show(self, request: Mapping[str, Any]) -> None:
        """Set every control to ``request`` without calling ``on_change``."""
        self._quiet = True
        try:
            self.task.value = request["task"]
            self.year.value = int(request["year"])
            known = request.get("sample_size") is not None
            self.unknown.value = not known
            size = request["sample_size"] if known else self.default_sample_size
            self.sample_size.value = int(np.clip(round(float(size)), *SAMPLE_SIZE_RANGE))
        finally:
            self._quiet = False


def typical_sample_size(encoder: Any) -> int:
    """The training split's geometric-mean sample size (where the slider rests while the size is unknown)."""
    return int(np.clip(round(math.exp(encoder.stats["log_sample_size_mean"])), *SAMPLE_SIZE_RANGE))


def measure_latency(changes: Mapping[str, tuple[w.ValueWidget, Sequence[Any]]], repeats: int = 10) -> pd.DataFrame:
    """Time from a control change to the finished image.

    Parameters
    ----------
    changes : mapping
        Control name -> (widget, values to set in turn). A demo's observers redraw
        synchronously, so the time of ``widget.value = v`` is the redraw latency. Pass
        values the demo has not decoded yet (its caches would otherwise answer): each
        value is set once, at most ``repeats`` of them, and the widget goes back to its
        first value at the end (untimed).
    repeats : int

    Returns
    -------
    DataFrame
        One row per control: ``median_ms``, ``p95_ms``, ``max_ms``, ``n`` and ``within_budget``
        (p95 under :data:`REDRAW_BUDGET_MS`).
    """
    rows = []
    for name, (widget, values) in changes.items():
        start_value = widget.value
        times = []
        for value in [v for v in values if v != start_value][:repeats]:
            start = time.perf_counter()
            widget.value = value
            times.append((time.perf_counter() - start) * 1e3)
        widget.value = start_value
        p95 = float(np.percentile(times, 95))
        rows.append(
            {
                "control": name,
                "median_ms": statistics.median(times),
                "p95_ms": p95,
                "max_ms": max(times),
                "n": len(times),
                "within_budget": p95 <= REDRAW_BUDGET_MS,
            }
        )
    return pd.DataFrame(rows).set_index("control").round(1)


class Stopwatch:
    """Records how long each redraw took, for the status line and the benchmarks."""

    def __init__(self) -> None:
        self.last_ms = float("nan")
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.last_ms = (time.perf_counter() - self._start) * 1e3
