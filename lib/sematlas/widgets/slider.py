"""The Latent Slider: a study's latent code, one slider per (most active) dimension, and the decoded map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ipywidgets as w
import nibabel as nib
import numpy as np
import pandas as pd
import torch

from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.models.registry import MAIN_VARIANT
from sematlas.widgets.common import (
    StudyCatalogue,
    describe_source,
    load_atlas,
    measure_latency,
)
from sematlas.widgets.demo import Demo
from sematlas.widgets.display import (
    DIFFERENCE,
    MapRow,
    PointRow,
    peak_voxel,
)


class LatentSlider(Demo):
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
    reset_label = "Reset"

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
        shown = "all" if len(self.dims) == atlas.z_dim else f"the {len(self.dims)} most active of"
        self._on_study()
        self.redraw("study")
        self.widget = self._layout(
            [w.HTML(f"<small>{shown} {atlas.z_dim} latent dimensions</small>"), *self.sliders.values()]
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
    def study_code(self) -> torch.Tensor:
        """The study's posterior mean, shape ``(z_dim,)``."""
        return self.cache.get(
            ("code", self.study_id),
            lambda: self.atlas.encode(self.catalogue.render(self.study_id), self.study_request)[0],
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
        return self.cache.get(key, lambda: self.atlas.decode(z[None], self.study_request)[0].numpy())

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
