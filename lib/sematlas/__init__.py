"""sematlas: a generative, hierarchical atlas of human brain function.

The notebooks of the compendium narrate; this package computes. Modules:

- :mod:`sematlas.params`   layered, validated YAML parameters
- :mod:`sematlas.paths`    where every stage reads and writes
- :mod:`sematlas.io`       atomic writes and checksums
- :mod:`sematlas.fetch`    Neurosynth v7 through NiMARE, offline mirrors, SHA-256
- :mod:`sematlas.curation` deduplication, coordinate validation, study table, splits
- :mod:`sematlas.samplesize` sparse sample sizes from NiMARE's NeuroStore studyset
- :mod:`sematlas.grid`     MNI152 grids and brain masks per resolution
- :mod:`sematlas.render`   fast peak-to-density rendering
- :mod:`sematlas.datamodule` the LightningDataModule over rendered maps
- :mod:`sematlas.atlas`    inference on a trained model (:class:`AtlasModel`)
- :mod:`sematlas.ensemble` ensembles of them with uncertainty maps (:class:`AtlasEnsemble`)
- :mod:`sematlas.uncertainty` calibration (ECE, temperature) and OOD detection

``sematlas.AtlasModel`` and ``sematlas.AtlasEnsemble`` are imported on first
use, so ``import sematlas.params`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sematlas.atlas import AtlasModel
    from sematlas.ensemble import AtlasEnsemble

__version__ = "0.1.0"

_LAZY = {"AtlasModel": "sematlas.atlas", "AtlasEnsemble": "sematlas.ensemble"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sematlas' has no attribute {name!r}")


__all__ = ["AtlasEnsemble", "AtlasModel", "__version__"]
