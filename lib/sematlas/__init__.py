"""sematlas: a generative, hierarchical atlas of human brain function.

The notebooks of the compendium narrate; this package computes. Subpackages, in
the order a study's data flows through them:

- :mod:`sematlas.core`        typed parameters, paths, atomic io, grids, metadata encoder, errors, logging
- :mod:`sematlas.data`        Neurosynth fetch, curation, sample sizes, renderer, DataModules
- :mod:`sematlas.models`      every network, each owning its objective; one registry
- :mod:`sematlas.training`    the one LightningModule, schedules, callbacks, run folders, ensembles
- :mod:`sematlas.inference`   :class:`AtlasModel`, :class:`AtlasEnsemble`, :class:`PointCloudModel`
- :mod:`sematlas.evaluation`  metrics, linear baselines, reconstruction, generative quality, probes, uncertainty
- :mod:`sematlas.analysis`    CCA, clustering, hierarchy, forecasting, ablations
- :mod:`sematlas.reporting`   plots, manuscript figures and variables
- :mod:`sematlas.release`     ONNX, NIfTI, tables, archive
- :mod:`sematlas.pipeline`    the stage registry and the command line
- :mod:`sematlas.widgets`     the four interactive demos

``sematlas.AtlasModel`` and ``sematlas.AtlasEnsemble`` are imported on first
use, so ``import sematlas.core.params`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sematlas.inference.atlas import AtlasModel
    from sematlas.inference.ensemble import AtlasEnsemble

__version__ = "0.1.0"

_LAZY = {"AtlasModel": "sematlas.inference.atlas", "AtlasEnsemble": "sematlas.inference.ensemble"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sematlas' has no attribute {name!r}")


__all__ = ["AtlasEnsemble", "AtlasModel", "__version__"]
