"""The parts every model demo shares (:class:`Demo`).

Each demo holds its models and a :class:`~sematlas.widgets.common.StudyCatalogue`,
builds its ipywidgets once (``.widget``), and redraws one PNG (the fast
:class:`~sematlas.widgets.display.SliceRenderer`) when a control changes. Decoded
maps are cached by request, so a redraw decodes only what changed. The state
methods (``select_study``, ``set_task``, ``reset``...) set the same controls a
user does, so tests drive exactly the code path of the browser.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as w
import nibabel as nib

from sematlas.core.metadata import MetadataEncoder
from sematlas.widgets.common import ConditioningControls, Stopwatch, StudyCatalogue, StudyPicker, typical_sample_size
from sematlas.widgets.display import (
    LRUCache,
    MapRow,
    PointRow,
    SliceRenderer,
    download_link,
    nifti_bytes,
)


def request_key(request: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable cache key of a request (its items in name order)."""
    return tuple(sorted((k, v) for k, v in request.items()))


def describe_request(request: Mapping[str, Any]) -> str:
    """A request in a few words for a panel title: task, year and sample size (``?`` when unknown)."""
    size = request.get("sample_size")
    return f"task {request['task']}, {request['year']}, n={'?' if size is None else int(size)}"


class Demo:
    """What every demo shares: header, study picker, image, status line, caches, NIfTI export.

    Subclasses draw their rows (``_rows``), pick the slices' cut (``_cut``), set their
    controls to a study (``_on_study``) and say what is exported (:meth:`export_image`).
    """

    title = ""
    reset_label = "Reset to the study"

    def __init__(self, catalogue: StudyCatalogue, header: str, initial_study: str | None) -> None:
        self.catalogue = catalogue
        self.renderer = SliceRenderer(catalogue.grid)
        self.cache = LRUCache()
        self.stopwatch = Stopwatch()
        self.header = w.HTML(header)
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.image.add_class("sematlas-image")
        self.status = w.HTML()
        self.download = w.HTML()
        self.export_button = w.Button(description="Export NIfTI", icon="download")
        self.export_button.on_click(lambda _: self._offer_download())
        self.reset_button = w.Button(description=self.reset_label, icon="undo")
        self.reset_button.on_click(lambda _: self.reset())
        self.study_id = initial_study or catalogue.ids[0]
        self.picker = StudyPicker(catalogue, self.select_study, initial=self.study_id)
        self._holding = False

    # ------------------------------------------------------------------ state
    @property
    def study_request(self) -> dict[str, Any]:
        """The study's own metadata."""
        return self.catalogue.request(self.study_id)

    def select_study(self, study_id: str) -> None:
        """Show study ``study_id`` (its own metadata, controls reset)."""
        if self.picker.study.value != study_id:
            self.picker.pick(study_id)  # comes back here through the picker's observer
            return
        self.study_id = study_id
        self._on_study()
        self.redraw("study")

    def reset(self) -> None:
        """The controls back to the study's own (code, metadata)."""
        self._on_study()
        self.redraw("reset")

    def _on_study(self) -> None:
        """Reset controls to the new study (subclasses)."""

    # ------------------------------------------------------------------ drawing
    def _layout(
        self, controls: Sequence[w.Widget], after_buttons: Sequence[w.Widget] = (), below: Sequence[w.Widget] = ()
    ) -> w.VBox:
        """Header and study picker; the controls, the reset and export buttons beside the image; the status line."""
        panel = w.VBox([*controls, w.HBox([self.reset_button, self.export_button]), self.download, *after_buttons])
        return w.VBox([self.header, self.picker.widget, w.HBox([panel, self.image]), self.status, *below])

    def _rows(self) -> list[MapRow | PointRow]:
        raise NotImplementedError

    def _cut(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def redraw(self, control: str = "") -> None:
        """Decode what changed and draw the image; the status line reports the time it took."""
        if self._holding:
            return
        with self.stopwatch:
            self.image.value = self.renderer.render(self._rows(), cut=self._cut())
        self.status.value = (
            f"<small>{html.escape(self.catalogue.label(self.study_id))} · redraw"
            f"{' after ' + html.escape(control) if control else ''}: {self.stopwatch.last_ms:.0f} ms</small>"
        )

    # ------------------------------------------------------------------ export
    def export_image(self) -> nib.Nifti1Image:
        """The map being explored as a NIfTI image (subclasses)."""
        raise NotImplementedError

    def export_nifti(self, path: str | Path) -> Path:
        """Write :meth:`export_image` to ``path`` (``.nii.gz``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.export_image().to_filename(path)
        return path

    def _export_name(self) -> str:
        return f"{type(self).__name__.lower()}_{self.study_id}.nii.gz"

    def _offer_download(self) -> None:
        data = nifti_bytes(self.export_image())
        self.download.value = download_link(data, self._export_name(), mime="application/gzip")


class ConditionedDemo(Demo):
    """A demo whose maps are decoded under a task, year and sample size the user sets (:attr:`controls`).

    Parameters
    ----------
    catalogue : StudyCatalogue
    header : str
    initial_study : str, optional
    encoder : MetadataEncoder
        The model's: its task categories fill the menu.
    """

    def __init__(
        self, catalogue: StudyCatalogue, header: str, initial_study: str | None, encoder: MetadataEncoder
    ) -> None:
        super().__init__(catalogue, header, initial_study)
        self.controls = ConditioningControls(encoder.categories, self.redraw, typical_sample_size(encoder))

    @property
    def conditioned_request(self) -> dict[str, Any]:
        """The study's metadata with the controls' task, year and sample size."""
        return {**self.study_request, **self.controls.request}

    def set_task(self, task: str) -> None:
        self.controls.task.value = task

    def set_year(self, year: int) -> None:
        self.controls.year.value = year

    def _on_study(self) -> None:
        self.controls.show(self.study_request)
