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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from sematlas.core.paths import project_root

PROFILES = ("ci", "quick", "cpu-full", "gpu")


class Section(Mapping[str, Any]):
    """A validated parameter section: typed attributes, and read-only mapping access.

    Notebooks read ``params["training"]["lr"]`` as papermill users expect; library
    code reads ``params.training.lr``. Sections are frozen: a changed copy comes from
    :func:`override_params`, which validates it like a profile file.
    """

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (lists and dicts, as in the YAML), for YAML/JSON and fingerprints."""
        return {name: _plain(getattr(self, name)) for name in self._names()}


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return copy.deepcopy(value)


@dataclass(frozen=True)
class DataParams(Section):
    """Where the Neurosynth files come from (``data``)."""

    mirror: str | None
    neurosynth_version: str
    vocab: str


@dataclass(frozen=True)
class CurationParams(Section):
    """Deduplication, coordinate validation, task categories and splits (``curation``, stage 01)."""

    validation_voxel_size: int
    max_distance_to_mask_mm: float
    min_peaks: int
    year_bins: int
    peak_count_bins: int
    split_fractions: list
    subset_size: int
    task_min_weight: float
    task_categories: dict[str, list]


@dataclass(frozen=True)
class RenderParams(Section):
    """Peak-to-density rendering and its augmentation (``render``)."""

    voxel_size: int
    fwhms: list
    truncate: float
    flip_probability: float
    kernel_choice: str


@dataclass(frozen=True)
class ModelParams(Section):
    """Architecture choices of the volumetric models (``model``): the fields of
    model configs (:mod:`sematlas.models.config`) that are choices, not properties of the data; each
    variant's config picks its own fields from here."""

    variants: list
    z_dim: int
    base_channels: int
    dropout: float
    gradient_checkpointing: bool
    growth_rate: int
    dense_layers: list
    dilations: list
    hidden_dim: int
    sbd_channels: int | None
    conditioning: str
    decoder: str
    imputation: bool
    aleatoric: bool
    prior: str
    likelihood: str
    metadata: str
    prior_lr_scale: float


@dataclass(frozen=True)
class TrainingParams(Section):
    """Objective weights, schedules, optimiser and Trainer settings of every volumetric run (``training``)."""

    use_subset: bool
    batch_size: int
    max_epochs: int
    variant_epochs: dict[str, int]
    studies_per_epoch: int
    val_studies: int
    lr: float
    weight_decay: float
    beta: float
    beta_schedule: str
    beta_warmup_epochs: float
    beta_cycle_epochs: float
    beta_cycle_ratio: float
    beta_tc_target: float
    beta_tc_annealing_epochs: float
    imputation_weight: float
    year_weight: float
    grl_max_lambda: float
    recon_every_n_epochs: int
    num_recon_samples: int
    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str
    fp32_variants: list
    deterministic: bool
    num_threads: int
    wandb: bool


@dataclass(frozen=True)
class EvaluationParams(Section):
    """Held-out evaluation, generative quality and the zero-shot probe (``evaluation``)."""

    n_prior_samples: int
    estimator_studies: int
    estimator_samples: int
    pca_max_train: int
    latents_every_split: list
    traversal_dims: int
    traversal_range: float
    prd_features: int
    prd_k: int
    probe_folds: int
    probe_C: float


@dataclass(frozen=True)
class PointCloudParams(Section):
    """Point-cloud C-VAE (``pointcloud``, stage 03): cache, PointNet++ encoder, decoder, objective,
    optimiser; validated further by :class:`sematlas.models.pointcloud.PointCloudConfig`."""

    n_points: int
    centre_mm: list
    scale_mm: float
    fourier_features: int
    fourier_sigma: float
    sa_npoint: list
    sa_radius: list
    sa_nsample: list
    sa_channels: list
    global_channels: int
    decoder_hidden: list
    z_dim: int
    beta: float
    beta_warmup_epochs: float
    chamfer_weight: float
    sinkhorn_weight: float
    sinkhorn_blur: float
    batch_size: int
    max_epochs: int
    lr: float


@dataclass(frozen=True)
class EnsembleParams(Section):
    """Deep-ensemble uncertainty of the main model (``ensemble``, stage 04); ``methods`` are some of
    :data:`ENSEMBLE_METHODS`."""

    methods: list
    aleatoric: bool
    dropout: float
    n_members: int
    cycle_epochs: int
    lr_min_ratio: float
    member_epochs: int
    seed_offset: int
    mc_samples: int
    n_eval: int
    ood_maps: int
    ood_true_foci: int
    temperature_threshold: float


@dataclass(frozen=True)
class HierarchicalParams(Section):
    """Two-level hierarchical VAE (``hierarchical``, stage 05) and its stage gate."""

    top_dim: int
    top_beta: float
    gate_min_kl_per_level: float
    gate_recon_margin: float
    gate_probe_margin: float


@dataclass(frozen=True)
class CCAParams(Section):
    """Canonical correlation between the volumetric and point-cloud latents (``cca``, stage 06)."""

    variant: str
    n_components: int
    n_permutations: int
    n_decoded: int


@dataclass(frozen=True)
class ClusteringParams(Section):
    """HDBSCAN of the main model's latents (``clustering``, stage 07)."""

    variant: str
    min_cluster_size: int
    min_samples: int
    n_bootstrap: int
    bootstrap_fraction: float
    top_topics: int
    embedding_max_studies: int


@dataclass(frozen=True)
class ForecastingParams(Section):
    """Chronological latent series and trajectory GRU (``forecasting``, stage 08)."""

    variant: str
    cutoff_year: int
    window: int
    hidden_size: int
    max_epochs: int
    lr: float
    min_studies: int
    drift_task: str
    drift_years: list
    drift_samples: int


@dataclass(frozen=True)
class AblationParams(Section):
    """The ablation protocol (``ablation``, stage 09): which ``params/ablations/<name>.yaml`` files run,
    and the training budget of every run."""

    names: list
    max_epochs: int


@dataclass(frozen=True)
class Params(Section):
    """Every parameter of a profile, validated: built once by :func:`load_params`.

    Attributes
    ----------
    seed : int
    data, curation, render, model, training, evaluation, pointcloud, ensemble, hierarchical, cca,
    clustering, forecasting, ablation : Section
        One typed section each (``params.training.lr``, or ``params["training"]["lr"]``).
    profile : str
        The profile the parameters were loaded for.
    """

    seed: int
    data: DataParams
    curation: CurationParams
    render: RenderParams
    model: ModelParams
    training: TrainingParams
    evaluation: EvaluationParams
    pointcloud: PointCloudParams
    ensemble: EnsembleParams
    hierarchical: HierarchicalParams
    cca: CCAParams
    clustering: ClusteringParams
    forecasting: ForecastingParams
    ablation: AblationParams
    profile: str


Number = (int, float)

#: Annotation -> the types a YAML value may have (a float field takes an int: YAML writes ``1`` for ``1.0``).
_EXPECTED: dict[str, Any] = {
    "int": int,
    "float": Number,
    "str": str,
    "bool": bool,
    "list": list,
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "dict[str, list]": ("mapping", list),
    "dict[str, int]": ("mapping", int),
}


def _schema(section: type[Section]) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for f in fields(section):  # type: ignore[arg-type]
        annotation = str(f.type)
        if f.name == "profile":
            continue
        nested = _SECTIONS.get(annotation)
        schema[f.name] = _schema(nested) if nested is not None else _EXPECTED[annotation]
    return schema


_SECTIONS: dict[str, type[Section]] = {
    cls.__name__: cls
    for cls in (
        DataParams,
        CurationParams,
        RenderParams,
        ModelParams,
        TrainingParams,
        EvaluationParams,
        PointCloudParams,
        EnsembleParams,
        HierarchicalParams,
        CCAParams,
        ClusteringParams,
        ForecastingParams,
        AblationParams,
    )
}

#: The schema every parameter file is checked against, derived from the section classes above
#: (nested mappings of key -> expected type(s); ``("mapping", T)`` for a mapping with free keys).
SCHEMA: dict[str, Any] = _schema(Params)


def _build(values: Mapping[str, Any]) -> Params:
    """The typed object of merged, validated parameters."""
    sections = {f.name: f for f in fields(Params)}
    built: dict[str, Any] = {}
    for name, value in values.items():
        section = _SECTIONS.get(str(sections[name].type))
        built[name] = section(**copy.deepcopy(value)) if section is not None else value
    return Params(**built)


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


def load_params(profile: str, root: Path | None = None) -> Params:
    """Load, layer and validate the parameters of a profile.

    Parameters
    ----------
    profile : str
        One of :data:`PROFILES`.
    root : Path, optional
        Project root; found from the working directory when omitted.

    Returns
    -------
    Params
        The merged parameters, typed, with ``profile`` set.

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
    return _build(merged)


def override_params(params: Params, override: Mapping[str, Any], source: Path | str = "override") -> Params:
    """Validated parameters with ``override`` layered on top, as a profile file is on ``common.yaml``.

    Parameters
    ----------
    params : Params
        Loaded parameters (:func:`load_params`).
    override : mapping
        A partial parameter mapping (e.g. the ``change`` of an ablation file, or
        ``{"training": {"max_epochs": 2}}``).
    source : Path or str
        Where ``override`` comes from, named in every error.

    Returns
    -------
    Params
        A new object; ``params`` is not modified.

    Raises
    ------
    ParameterError
        An unknown key or a value of the wrong type.
    """
    source = Path(source)
    plain = _plain(dict(override))
    _check_known(plain, SCHEMA, source)
    merged = _merge({key: value for key, value in params.to_dict().items() if key != "profile"}, plain)
    _check_complete(merged, SCHEMA, source.name)
    _check_values(merged, source.name)
    merged["profile"] = params.profile
    return _build(merged)


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
    methods = params["ensemble"]["methods"]
    if not methods or any(m not in ENSEMBLE_METHODS for m in methods):
        raise ParameterError(
            f"'ensemble.methods' must list some of {', '.join(ENSEMBLE_METHODS)}, got {methods} ({sources})"
        )
    if params["ensemble"]["n_members"] < 2 or not 0.0 < params["ensemble"]["dropout"] < 1.0:
        raise ParameterError(f"'ensemble.n_members' must be >= 2 and 'ensemble.dropout' in (0, 1) ({sources})")
    every_split = params["evaluation"]["latents_every_split"]
    for section in ("cca", "clustering", "forecasting"):
        if params[section]["variant"] not in every_split:
            raise ParameterError(
                f"'{section}.variant' ({params[section]['variant']}) reads the latents of every split: "
                f"list it in 'evaluation.latents_every_split' (now {every_split}) ({sources})"
            )
    if params["training"]["beta_schedule"] not in ("constant", "linear", "cyclical"):
        raise ParameterError(f"'training.beta_schedule' must be constant, linear or cyclical ({sources})")
