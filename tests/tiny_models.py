"""Small, complete, untrained models the tests share (no training, seconds to build)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sematlas.core.grid import Grid
from sematlas.core.metadata import MetadataEncoder
from sematlas.inference.atlas import AtlasModel
from sematlas.models import ModelConfig
from sematlas.training.module import AtlasModule

CATEGORIES = ["emotion", "pain", "working_memory", "other"]


def tiny_atlas(variant: str, seed: int, aleatoric: bool = False) -> AtlasModel:
    """An untrained but complete model: random weights, a fitted metadata encoder, a payload."""
    torch.manual_seed(seed)
    studies = pd.DataFrame(
        {
            "task_category": CATEGORIES * 3,
            "year": np.arange(2000, 2012),
            "n_peaks": np.arange(5, 17),
            "space": "MNI",
            "sample_size": [np.nan, 20.0, 30.0] * 4,
        }
    )
    encoder = MetadataEncoder(CATEGORIES, [1997, 2005, 2018]).fit(studies)
    config = ModelConfig(
        variant=variant,
        z_dim=4,
        base_channels=4,
        growth_rate=4,
        hidden_dim=8,
        cond_dim=encoder.cond_dim,
        n_year_bins=2,
        aleatoric=aleatoric,
        sbd_channels=2,
    )
    module = AtlasModule(config, mask=Grid(4).mask(), dataset_size=100)
    payload = {"variant": variant, "voxel_size": 4, "profile": "test", "fwhms": [6.0, 12.0]}
    return AtlasModel(module, encoder, payload)
