"""Small, complete, untrained models the tests share (no training, seconds to build)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.metadata import MetadataEncoder
from sematlas.core.params import Params, TrainingParams, load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.models import ModelConfig, build_model, config_from_dict

CATEGORIES = ["emotion", "pain", "working_memory", "other"]

#: Width of ``meta["cond"]`` of the random batches the model tests use.
COND_DIM = 5

#: The fields a tiny model of each variant sets beside the shared ones.
_VARIANT_FIELDS: dict[str, dict[str, Any]] = {
    "cbvae": {"growth_rate": 4, "sbd_channels": 2},
    "tcvae_sbd": {"sbd_channels": 2},
    "hvae": {"top_dim": 2, "sbd_channels": 2},
}


def tiny_config(variant: str, **overrides: Any) -> ModelConfig:
    """A small model of ``variant`` on the 48^3 network grid (``overrides`` change or add fields)."""
    values = {"variant": variant, "base_channels": 4, "z_dim": 8, "cond_dim": COND_DIM, "hidden_dim": 16}
    return config_from_dict(values | _VARIANT_FIELDS.get(variant, {}) | overrides)


#: Plain objective settings for module tests: constant weights, no warm-up, unit term weights.
_PLAIN_OBJECTIVE: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "beta": 1.0,
    "beta_schedule": "constant",
    "beta_warmup_epochs": 0.0,
    "beta_cycle_epochs": 10.0,
    "beta_cycle_ratio": 0.5,
    "beta_tc_target": 6.0,
    "beta_tc_annealing_epochs": 0.0,
    "imputation_weight": 1.0,
    "year_weight": 1.0,
}


def tiny_training(**changes: Any) -> TrainingParams:
    """The ``ci`` profile's training section with plain objective settings (``changes`` on top)."""
    return replace(load_params("ci").training, **(_PLAIN_OBJECTIVE | changes))


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
            # Three topics, each category leaning on its own (as real abstracts do), "other" on none.
            **{f"topic_{t:02d}": [0.6 if k == t else 0.2 for k in range(len(CATEGORIES))] * 3 for t in range(3)},
        }
    )
    encoder = MetadataEncoder(CATEGORIES, [1997, 2005, 2018]).fit(studies)
    sizes = {"z_dim": 4, "hidden_dim": 8, "cond_dim": encoder.cond_dim, "n_year_bins": 2}
    network = build_model(tiny_config(variant, **sizes, **({"aleatoric": True} if aleatoric else {})))
    payload = {"variant": variant, "voxel_size": 4, "profile": "test", "fwhms": [6.0, 12.0]}
    return AtlasModel(network, encoder, payload)


#: The ``ci`` parameters shrunk further for training tests: the smallest models, one epoch, one prior sample.
_TINY_RUN: dict[str, Any] = {
    "model": {"z_dim": 4, "base_channels": 4, "growth_rate": 4, "hidden_dim": 16},
    "training": {"batch_size": 8, "max_epochs": 1},
    "evaluation": {"n_prior_samples": 1},
}


def tiny_project(processed: Path, root: Path, changes: dict[str, Any] | None = None) -> tuple[Params, ProfilePaths]:
    """Tiny ``ci`` parameters (``changes`` on top) and a project under ``root`` holding ``processed``."""
    params = override_params(load_params("ci"), _TINY_RUN)
    if changes:
        params = override_params(params, changes)
    paths = ProfilePaths("ci", root)
    shutil.copytree(processed, paths.processed)
    return params, paths
