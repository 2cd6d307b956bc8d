"""Layered, validated YAML parameters.

A profile's parameters are ``params/common.yaml`` overlaid by
``params/<profile>.yaml``. Profiles differ only in numbers, so both files are
checked against one schema (:data:`SCHEMA`): a key the schema does not know,
a key no file sets, or a value of the wrong type fails at load with an error
naming the key and the file, before any work is done. papermill itself only
warns on unknown parameters, which is why validation lives here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from sematlas.core.paths import project_root

PROFILES = ("ci", "quick", "cpu-full", "gpu")

Number = (int, float)
OptionalStr = (str, type(None))

#: The schema: nested mappings of key -> expected type(s). A ``dict`` value whose
#: keys are free (such as the task-category mapping) is declared as ``("mapping", T)``.
SCHEMA: dict[str, Any] = {
    "seed": int,
    "data": {
        "mirror": OptionalStr,
        "neurosynth_version": str,
        "vocab": str,
    },
    "curation": {
        "validation_voxel_size": int,
        "max_distance_to_mask_mm": Number,
        "min_peaks": int,
        "year_bins": int,
        "peak_count_bins": int,
        "split_fractions": list,
        "subset_size": int,
        "task_min_weight": Number,
        "task_categories": ("mapping", list),
    },
    "render": {
        "voxel_size": int,
        "fwhms": list,
        "truncate": Number,
        "flip_probability": Number,
        "kernel_choice": str,
    },
    # Architecture: the fields of sematlas.models.ModelConfig that are choices, not
    # properties of the data (channels, grid and metadata sizes come from the data).
    "model": {
        "variants": list,
        "z_dim": int,
        "base_channels": int,
        "dropout": Number,
        "gradient_checkpointing": bool,
        "growth_rate": int,
        "dense_layers": list,
        "dilations": list,
        "hidden_dim": int,
        "sbd_channels": (int, type(None)),
        "conditioning": str,
        "decoder": str,
        "imputation": bool,
    },
    "training": {
        "use_subset": bool,
        "batch_size": int,
        "max_epochs": int,
        "lr": Number,
        "weight_decay": Number,
        "beta": Number,
        "beta_schedule": str,
        "beta_warmup_epochs": Number,
        "beta_cycle_epochs": Number,
        "beta_cycle_ratio": Number,
        "beta_tc_target": Number,
        "beta_tc_annealing_epochs": Number,
        "imputation_weight": Number,
        "year_weight": Number,
        "grl_max_lambda": Number,
        "kl_controller_threshold": Number,
        "kl_controller_patience": int,
        "kl_controller_factor": Number,
        "recon_every_n_epochs": int,
        "num_recon_samples": int,
        "accelerator": str,
        "devices": int,
        "num_nodes": int,
        "strategy": str,
        "precision": str,
        "deterministic": bool,
        "num_threads": int,
        "wandb": bool,
    },
    "evaluation": {
        "n_prior_samples": int,
        "pca_max_train": int,
        "traversal_dims": int,
        "traversal_range": Number,
        "prd_features": int,
        "prd_k": int,
        "probe_folds": int,
        "probe_C": Number,
    },
    # Point-cloud C-VAE (stage 03, sematlas.models.pointcloud): cache, PointNet++ encoder, decoder,
    # objective, optimiser.
    # Validated further by sematlas.models.pointcloud.PointCloudConfig.
    "pointcloud": {
        "n_points": int,
        "centre_mm": list,
        "scale_mm": Number,
        "fourier_features": int,
        "fourier_sigma": Number,
        "sa_npoint": list,
        "sa_radius": list,
        "sa_nsample": list,
        "sa_channels": list,
        "global_channels": int,
        "decoder_hidden": list,
        "z_dim": int,
        "beta": Number,
        "beta_warmup_epochs": Number,
        "chamfer_weight": Number,
        "sinkhorn_weight": Number,
        "sinkhorn_blur": Number,
        "batch_size": int,
        "max_epochs": int,
        "lr": Number,
    },
    # Deep-ensemble uncertainty of cbvae (stage 04, sematlas.training.ensemble and sematlas.evaluation.uncertainty);
    # methods are some of ENSEMBLE_METHODS.
    "ensemble": {
        "methods": list,
        "aleatoric": bool,
        "dropout": Number,
        "n_members": int,
        "cycle_epochs": int,
        "lr_min_ratio": Number,
        "member_epochs": int,
        "seed_offset": int,
        "mc_samples": int,
        "n_eval": int,
        "ood_maps": int,
        "ood_true_foci": int,
        "temperature_threshold": Number,
    },
    # Two-level hierarchical VAE (stage 05, sematlas.models.hvae) and its stage gate.
    "hierarchical": {
        "top_dim": int,
        "top_beta": Number,
        "gate_min_kl_per_level": Number,
        "gate_recon_margin": Number,
        "gate_probe_margin": Number,
    },
    # Canonical correlation between the volumetric and point-cloud latents (stage 06, sematlas.analysis.cca).
    "cca": {
        "variant": str,
        "n_components": int,
        "n_permutations": int,
        "n_decoded": int,
    },
    # HDBSCAN of the main model's latents (stage 07, sematlas.analysis.clustering).
    "clustering": {
        "variant": str,
        "min_cluster_size": int,
        "min_samples": int,
        "n_bootstrap": int,
        "bootstrap_fraction": Number,
        "top_topics": int,
    },
    # Chronological latent series and trajectory GRU (stage 08, sematlas.analysis.forecasting).
    "forecasting": {
        "variant": str,
        "cutoff_year": int,
        "window": int,
        "hidden_size": int,
        "max_epochs": int,
        "lr": Number,
        "min_studies": int,
        "drift_task": str,
        "drift_years": list,
        "drift_samples": int,
    },
    # The ablation protocol (stage 09, sematlas.analysis.ablation): which params/ablations/<name>.yaml
    # files run, and the training budget of every run.
    "ablation": {
        "names": list,
        "max_epochs": int,
    },
}


#: Ways stage 04 builds an ensemble (see sematlas.training.ensemble): snapshot ensemble, independently
#: seeded members, MC dropout.
ENSEMBLE_METHODS = ("snapshot", "independent", "mc_dropout")


class ParameterError(ValueError):
    """A parameter file is missing, has an unknown or missing key, or a bad value."""


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParameterError(f"parameter file not found: {path}")
    with path.open() as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise ParameterError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def _check_known(values: dict[str, Any], schema: dict[str, Any], source: Path, prefix: str = "") -> None:
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ParameterError(f"{source}: unknown parameter '{dotted}' (known here: {known})")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ParameterError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
            _check_known(value, expected, source, prefix=f"{dotted}.")


def _check_complete(values: dict[str, Any], schema: dict[str, Any], sources: str, prefix: str = "") -> None:
    for key, expected in schema.items():
        dotted = f"{prefix}{key}"
        if key not in values:
            raise ParameterError(f"missing parameter '{dotted}' (set it in {sources})")
        value = values[key]
        if isinstance(expected, dict):
            _check_complete(value, expected, sources, prefix=f"{dotted}.")
            continue
        if isinstance(expected, tuple) and expected and expected[0] == "mapping":
            if not isinstance(value, dict) or not all(isinstance(v, expected[1]) for v in value.values()):
                raise ParameterError(f"'{dotted}' must map names to {expected[1].__name__}s ({sources})")
            continue
        # bool is an int in Python; a flag written where a number belongs is a mistake.
        if isinstance(value, bool) and expected is not bool:
            raise ParameterError(f"'{dotted}' must be {_type_name(expected)}, got {value!r} ({sources})")
        if not isinstance(value, expected):
            raise ParameterError(f"'{dotted}' must be {_type_name(expected)}, got {value!r} ({sources})")


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join("null" if t is type(None) else t.__name__ for t in expected)
    return expected.__name__


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "task_categories":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(profile: str, root: Path | None = None) -> dict[str, Any]:
    """Load, layer and validate the parameters of a profile.

    Parameters
    ----------
    profile : str
        One of :data:`PROFILES`.
    root : Path, optional
        Project root; found from the working directory when omitted.

    Returns
    -------
    dict
        The merged parameters with ``profile`` added.

    Raises
    ------
    ParameterError
        Unknown profile, unknown or missing key (naming the key and the file),
        or a value of the wrong type.
    """
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    params_dir = (root or project_root()) / "params"
    common_path = params_dir / "common.yaml"
    profile_path = params_dir / f"{profile}.yaml"
    common = _load_yaml(common_path)
    override = _load_yaml(profile_path)
    _check_known(common, SCHEMA, common_path)
    _check_known(override, SCHEMA, profile_path)
    merged = _merge(common, override)
    _check_complete(merged, SCHEMA, f"{common_path.name} or {profile_path.name}")
    _check_values(merged, f"{common_path.name} + {profile_path.name}")
    merged["profile"] = profile
    return merged


def override_params(params: dict[str, Any], override: dict[str, Any], source: Path) -> dict[str, Any]:
    """Validated parameters with ``override`` layered on top, as a profile file is on ``common.yaml``.

    Parameters
    ----------
    params : dict
        Loaded parameters (:func:`load_params`).
    override : dict
        A partial parameter mapping (e.g. the ``change`` of an ablation file).
    source : Path
        Where ``override`` comes from, named in every error.

    Returns
    -------
    dict
        A new mapping; ``params`` is not modified.

    Raises
    ------
    ParameterError
        An unknown key or a value of the wrong type.
    """
    _check_known(override, SCHEMA, source)
    merged = _merge({key: value for key, value in params.items() if key != "profile"}, override)
    _check_complete(merged, SCHEMA, source.name)
    _check_values(merged, source.name)
    merged["profile"] = params["profile"]
    return merged


def _check_values(params: dict[str, Any], sources: str) -> None:
    fractions = params["curation"]["split_fractions"]
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ParameterError(
            f"'curation.split_fractions' must be three positive numbers summing to 1, got {fractions} ({sources})"
        )
    if params["render"]["voxel_size"] not in (2, 4):
        raise ParameterError(f"'render.voxel_size' must be 2 or 4, got {params['render']['voxel_size']} ({sources})")
    if params["render"]["kernel_choice"] not in ("all", "random"):
        raise ParameterError(f"'render.kernel_choice' must be 'all' or 'random' ({sources})")
    if not 0.0 <= params["render"]["flip_probability"] <= 1.0:
        raise ParameterError(f"'render.flip_probability' must be in [0, 1] ({sources})")
    from sematlas.models.config import VARIANTS

    unknown = [v for v in params["model"]["variants"] if v not in VARIANTS]
    if unknown or not params["model"]["variants"]:
        raise ParameterError(
            f"'model.variants' must list some of {', '.join(VARIANTS)}, got {params['model']['variants']} ({sources})"
        )
    methods = params["ensemble"]["methods"]
    if not methods or any(m not in ENSEMBLE_METHODS for m in methods):
        raise ParameterError(
            f"'ensemble.methods' must list some of {', '.join(ENSEMBLE_METHODS)}, got {methods} ({sources})"
        )
    if params["ensemble"]["n_members"] < 2 or not 0.0 < params["ensemble"]["dropout"] < 1.0:
        raise ParameterError(f"'ensemble.n_members' must be >= 2 and 'ensemble.dropout' in (0, 1) ({sources})")
    if params["training"]["beta_schedule"] not in ("constant", "linear", "cyclical"):
        raise ParameterError(f"'training.beta_schedule' must be constant, linear or cyclical ({sources})")
