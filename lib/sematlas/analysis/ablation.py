"""The ablation protocol: the locked ``cbvae`` against variants that each change one thing.

``params/`` holds one locked production configuration. Each
``params/ablations/<name>.yaml`` declares, before anything is trained, one
change to it, the hypothesis the change tests and the success criterion::

    hypothesis: FiLM conditioning generates maps from metadata better than concatenation.
    change:
      model:
        conditioning: concat
    criterion:
      metric: generation_r      # one of METRICS
      direction: decrease       # the ablation's value against the locked model's
      margin: 0.01

The protocol retrains the locked model and every ablation through the same
training code (:func:`sematlas.training.run.train_variant`) under one budget
(``ablation.max_epochs``), evaluates each on the held-out test split with the
same code as stage 02 (:func:`sematlas.evaluation.reconstruction.evaluate_run`), and scores
each criterion PASS or FAIL. A PASS means the locked choice is justified by
its declared criterion; a FAIL is reported as measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from sematlas.core.io import read_json, sha256_file, write_json
from sematlas.core.params import ParameterError, Params, override_params
from sematlas.core.paths import ProfilePaths, project_root
from sematlas.models.registry import MAIN_VARIANT

if TYPE_CHECKING:
    from sematlas.evaluation.rendered import RenderedSplits

logger = logging.getLogger(__name__)

#: The metrics an ablation is scored on: name -> (unit, meaning, path into the results of evaluate_run).
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "reconstruction_r": (
        "",
        "median held-out Pearson r of reconstructions (widest kernel, inside the brain mask)",
        ("reconstruction", "model", "pearson_r_median"),
    ),
    "reconstruction_ssim": (
        "",
        "median held-out SSIM of reconstructions",
        ("reconstruction", "model", "ssim_median"),
    ),
    "beats_pca": (
        "fraction",
        "fraction of held-out studies reconstructed with a higher r than by PCA with as many components",
        ("reconstruction", "model_beats_pca_fraction"),
    ),
    "generation_r": (
        "",
        "median held-out Pearson r of maps generated from metadata alone",
        ("conditional_generation", "model", "pearson_r_median"),
    ),
    "year_balanced_accuracy": (
        "",
        "balanced accuracy of the adversarial year head on held-out latents (lower: less year information)",
        ("year_debiasing", "balanced_accuracy"),
    ),
    "active_units": ("units", "latent units whose posterior mean varies across studies", ("active_units",)),
}

#: How the ablation's value must move against the locked model's for the criterion to hold.
DIRECTIONS = {
    "increase": "rises by more than",
    "decrease": "falls by more than",
    "no_increase": "rises by no more than",
}

#: The parameter sections an ablation may change: those the trained model depends on.
CHANGEABLE_SECTIONS = ("model", "training", "render")

#: Keys an ablation may not change: the protocol's budget and the list of variants.
FIXED_KEYS = ("training.max_epochs", "model.variants")

LOCKED = "locked"


@dataclass(frozen=True)
class Criterion:
    """A success criterion, declared before the run.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.
    direction : {"increase", "decrease", "no_increase"}
        How ``ablated - locked`` must move.
    margin : float
        Non-negative threshold on ``ablated - locked``.
    """

    metric: str
    direction: str
    margin: float

    def holds(self, locked: float, ablated: float) -> bool:
        """Whether the criterion holds for these two values of ``metric``."""
        delta = ablated - locked
        if self.direction == "increase":
            return delta > self.margin
        if self.direction == "decrease":
            return delta < -self.margin
        return delta <= self.margin

    @property
    def threshold(self) -> float:
        """The boundary of ``ablated - locked``: ``-margin`` for ``decrease``, ``+margin`` otherwise."""
        return -self.margin if self.direction == "decrease" else self.margin

    def describe(self) -> str:
        """The criterion in words, e.g. ``generation_r falls by more than 0.01``."""
        return f"{self.metric} {DIRECTIONS[self.direction]} {self.margin:g}"


@dataclass(frozen=True)
class Ablation:
    """One ablation: a single change to the locked parameters and its declared criterion.

    Attributes
    ----------
    name : str
        The file's stem (``params/ablations/<name>.yaml``).
    hypothesis : str
    change : dict
        A partial parameter mapping with exactly one leaf, e.g. ``{"model": {"z_dim": 16}}``.
    criterion : Criterion
    source : Path
    """

    name: str
    hypothesis: str
    change: dict[str, Any]
    criterion: Criterion
    source: Path

    @property
    def key(self) -> str:
        """The dotted parameter the ablation changes, e.g. ``model.z_dim``."""
        return ".".join(_leaf_path(self.change, self.source))

    @property
    def value(self) -> Any:
        """The value the ablation sets."""
        return _lookup(self.change, _leaf_path(self.change, self.source))

    def apply(self, params: Params) -> Params:
        """The locked parameters with this change, validated like a profile file."""
        return override_params(params, self.change, self.source)


def _leaf_path(change: Any, source: Path) -> list[str]:
    """Keys from the top of a one-leaf nested mapping down to its leaf.

    Raises
    ------
    ParameterError
        ``change`` is not a mapping, or a level of it sets more or fewer than one key.
    """
    if not isinstance(change, Mapping):
        raise ParameterError(f"{source}: 'change' must set exactly one parameter, got {change!r}")
    path: list[str] = []
    node: Any = change
    while isinstance(node, Mapping):
        if len(node) != 1:
            raise ParameterError(f"{source}: 'change' must set exactly one parameter; '{'.'.join(path)}' sets {node}")
        (key,) = node
        path.append(str(key))
        node = node[key]
    return path


def ablations_dir(root: Path | None = None) -> Path:
    """``params/ablations/`` of the project."""
    return (root or project_root()) / "params" / "ablations"


def load_ablation(name: str, params: Params, root: Path | None = None) -> Ablation:
    """Read and validate ``params/ablations/<name>.yaml`` against the locked parameters.

    Parameters
    ----------
    name : str
        The ablation's name (the file's stem).
    params : mapping
        The locked parameters of the profile (:func:`sematlas.core.params.load_params`).
    root : Path, optional
        Project root; found from the working directory when omitted.

    Returns
    -------
    Ablation

    Raises
    ------
    ParameterError
        A missing file; an unknown or missing key; a change that is not exactly
        one known parameter, touches a section or key the protocol fixes, or
        sets the locked value; an unknown metric or direction; a negative margin.
    """
    source = ablations_dir(root) / f"{name}.yaml"
    if not source.is_file():
        known = ", ".join(sorted(p.stem for p in ablations_dir(root).glob("*.yaml")))
        raise ParameterError(f"ablation file not found: {source} (ablations: {known})")
    spec = yaml.safe_load(source.read_text()) or {}
    _expect_keys(spec, ("hypothesis", "change", "criterion"), source, "")
    criterion = spec["criterion"]
    _expect_keys(criterion, ("metric", "direction", "margin"), source, "criterion.")
    if criterion["metric"] not in METRICS:
        raise ParameterError(f"{source}: unknown criterion.metric {criterion['metric']!r}; known: {', '.join(METRICS)}")
    if criterion["direction"] not in DIRECTIONS:
        raise ParameterError(
            f"{source}: criterion.direction must be one of {', '.join(DIRECTIONS)}, got {criterion['direction']!r}"
        )
    margin = criterion["margin"]
    if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
        raise ParameterError(f"{source}: criterion.margin must be a number >= 0, got {margin!r}")
    if not isinstance(spec["hypothesis"], str) or not spec["hypothesis"].strip():
        raise ParameterError(f"{source}: 'hypothesis' must be a sentence")

    change = spec["change"]
    path = _leaf_path(change, source)
    dotted = ".".join(path)
    if path[0] not in CHANGEABLE_SECTIONS or dotted in FIXED_KEYS:
        raise ParameterError(
            f"{source}: an ablation may change {', '.join(CHANGEABLE_SECTIONS)} parameters other than "
            f"{', '.join(FIXED_KEYS)}; got '{dotted}'"
        )
    ablation = Ablation(
        name=name,
        hypothesis=" ".join(spec["hypothesis"].split()),
        change=change,
        criterion=Criterion(criterion["metric"], criterion["direction"], float(margin)),
        source=source,
    )
    changed = ablation.apply(params)  # unknown keys and bad values fail here, naming the file
    locked = _lookup(params, path)
    if _lookup(changed, path) == locked:
        raise ParameterError(f"{source}: '{dotted}' is set to the locked value {locked!r}: nothing is ablated")
    return ablation


def _expect_keys(values: Any, expected: Sequence[str], source: Path, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ParameterError(f"{source}: '{prefix.rstrip('.') or 'the top level'}' must be a mapping")
    unknown = sorted(set(values) - set(expected))
    missing = [key for key in expected if key not in values]
    if unknown:
        raise ParameterError(f"{source}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(expected)})")
    if missing:
        raise ParameterError(f"{source}: missing key '{prefix}{missing[0]}'")


def _lookup(params: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = params
    for part in path:
        node = node[part]
    return node


def protocol_params(params: Params) -> Params:
    """The locked parameters under the protocol's training budget (``ablation.max_epochs``)."""
    return override_params(params, {"training": {"max_epochs": params.ablation.max_epochs}}, "ablation protocol")


def ablation_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`METRICS` of one run from its :func:`~sematlas.evaluation.reconstruction.evaluate_run` results."""
    return {name: float(_lookup(results, path)) for name, (_, _, path) in METRICS.items()}


def run_ablation(
    params: Params, paths: ProfilePaths, ablation: Ablation | None = None, maps: RenderedSplits | None = None
) -> dict[str, Any]:
    """Train (or resume, or reuse) and evaluate one run of the protocol.

    The run folder is ``data/models/<profile>/ablations/<name>/`` (``locked``
    for the reference) and the result ``data/results/<profile>/ablations/<name>.json``.
    A result is reused when it was computed from the same checkpoint (its
    SHA-256) under the same fingerprint, so a killed protocol resumes where it stopped.

    Parameters
    ----------
    params : mapping
        The locked parameters of the profile.
    paths : ProfilePaths
    ablation : Ablation, optional
        ``None`` runs the locked reference.
    maps : RenderedSplits, optional
        The stage's rendered splits: the run is evaluated on them when it renders its
        maps the same way (every ablation but those of ``render``, e.g. one kernel),
        so the protocol renders the held-out and training maps once, not once per run.

    Returns
    -------
    dict
        ``name``, ``key``, ``value``, ``metrics`` (:func:`ablation_metrics`),
        ``training`` (seconds, epochs), ``results`` (the full evaluation),
        ``fingerprint`` and ``checkpoint_sha256``.
    """
    from sematlas.evaluation.reconstruction import evaluate_run
    from sematlas.inference.atlas import AtlasModel
    from sematlas.training.run import make_datamodule, train_variant

    name = ablation.name if ablation is not None else LOCKED
    run_params = protocol_params(ablation.apply(params) if ablation is not None else params)
    what = f"{ablation.key} = {ablation.value}" if ablation is not None else "the locked configuration"
    logger.info("[ablation %s] %s, %d epochs", name, what, run_params["training"]["max_epochs"])
    datamodule = make_datamodule(run_params, paths)
    run = train_variant(run_params, MAIN_VARIANT, paths, datamodule=datamodule, run_name=f"ablations/{name}")
    result_file = paths.results / "ablations" / f"{name}.json"
    run_fingerprint = read_json(run.run_dir / "fingerprint.json")["fingerprint"]
    checkpoint_sha256 = sha256_file(run.best_checkpoint)
    if result_file.is_file():
        cached = read_json(result_file)
        if cached.get("fingerprint") == run_fingerprint and cached.get("checkpoint_sha256") == checkpoint_sha256:
            logger.info("[ablation %s] evaluation of this checkpoint reused from %s", name, result_file.name)
            return dict(cached)
    model = AtlasModel.load(run.best_checkpoint, voxel_size=datamodule.voxel_size).network
    shared = maps if maps is not None and maps.renders_like(datamodule) else None
    results, _ = evaluate_run(
        model,
        datamodule,
        MAIN_VARIANT,
        run_params["evaluation"],
        int(run_params["seed"]),
        maps=shared,
        baseline_store=paths.linear_baselines,
    )
    record = {
        "name": name,
        "key": ablation.key if ablation is not None else None,
        "value": ablation.value if ablation is not None else None,
        "metrics": ablation_metrics(results),
        "training": {**run.timing, "max_epochs": run_params["training"]["max_epochs"]},
        "results": results,
        "fingerprint": run_fingerprint,
        "checkpoint_sha256": checkpoint_sha256,
    }
    write_json(record, result_file)
    return record


def ablation_table(
    params: Params,
    locked: Mapping[str, Any],
    runs: Mapping[str, Mapping[str, Any]],
    ablations: Sequence[Ablation],
) -> pd.DataFrame:
    """One row per ablation: the change, the criterion and its verdict, every metric and its change.

    Parameters
    ----------
    params : mapping
        The locked parameters (for the value each ablation replaces).
    locked : mapping
        :func:`run_ablation` of the locked reference.
    runs : mapping
        Ablation name -> :func:`run_ablation` record.
    ablations : sequence of Ablation
        In the order of the table.

    Returns
    -------
    DataFrame
        ``ablation``, ``change`` (``key: locked -> ablated``), ``hypothesis``,
        ``criterion``, ``locked``, ``ablated``, ``delta`` (of the criterion's
        metric), ``threshold`` (the criterion's boundary on ``delta``), ``verdict`` (PASS/FAIL), then ``<metric>`` and
        ``<metric>_delta`` for every metric of :data:`METRICS`, ``train_seconds``.
    """
    rows = []
    for ablation in ablations:
        metrics = runs[ablation.name]["metrics"]
        metric = ablation.criterion.metric
        row: dict[str, Any] = {
            "ablation": ablation.name,
            "change": f"{ablation.key}: {_lookup(params, ablation.key.split('.'))} -> {ablation.value}",
            "hypothesis": ablation.hypothesis,
            "criterion": ablation.criterion.describe(),
            "locked": locked["metrics"][metric],
            "ablated": metrics[metric],
            "delta": metrics[metric] - locked["metrics"][metric],
            "threshold": ablation.criterion.threshold,
            "verdict": "PASS" if ablation.criterion.holds(locked["metrics"][metric], metrics[metric]) else "FAIL",
        }
        for name in METRICS:
            row[name] = metrics[name]
            row[f"{name}_delta"] = metrics[name] - locked["metrics"][name]
        row["train_seconds"] = runs[ablation.name]["training"]["train_seconds"]
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_summary(locked: Mapping[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """The protocol in one JSON-ready mapping, for the results file and the manuscript."""
    return {
        "max_epochs": locked["training"]["max_epochs"],
        "locked": locked["metrics"],
        "n_ablations": len(table),
        "n_pass": int((table["verdict"] == "PASS").sum()),
        # JSON files are written with sorted keys: the protocol's order is kept here.
        "order": list(table["ablation"]),
        "ablations": table.set_index("ablation").to_dict(orient="index"),
    }
