"""The Counterfactual Machine: a study moved to another task, year or sample size.

The study keeps what its code holds beyond its metadata, the residual
``eps = (z - mu(m)) / sigma(m)`` under the conditional prior, and takes the prior of the
new metadata: ``z' = mu(m') + sigma(m') * eps``, decoded with ``m'``
(:meth:`~sematlas.inference.atlas.AtlasModel.move_codes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as w
import nibabel as nib
import numpy as np
import pandas as pd
import torch

from sematlas.core.metadata import YEAR_RANGE
from sematlas.inference.atlas import AtlasModel
from sematlas.models.registry import MAIN_VARIANT
from sematlas.widgets.common import (
    StudyCatalogue,
    describe_source,
    load_atlas,
    measure_latency,
)
from sematlas.widgets.demo import ConditionedDemo, describe_request, request_key
from sematlas.widgets.display import (
    DIFFERENCE,
    MapRow,
    PointRow,
    peak_voxel,
)


class CounterfactualMachine(ConditionedDemo):
    """Keep a study's residual, change its conditioning, compare the maps.

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
        header = describe_source(atlas.payload, checkpoint, f"{self.title} · {atlas.variant}")
        super().__init__(catalogue, header, initial_study, atlas.encoder)
        self.atlas = atlas
        self._on_study()
        self.redraw("study")
        self.widget = self._layout([w.HTML("<b>Counterfactual conditioning</b>"), self.controls.widget])

    @classmethod
    def from_profile(cls, profile: str, variant: str = MAIN_VARIANT) -> CounterfactualMachine:
        """The demo on the profile's trained conditional model."""
        atlas, checkpoint = load_atlas(profile, variant)
        return cls(atlas, StudyCatalogue.from_profile(profile), checkpoint=checkpoint)

    # ------------------------------------------------------------------ state
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
        def moved() -> np.ndarray:
            code = self.atlas.move_codes(self.code, self.study_request, request)
            return self.atlas.decode(code, request)[0].numpy()

        return self.cache.get(("map", self.study_id, request_key(request)), moved)

    @property
    def original(self) -> np.ndarray:
        """The study's code decoded with its own metadata, ``(C, D, H, W)``."""
        return self._decode(self.study_request)

    @property
    def counterfactual(self) -> np.ndarray:
        """The study moved to the controls' metadata and decoded with it, ``(C, D, H, W)``."""
        return self._decode(self.counterfactual_request)

    @property
    def difference(self) -> np.ndarray:
        """``counterfactual - original``, ``(C, D, H, W)``."""
        return self.counterfactual - self.original

    def set_sample_size(self, sample_size: int | None) -> None:
        """A number of participants, or ``None`` for unknown (the model imputes it)."""
        if sample_size is None:
            self.controls.unknown.value = True
        else:
            self.controls.sample_size.value = sample_size

    # ------------------------------------------------------------------ drawing
    def _cut(self) -> tuple[int, int, int]:
        return peak_voxel(self.original[-1])

    def _rows(self) -> list[MapRow | PointRow]:
        original, counterfactual = self.original[-1], self.counterfactual[-1]
        limit = float(max(np.abs(original).max(), np.abs(counterfactual).max()))
        difference = counterfactual - original
        return [
            MapRow(original, f"original: {describe_request(self.study_request)}", limit=limit),
            MapRow(counterfactual, f"counterfactual: {describe_request(self.counterfactual_request)}", limit=limit),
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
