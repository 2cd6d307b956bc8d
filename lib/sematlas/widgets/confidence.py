"""The Dual-View Confidence Explorer: the ensemble's mean and uncertainty beside the point-cloud model's peaks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as w
import nibabel as nib
import numpy as np
import pandas as pd
import torch

from sematlas.core.metadata import YEAR_RANGE
from sematlas.core.paths import ProfilePaths
from sematlas.inference.ensemble import AtlasEnsemble, EnsemblePrediction
from sematlas.inference.pointcloud import PointCloudModel
from sematlas.widgets.common import (
    StudyCatalogue,
    describe_source,
    measure_latency,
    profile_voxel_size,
)
from sematlas.widgets.demo import ConditionedDemo, describe_request, request_key
from sematlas.widgets.display import (
    UNCERTAINTY,
    MapRow,
    PointRow,
    peak_voxel,
)

#: Colours of observed peaks and of the point-cloud model's decoded points.
OBSERVED_COLOUR, DECODED_COLOUR = (20, 20, 20), (220, 40, 40)
UNCERTAINTY_LAYERS = ("aleatoric", "epistemic", "total")


class ConfidenceExplorer(ConditionedDemo):
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
        super().__init__(catalogue, describe_source(first.payload, checkpoint, what), initial_study, first.encoder)
        self.ensemble = ensemble
        self.pointcloud = pointcloud
        self.pointcloud_codes = {}
        if pointcloud_codes is not None:
            columns = [c for c in pointcloud_codes.columns if c.startswith("z_")]
            self.pointcloud_codes = dict(
                zip(pointcloud_codes["id"].astype(str), pointcloud_codes[columns].to_numpy(np.float32))
            )
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
        self._on_study()
        self.redraw("study")
        self.widget = self._layout(
            [self.controls.widget, self.layer, self.threshold], after_buttons=[self.show_3d], below=[self.view_3d]
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
        return self.cache.get(
            ("moments", self.study_id, request_key(request)), lambda: self.ensemble.decode(codes, request)
        )

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
        return self.cache.get(
            ("points", self.study_id, request_key(request)), lambda: model.decode(z, request)[0].numpy()
        )

    def set_layer(self, layer: str) -> None:
        self.layer.value = layer

    def set_threshold(self, percentile: float) -> None:
        self.threshold.value = percentile

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
            MapRow(mean, f"ensemble mean: {describe_request(self.request)}"),
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
        from sematlas.reporting.pointcloud import view_points_3d

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
