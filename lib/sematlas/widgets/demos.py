"""The model demos: Latent Slider, Counterfactual Machine and Dual-View Confidence Explorer.

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
import numpy as np
import pandas as pd
import torch

from sematlas.core.metadata import YEAR_RANGE
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.pointcloud import PointCloudModel
from sematlas.models.registry import MAIN_VARIANT
from sematlas.training.ensemble import AtlasEnsemble, EnsemblePrediction
from sematlas.widgets.common import (
    ConditioningControls,
    Stopwatch,
    StudyCatalogue,
    StudyPicker,
    describe_source,
    load_atlas,
    measure_latency,
    profile_voxel_size,
    typical_sample_size,
)
from sematlas.widgets.display import (
    DIFFERENCE,
    UNCERTAINTY,
    LRUCache,
    MapRow,
    PointRow,
    SliceRenderer,
    download_link,
    nifti_bytes,
    peak_voxel,
)

#: Colours of observed peaks and of the point-cloud model's decoded points.
OBSERVED_COLOUR, DECODED_COLOUR = (20, 20, 20), (220, 40, 40)
UNCERTAINTY_LAYERS = ("aleatoric", "epistemic", "total")


def _key(request: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in request.items()))


def _describe(request: Mapping[str, Any]) -> str:
    size = request.get("sample_size")
    return f"task {request['task']}, {request['year']}, n={'?' if size is None else int(size)}"


class _Demo:
    """Shared parts: header, study picker, image, status line, caches, NIfTI export."""

    title = ""

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
        self.study_id = initial_study or catalogue.ids[0]
        self.picker = StudyPicker(catalogue, self.select_study, initial=self.study_id)
        self._holding = False

    # ------------------------------------------------------------------ state
    def select_study(self, study_id: str) -> None:
        """Show study ``study_id`` (its own metadata, controls reset)."""
        if self.picker.study.value != study_id:
            self.picker.pick(study_id)  # comes back here through the picker's observer
            return
        self.study_id = study_id
        self._on_study()
        self.redraw("study")

    def _on_study(self) -> None:
        """Reset controls to the new study (subclasses)."""

    # ------------------------------------------------------------------ drawing
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


class LatentSlider(_Demo):
    """Pick a study, move its latent code one dimension at a time, watch the decoded map.

    Parameters
    ----------
    atlas : AtlasModel
        A volumetric model (conditional models decode with the study's own metadata).
    catalogue : StudyCatalogue
    activity : sequence of float, optional
        Per latent dimension, how much it varies over studies (e.g. the variance of the
        posterior means); sliders are ordered by it. Default: dimension order.
    top_k : int, optional
        Show sliders for the ``top_k`` most active dimensions only (default: all).
    checkpoint : path, optional
        Where the model came from (shown in the header).
    initial_study : str, optional
    slider_range : float
        Sliders span ``[-slider_range, slider_range]`` prior standard deviations.
    """

    title = "Latent Slider"

    def __init__(
        self,
        atlas: AtlasModel,
        catalogue: StudyCatalogue,
        activity: Sequence[float] | None = None,
        top_k: int | None = None,
        checkpoint: Path | str | None = None,
        initial_study: str | None = None,
        slider_range: float = 4.0,
    ) -> None:
        super().__init__(
            catalogue, describe_source(atlas.payload, checkpoint, f"{self.title} · {atlas.variant}"), initial_study
        )
        self.atlas = atlas
        order = np.argsort(-np.asarray(activity)) if activity is not None else np.arange(atlas.z_dim)
        self.dims = [int(d) for d in order[: top_k or atlas.z_dim]]
        self.sliders = {
            d: w.FloatSlider(
                min=-slider_range,
                max=slider_range,
                step=0.05,
                description=f"z{d:02d}",
                continuous_update=False,
                readout_format=".2f",
            )
            for d in self.dims
        }
        for d, slider in self.sliders.items():
            slider.observe(lambda _, d=d: self.redraw(f"z{d:02d}"), names="value")
        self.reset_button = w.Button(description="Reset", icon="undo")
        self.reset_button.on_click(lambda _: self.reset())
        shown = "all" if len(self.dims) == atlas.z_dim else f"the {len(self.dims)} most active of"
        self._on_study()
        self.redraw("study")
        self.widget = w.VBox(
            [
                self.header,
                self.picker.widget,
                w.HBox(
                    [
                        w.VBox(
                            [w.HTML(f"<small>{shown} {atlas.z_dim} latent dimensions</small>")]
                            + list(self.sliders.values())
                            + [w.HBox([self.reset_button, self.export_button]), self.download]
                        ),
                        self.image,
                    ]
                ),
                self.status,
            ]
        )

    @classmethod
    def from_profile(cls, profile: str, variant: str = MAIN_VARIANT, top_k: int | None = 8) -> LatentSlider:
        """The demo on the profile's trained ``variant``, sliders ordered by the variance of its study latents."""
        atlas, checkpoint = load_atlas(profile, variant)
        latents_path = ProfilePaths.for_profile(profile).results / variant / "latents.parquet"
        activity = None
        if latents_path.is_file():
            latents = pd.read_parquet(latents_path)
            activity = latents[[f"z_{d:02d}" for d in range(atlas.z_dim)]].var().to_numpy()
        return cls(atlas, StudyCatalogue.from_profile(profile), activity=activity, top_k=top_k, checkpoint=checkpoint)

    # ------------------------------------------------------------------ state
    @property
    def request(self) -> dict[str, Any]:
        return self.catalogue.request(self.study_id)

    @property
    def study_code(self) -> torch.Tensor:
        """The study's posterior mean, shape ``(z_dim,)``."""
        return self.cache.get(
            ("code", self.study_id),
            lambda: self.atlas.encode(self.catalogue.render(self.study_id), self.request)[0],
        )

    @property
    def code(self) -> torch.Tensor:
        """The study's code with the moved sliders' values, shape ``(z_dim,)`` (exactly the study's after a reset)."""
        z = self.study_code.clone()
        for d, value in self.moved.items():
            z[d] = value
        return z

    def _decode(self, z: torch.Tensor) -> np.ndarray:
        key = ("map", self.study_id, tuple(np.round(z.numpy().astype(np.float64), 6)))
        return self.cache.get(key, lambda: self.atlas.decode(z[None], self.request)[0].numpy())

    @property
    def original(self) -> np.ndarray:
        """The decoded study code, ``(C, D, H, W)``."""
        return self._decode(self.study_code)

    @property
    def decoded(self) -> np.ndarray:
        """The decoded current code, ``(C, D, H, W)``."""
        return self._decode(self.code)

    def set_latent(self, dim: int, value: float) -> None:
        """Move the slider of latent dimension ``dim`` (one of :attr:`dims`)."""
        if dim not in self.sliders:
            raise KeyError(f"latent dimension {dim} has no slider; shown: {self.dims}")
        self.sliders[dim].value = value

    def reset(self) -> None:
        """Every slider back to the study's own code."""
        self._on_study()
        self.redraw("reset")

    def _on_study(self) -> None:
        code = self.study_code
        self._holding = True
        try:
            for d, slider in self.sliders.items():
                slider.value = min(max(float(code[d]), slider.min), slider.max)
        finally:
            self._holding = False
        # Slider steps and limits round the code: a slider counts as moved only once it leaves this value.
        self._rest = self._slider_values()

    def _slider_values(self) -> dict[int, float]:
        return {d: float(s.value) for d, s in self.sliders.items()}

    @property
    def moved(self) -> dict[int, float]:
        """The sliders moved off the study's code: dimension -> value."""
        return {d: v for d, v in self._slider_values().items() if v != self._rest[d]}

    # ------------------------------------------------------------------ drawing
    def _cut(self) -> tuple[int, int, int]:
        return peak_voxel(self.original[-1])

    def _rows(self) -> list[MapRow | PointRow]:
        study = self.cache.get(("input", self.study_id), lambda: self.catalogue.render(self.study_id)[0].numpy())
        current = self.decoded
        moved = ", ".join(f"z{d:02d}={v:+.2f}" for d, v in self.moved.items()) or "the study's code"
        return [
            MapRow(study[-1], f"study {self.study_id}: rendered peaks"),
            MapRow(current[-1], f"decoded ({moved[:60]})"),
            MapRow(current[-1] - self.original[-1], "decoded minus the study's own decoding", DIFFERENCE),
        ]

    def export_image(self) -> nib.Nifti1Image:
        return self.atlas.to_nifti(self.decoded)

    def latency(self, repeats: int = 10) -> pd.DataFrame:
        """:func:`~sematlas.widgets.common.measure_latency` of the first three sliders and the study menu."""
        values = np.linspace(-3.0, 3.0, repeats + 1).round(2).tolist()
        changes = {f"slider z{d:02d}": (self.sliders[d], values) for d in self.dims[:3]}
        changes["study"] = (self.picker.study, [v for _, v in self.picker.study.options[1 : repeats + 1]])
        return measure_latency(changes, repeats)


class CounterfactualMachine(_Demo):
    """Keep a study's latent code, change its conditioning, compare the maps.

    Parameters
    ----------
    atlas : AtlasModel
        A conditional model (``cbvae``).
    catalogue : StudyCatalogue
    checkpoint : path, optional
        Where the model came from (shown in the header).
    initial_study : str, optional
        Default: the first working-memory study, else the first study.

    Raises
    ------
    ValueError
        An unconditional model: it ignores the conditioning, so there is no counterfactual.
    """

    title = "Counterfactual Machine"

    def __init__(
        self,
        atlas: AtlasModel,
        catalogue: StudyCatalogue,
        checkpoint: Path | str | None = None,
        initial_study: str | None = None,
    ) -> None:
        if not atlas.is_conditional:
            raise ValueError(f"the {self.title} needs a conditional model (cbvae), not '{atlas.variant}'")
        if initial_study is None:
            wm = catalogue.search(task="working_memory", limit=1)
            initial_study = wm.index[0] if len(wm) else catalogue.ids[0]
        super().__init__(
            catalogue, describe_source(atlas.payload, checkpoint, f"{self.title} · {atlas.variant}"), initial_study
        )
        self.atlas = atlas
        self.controls = ConditioningControls(atlas.encoder.categories, self.redraw, typical_sample_size(atlas.encoder))
        self.reset_button = w.Button(description="Reset to the study", icon="undo")
        self.reset_button.on_click(lambda _: self.reset())
        self._on_study()
        self.redraw("study")
        self.widget = w.VBox(
            [
                self.header,
                self.picker.widget,
                w.HBox(
                    [
                        w.VBox(
                            [
                                w.HTML("<b>Counterfactual conditioning</b>"),
                                self.controls.widget,
                                w.HBox([self.reset_button, self.export_button]),
                                self.download,
                            ]
                        ),
                        self.image,
                    ]
                ),
                self.status,
            ]
        )

    @classmethod
    def from_profile(cls, profile: str, variant: str = MAIN_VARIANT) -> CounterfactualMachine:
        """The demo on the profile's trained conditional model."""
        atlas, checkpoint = load_atlas(profile, variant)
        return cls(atlas, StudyCatalogue.from_profile(profile), checkpoint=checkpoint)

    # ------------------------------------------------------------------ state
    @property
    def study_request(self) -> dict[str, Any]:
        """The study's own metadata."""
        return self.catalogue.request(self.study_id)

    @property
    def counterfactual_request(self) -> dict[str, Any]:
        """The study's metadata with the controls' task, year and sample size."""
        return {**self.study_request, **self.controls.request}

    @property
    def code(self) -> torch.Tensor:
        """The study's posterior mean under its own metadata, shape ``(1, z_dim)``."""
        return self.cache.get(
            ("code", self.study_id),
            lambda: self.atlas.encode(self.catalogue.render(self.study_id), self.study_request),
        )

    def _decode(self, request: Mapping[str, Any]) -> np.ndarray:
        return self.cache.get(
            ("map", self.study_id, _key(request)), lambda: self.atlas.decode(self.code, request)[0].numpy()
        )

    @property
    def original(self) -> np.ndarray:
        """The study's code decoded with its own metadata, ``(C, D, H, W)``."""
        return self._decode(self.study_request)

    @property
    def counterfactual(self) -> np.ndarray:
        """The study's code decoded with the controls' metadata, ``(C, D, H, W)``."""
        return self._decode(self.counterfactual_request)

    @property
    def difference(self) -> np.ndarray:
        """``counterfactual - original``, ``(C, D, H, W)``."""
        return self.counterfactual - self.original

    def set_task(self, task: str) -> None:
        self.controls.task.value = task

    def set_year(self, year: int) -> None:
        self.controls.year.value = year

    def set_sample_size(self, sample_size: int | None) -> None:
        """A number of participants, or ``None`` for unknown (the model imputes it)."""
        if sample_size is None:
            self.controls.unknown.value = True
        else:
            self.controls.sample_size.value = sample_size

    def reset(self) -> None:
        """The controls back to the study's own metadata."""
        self._on_study()
        self.redraw("reset")

    def _on_study(self) -> None:
        self.controls.show(self.study_request)

    # ------------------------------------------------------------------ drawing
    def _cut(self) -> tuple[int, int, int]:
        return peak_voxel(self.original[-1])

    def _rows(self) -> list[MapRow | PointRow]:
        original, counterfactual = self.original[-1], self.counterfactual[-1]
        limit = float(max(np.abs(original).max(), np.abs(counterfactual).max()))
        difference = counterfactual - original
        return [
            MapRow(original, f"original: {_describe(self.study_request)}", limit=limit),
            MapRow(counterfactual, f"counterfactual: {_describe(self.counterfactual_request)}", limit=limit),
            MapRow(difference, f"counterfactual - original (max |diff| {np.abs(difference).max():.3g})", DIFFERENCE),
        ]

    def export_image(self) -> nib.Nifti1Image:
        return self.atlas.to_nifti(self.counterfactual)

    def _export_name(self) -> str:
        r = self.controls.request
        return f"counterfactual_{self.study_id}_{r['task']}_{r['year']}.nii.gz"

    def latency(self, repeats: int = 10) -> pd.DataFrame:
        """:func:`~sematlas.widgets.common.measure_latency` of the task menu and the year and sample-size sliders."""
        c = self.controls
        return measure_latency(
            {
                "task": (c.task, list(c.task.options)),
                "year": (c.year, list(range(YEAR_RANGE[0], YEAR_RANGE[1] + 1))),
                "sample_size": (c.sample_size, list(range(10, 10 + 7 * (repeats + 1), 7))),
            },
            repeats,
        )


class ConfidenceExplorer(_Demo):
    """The ensemble's mean map and uncertainty beside the point-cloud model's peaks, for one study and conditioning.

    Parameters
    ----------
    ensemble : AtlasEnsemble
        Members with aleatoric decoders (stage 04).
    catalogue : StudyCatalogue
    pointcloud : PointCloudModel, optional
        The point-cloud C-VAE (stage 03); without it the peaks row shows the study's peaks only.
    pointcloud_codes : DataFrame, optional
        ``id`` and ``z_00`` ... of the point-cloud model's study latents; a study without
        one decodes the prior mean.
    checkpoint : path, optional
        Where the ensemble came from (shown in the header).
    initial_study : str, optional
    """

    title = "Dual-View Confidence Explorer"

    def __init__(
        self,
        ensemble: AtlasEnsemble,
        catalogue: StudyCatalogue,
        pointcloud: PointCloudModel | None = None,
        pointcloud_codes: pd.DataFrame | None = None,
        checkpoint: Path | str | None = None,
        initial_study: str | None = None,
    ) -> None:
        first = ensemble.members[0]
        what = f"{self.title} · ensemble of {ensemble.n_passes} passes ({first.variant})"
        super().__init__(catalogue, describe_source(first.payload, checkpoint, what), initial_study)
        self.ensemble = ensemble
        self.pointcloud = pointcloud
        self.pointcloud_codes = {}
        if pointcloud_codes is not None:
            columns = [c for c in pointcloud_codes.columns if c.startswith("z_")]
            self.pointcloud_codes = dict(
                zip(pointcloud_codes["id"].astype(str), pointcloud_codes[columns].to_numpy(np.float32))
            )
        self.controls = ConditioningControls(first.encoder.categories, self.redraw, typical_sample_size(first.encoder))
        self.layer = w.ToggleButtons(options=UNCERTAINTY_LAYERS, value="epistemic", description="Uncertainty")
        self.threshold = w.FloatSlider(
            value=50.0, min=0.0, max=99.0, step=1.0, description="Show sd above percentile", continuous_update=False
        )
        self.threshold.style.description_width = "initial"
        self.layer.observe(lambda _: self.redraw("layer"), names="value")
        self.threshold.observe(lambda _: self.redraw("threshold"), names="value")
        self.show_3d = w.Checkbox(description="interactive 3-D view of the peaks", indent=False)
        self.view_3d = w.HTML()
        self.show_3d.observe(lambda _: self._update_3d(), names="value")
        self.reset_button = w.Button(description="Reset to the study", icon="undo")
        self.reset_button.on_click(lambda _: self.reset())
        self._on_study()
        self.redraw("study")
        self.widget = w.VBox(
            [
                self.header,
                self.picker.widget,
                w.HBox(
                    [
                        w.VBox(
                            [
                                self.controls.widget,
                                self.layer,
                                self.threshold,
                                w.HBox([self.reset_button, self.export_button]),
                                self.download,
                                self.show_3d,
                            ]
                        ),
                        self.image,
                    ]
                ),
                self.status,
                self.view_3d,
            ]
        )

    @classmethod
    def from_profile(cls, profile: str, method: str = "snapshot") -> ConfidenceExplorer:
        """The demo on the profile's stage-04 ensemble (``snapshot`` members) and stage-03 point-cloud model."""
        paths = ProfilePaths.for_profile(profile)
        source = paths.models / "ensemble" / method
        if not source.is_dir():
            raise FileNotFoundError(
                f"the Confidence Explorer shows the stage-04 '{method}' ensemble, and {source} does not exist yet: "
                f"run ./run_all.sh {profile} --only 04"
            )
        ensemble = AtlasEnsemble.load(source, voxel_size=profile_voxel_size(profile))
        pointcloud_checkpoint = paths.models / "pointcloud" / "checkpoints" / "best.ckpt"
        pointcloud = PointCloudModel.load(pointcloud_checkpoint) if pointcloud_checkpoint.is_file() else None
        codes_path = paths.results / "pointcloud" / "latents.parquet"
        codes = pd.read_parquet(codes_path) if codes_path.is_file() else None
        return cls(ensemble, StudyCatalogue.from_profile(profile), pointcloud, codes, checkpoint=source)

    # ------------------------------------------------------------------ state
    @property
    def study_request(self) -> dict[str, Any]:
        return self.catalogue.request(self.study_id)

    @property
    def request(self) -> dict[str, Any]:
        """The study's metadata with the controls' task, year and sample size."""
        return {**self.study_request, **self.controls.request}

    @property
    def prediction(self) -> EnsemblePrediction:
        """Each member encodes the study under its own metadata and decodes under :attr:`request`."""
        codes = self.cache.get(
            ("codes", self.study_id),
            lambda: self.ensemble.encode(self.catalogue.render(self.study_id), self.study_request),
        )
        request = self.request
        return self.cache.get(("moments", self.study_id, _key(request)), lambda: self.ensemble.decode(codes, request))

    def layer_sd(self, layer: str | None = None) -> np.ndarray:
        """Predictive sd of an uncertainty layer (``aleatoric``, ``epistemic`` or ``total``), ``(D, H, W)``."""
        layer = layer or self.layer.value
        p = self.prediction
        variance = {"aleatoric": p.aleatoric, "epistemic": p.epistemic, "total": p.variance}[layer]
        return variance[0, -1].clamp_min(0).sqrt().numpy()

    @property
    def threshold_value(self) -> float:
        """The sd at the threshold percentile, over the in-brain voxels of the current layer."""
        sd = self.layer_sd()
        return float(np.percentile(sd[self.catalogue.grid.mask()], self.threshold.value))

    @property
    def uncertainty_mask(self) -> np.ndarray:
        """Voxels whose sd in the current layer exceeds :attr:`threshold_value` (the ones drawn), ``(D, H, W)``."""
        return (self.layer_sd() > self.threshold_value) & self.catalogue.grid.mask()

    @property
    def points(self) -> np.ndarray | None:
        """The point-cloud model's peaks for the study's code and :attr:`request`, ``(n_points, 3)`` mm."""
        model = self.pointcloud
        if model is None:
            return None
        code = self.pointcloud_codes.get(self.study_id)
        z = torch.zeros(1, model.z_dim) if code is None else torch.as_tensor(code.copy())[None]
        request = self.request
        return self.cache.get(("points", self.study_id, _key(request)), lambda: model.decode(z, request)[0].numpy())

    def set_task(self, task: str) -> None:
        self.controls.task.value = task

    def set_year(self, year: int) -> None:
        self.controls.year.value = year

    def set_layer(self, layer: str) -> None:
        self.layer.value = layer

    def set_threshold(self, percentile: float) -> None:
        self.threshold.value = percentile

    def reset(self) -> None:
        self._on_study()
        self.redraw("reset")

    def _on_study(self) -> None:
        self.controls.show(self.study_request)

    # ------------------------------------------------------------------ drawing
    def _cut(self) -> tuple[int, int, int]:
        return peak_voxel(self.prediction.mean[0, -1].numpy())

    def _rows(self) -> list[MapRow | PointRow]:
        mean = self.prediction.mean[0, -1].numpy()
        sd, threshold = self.layer_sd(), self.threshold_value
        sets: list[tuple[str, np.ndarray, tuple[int, int, int]]] = [
            ("observed peaks", self.catalogue.peaks_mm(self.study_id), OBSERVED_COLOUR)
        ]
        points = self.points
        if points is not None:
            sets.append(("point-cloud model", points, DECODED_COLOUR))
        source = "point-cloud model" if points is not None else "no point-cloud model loaded"
        return [
            MapRow(mean, f"ensemble mean: {_describe(self.request)}"),
            MapRow(
                sd,
                f"{self.layer.value} sd > {threshold:.3g} (percentile {self.threshold.value:.0f})",
                UNCERTAINTY,
                threshold=threshold,
            ),
            PointRow(sets, f"peaks: the study's (black) and the {source}'s (red)"),
        ]

    def redraw(self, control: str = "") -> None:
        super().redraw(control)
        if self.show_3d.value:
            self._update_3d()

    def _update_3d(self) -> None:
        from sematlas.evaluation.pointcloud import view_points_3d

        if not self.show_3d.value:
            self.view_3d.value = ""
            return
        sets = {"observed peaks": self.catalogue.peaks_mm(self.study_id)}
        if self.points is not None:
            sets["point-cloud model"] = self.points
        self.view_3d.value = view_points_3d(sets).get_iframe(width=720, height=480)

    def export_image(self) -> nib.Nifti1Image:
        return self.ensemble.to_nifti(self.prediction.mean[0])

    def latency(self, repeats: int = 10) -> pd.DataFrame:
        """:func:`~sematlas.widgets.common.measure_latency` of the task menu, year, layer and threshold."""
        c = self.controls
        return measure_latency(
            {
                "task": (c.task, list(c.task.options)),
                "year": (c.year, list(range(YEAR_RANGE[0], YEAR_RANGE[1] + 1))),
                "layer": (self.layer, list(UNCERTAINTY_LAYERS) * repeats),
                "threshold": (self.threshold, np.linspace(5.0, 95.0, repeats + 1).round().tolist()),
            },
            repeats,
        )
