"""The results files of the trained models' held-out evaluations (stages 02, 03, 04 and 09).

- :class:`VolumetricResults`: ``<variant>/test_results.json`` of every volumetric
  run (stage 02; stage 05 writes ``hvae``'s), built from
  :func:`sematlas.evaluation.reconstruction.evaluate_run`;
- :class:`PointCloudResults`: ``pointcloud/test_results.json`` (stage 03), from
  :func:`sematlas.evaluation.pointcloud.evaluate_pointcloud`;
- :class:`EnsembleResults`: ``ensemble/test_results.json`` (stage 04), from
  :func:`sematlas.evaluation.uncertainty.evaluate_ensemble` per method;
- :class:`EvaluationResults`: ``evaluation/evaluation_results.json`` (stage 09):
  generative quality, the zero-shot probe and the ablation protocol;
- the conditional atlas's ``evaluation/conditional_atlas.json`` (stage 09) has its own module,
  :mod:`sematlas.evaluation.atlas_results`.

:func:`sematlas.evaluation.trained_run.evaluate_trained_run` evaluates a trained run
and saves its results; reporting reads these objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import pandas as pd

from sematlas.core.params import EnsembleParams, EvaluationParams
from sematlas.core.results import ResultSection, StageResults, Table, parse
from sematlas.evaluation.criteria import ECE_GOAL, OOD_AUROC_GOAL
from sematlas.evaluation.paired import PairedComparison

if TYPE_CHECKING:
    pass


class _TrainedRun(Protocol):
    """What a training summary reads from :class:`sematlas.training.run.TrainedRun`."""

    @property
    def timing(self) -> Mapping[str, Any]: ...

    @property
    def metrics(self) -> pd.DataFrame: ...


# ------------------------------------------------------------------ training
@dataclass(frozen=True, kw_only=True)
class TrainingSummary(ResultSection):
    """What a run's training cost (``run.timing``) and the best validation values it reached."""

    train_seconds: float
    epochs: int
    studies_per_second: float
    best_val_loss: float

    #: Field -> the validation curve (a column of ``run.metrics``) whose minimum it is.
    BEST_OF: ClassVar[dict[str, str]] = {"best_val_loss": "val/loss"}
    PREFERRED: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_run(cls, run: _TrainedRun) -> Self:
        """The summary of a :class:`~sematlas.training.run.TrainedRun`."""
        columns = {name: cls.PREFERRED.get(column, column) for name, column in cls.BEST_OF.items()}
        columns = {name: c if c in run.metrics else cls.BEST_OF[name] for name, c in columns.items()}
        best = {name: float(run.metrics[column].min()) for name, column in columns.items()}
        return parse(cls, {**run.timing, **best})


@dataclass(frozen=True, kw_only=True)
class VolumetricTraining(TrainingSummary):
    """:class:`TrainingSummary` of a volumetric run, with its best validation reconstruction term."""

    best_val_recon: float

    BEST_OF: ClassVar[dict[str, str]] = {**TrainingSummary.BEST_OF, "best_val_recon": "val/recon"}
    #: A curve read instead of another where the run logged it: the squared error of a model whose
    #: ``recon`` is a likelihood in nats (the cbvae's calibrated decoder), comparable across variants.
    PREFERRED: ClassVar[dict[str, str]] = {"val/recon": "val/recon_se"}


@dataclass(frozen=True, kw_only=True)
class PointCloudTraining(TrainingSummary):
    """:class:`TrainingSummary` of the point-cloud run, with its best validation Chamfer term."""

    best_val_chamfer: float

    BEST_OF: ClassVar[dict[str, str]] = {**TrainingSummary.BEST_OF, "best_val_chamfer": "val/chamfer"}


# ------------------------------------------------------------------ volumetric (stages 02, 05)
@dataclass(frozen=True, kw_only=True)
class MapMetrics(ResultSection):
    """Median and mean over held-out studies of the map metrics, inside the brain mask (widest kernel)."""

    pearson_r_median: float
    pearson_r_mean: float
    ssim_median: float
    ssim_mean: float
    mse_median: float
    mse_mean: float
    psnr_median: float
    psnr_mean: float
    n_studies: int


@dataclass(frozen=True, kw_only=True)
class VolumetricReconstruction(ResultSection):
    """Input map -> model -> map, against PCA at the model's latent size and the training mean map.

    ``vs_pca`` and ``vs_mean_map`` compare the per-study Pearson r of the model with the baseline's
    on the same studies (paired bootstrap CIs, :func:`~sematlas.evaluation.paired.paired_bootstrap`).
    """

    model: MapMetrics
    pca: MapMetrics
    mean_map: MapMetrics
    model_beats_pca_fraction: float
    vs_pca: PairedComparison
    vs_mean_map: PairedComparison


@dataclass(frozen=True, kw_only=True)
class GenerationEstimators(ResultSection):
    """The decoded prior mean against the average of ``n_samples`` decoded prior samples, on the first
    ``n_studies`` held-out studies (:func:`~sematlas.evaluation.reconstruction.generation_estimators`)."""

    n_studies: int
    n_samples: int
    prior_mean_r_median: float
    sample_average_r_median: float
    sample_average_vs_prior_mean: PairedComparison


@dataclass(frozen=True, kw_only=True)
class VolumetricGeneration(ResultSection):
    """Maps from metadata alone, against ridge, an MLP from the same metadata and the training mean map.

    ``vs_ridge``, ``vs_mlp`` and ``vs_mean_map``: paired comparisons of the per-study Pearson r, as in
    reconstruction; ``estimators``: the model's two point predictions from metadata compared.
    """

    model: MapMetrics
    ridge: MapMetrics
    mlp: MapMetrics
    mean_map: MapMetrics
    uses_metadata: bool
    estimators: GenerationEstimators
    vs_ridge: PairedComparison
    vs_mlp: PairedComparison
    vs_mean_map: PairedComparison


@dataclass(frozen=True, kw_only=True)
class YearDebiasing(ResultSection):
    """The adversarial year head on held-out latents against its goal
    (:data:`~sematlas.evaluation.criteria.YEAR_DEBIASING_GOAL`)."""

    balanced_accuracy: float
    chance: float
    goal_at_most: float
    meets_goal: bool
    n_bins: int


@dataclass(frozen=True, kw_only=True)
class VolumetricResults(StageResults):
    """Held-out evaluation of one volumetric run: ``<variant>/test_results.json``.

    Written by stage 02 for every variant of ``model.variants`` and by stage 05 for ``hvae``.
    """

    LOCATION: ClassVar[str] = "{variant}/test_results.json"
    #: 2: the paired comparisons (``vs_pca``, ``vs_mean_map``, ``vs_ridge``) of both tasks;
    #: 3: the MLP baseline of conditional generation (``mlp``, ``vs_mlp``) and its ``estimators``.
    SCHEMA_VERSION: ClassVar[int] = 3

    variant: str
    split: str
    n_studies: int
    z_dim: int
    n_train: int
    pca_fitted_on: int
    ridge_fitted_on: int
    channel: str
    reconstruction: VolumetricReconstruction
    conditional_generation: VolumetricGeneration
    active_units: int
    year_debiasing: YearDebiasing | None
    training: VolumetricTraining

    def headline(self) -> dict[str, float]:
        """The numbers stage 02 answers its questions with: model against PCA and ridge, year head, units."""
        recon, generation = self.reconstruction, self.conditional_generation
        return {
            "model r (median)": recon.model.pearson_r_median,
            "PCA r (median)": recon.pca.pearson_r_median,
            "model - PCA r, 95% CI low": recon.vs_pca.median_difference_ci[0],
            "model - PCA r, 95% CI high": recon.vs_pca.median_difference_ci[1],
            "studies where model beats PCA": recon.model_beats_pca_fraction,
            "generation r (median)": generation.model.pearson_r_median,
            "ridge r (median)": generation.ridge.pearson_r_median,
            "model - ridge r, 95% CI low": generation.vs_ridge.median_difference_ci[0],
            "model - ridge r, 95% CI high": generation.vs_ridge.median_difference_ci[1],
            "MLP r (median)": generation.mlp.pearson_r_median,
            "year head balanced accuracy": (
                self.year_debiasing.balanced_accuracy if self.year_debiasing else float("nan")
            ),
            "active units": self.active_units,
            "z_dim": self.z_dim,
        }


# ------------------------------------------------------------------ point cloud (stage 03)
@dataclass(frozen=True, kw_only=True)
class SetMetrics(ResultSection):
    """Median and mean over held-out studies of the point-set distances, in mm."""

    chamfer_mm_median: float
    chamfer_mm_mean: float
    emd_mm_median: float
    emd_mm_mean: float


@dataclass(frozen=True, kw_only=True)
class PointCloudReconstruction(ResultSection):
    """The model's reconstructions against the resample noise floor and nearest-study retrieval."""

    model: SetMetrics
    resample_noise_floor: SetMetrics
    nearest_training_study: SetMetrics
    model_beats_nearest_training_fraction: float


@dataclass(frozen=True, kw_only=True)
class PointCloudGeneration(ResultSection):
    """Sets generated from metadata alone against draws from the category's pooled training peaks."""

    model: SetMetrics
    category_pool: SetMetrics
    model_beats_category_pool_fraction: float


@dataclass(frozen=True, kw_only=True)
class PointCloudResults(StageResults):
    """Held-out evaluation of the point-cloud C-VAE: ``pointcloud/test_results.json``."""

    LOCATION: ClassVar[str] = "pointcloud/test_results.json"

    profile: str
    units: str
    n_test: int
    n_train: int
    n_points: int
    n_prior_samples: int
    z_dim: int
    emd_blur_mm: float
    reconstruction: PointCloudReconstruction
    conditional_generation: PointCloudGeneration
    training: PointCloudTraining

    def headline(self) -> dict[str, float]:
        """The numbers stage 03 answers its questions with: model against retrieval and the category pool."""
        recon, generation = self.reconstruction, self.conditional_generation
        nearest = recon.nearest_training_study
        return {
            "reconstruction Chamfer, model (median mm)": recon.model.chamfer_mm_median,
            "reconstruction Chamfer, nearest training study (median mm)": nearest.chamfer_mm_median,
            "reconstruction Chamfer, resample noise floor (median mm)": recon.resample_noise_floor.chamfer_mm_median,
            "test studies where the model beats retrieval": recon.model_beats_nearest_training_fraction,
            "generation Chamfer, model (median mm)": generation.model.chamfer_mm_median,
            "generation Chamfer, category pool (median mm)": generation.category_pool.chamfer_mm_median,
            "test studies where generation beats the category pool": generation.model_beats_category_pool_fraction,
        }


# ------------------------------------------------------------------ ensembles (stage 04)
@dataclass(frozen=True, kw_only=True)
class EnsembleMethodResults(ResultSection):
    """Calibration, OOD detection and reconstruction of one ensemble method on held-out maps.

    ``ood_auroc`` and ``ood_auroc_predictive_nll`` map each OOD kind to the AUROC of the ensemble's
    disagreement and of the predictive NLL; ``train_seconds`` is ``None`` for a method without a run.
    """

    n_passes: int
    n_test: int
    n_val: int
    ece_val: float
    ece_test_before: float
    ece_test_after: float
    temperature: float
    temperature_applied: bool
    ood_auroc: dict[str, float]
    ood_auroc_predictive_nll: dict[str, float]
    recon_median_r_ensemble: float
    recon_median_r_single: float
    mean_aleatoric_variance: float
    mean_epistemic_variance: float
    train_seconds: float | None

    @classmethod
    def from_evaluation(cls, evaluation: Mapping[str, Any], train_seconds: float | None) -> Self:
        """From :func:`~sematlas.evaluation.uncertainty.evaluate_ensemble`'s summary and the training time."""
        return parse(cls, {**evaluation, "train_seconds": train_seconds})


@dataclass(frozen=True, kw_only=True)
class EnsembleGoals(ResultSection):
    """The thresholds of :data:`~sematlas.evaluation.criteria.ECE_GOAL` and ``OOD_AUROC_GOAL``."""

    ece_below: float = ECE_GOAL.threshold
    ood_auroc_above: float = OOD_AUROC_GOAL.threshold


@dataclass(frozen=True, kw_only=True)
class EnsembleResults(StageResults):
    """The ensembles' uncertainty on held-out maps: ``ensemble/test_results.json``.

    ``methods`` maps each method of ``ensemble.methods`` to its results; ``settings`` are the
    ``ensemble`` parameters it ran with.
    """

    LOCATION: ClassVar[str] = "ensemble/test_results.json"

    profile: str
    methods: dict[str, EnsembleMethodResults]
    goals: EnsembleGoals = EnsembleGoals()
    n_test: int
    n_ood_per_kind: int
    calibration_levels: list[float]
    settings: EnsembleParams

    def table(self) -> pd.DataFrame:
        """One row per method: passes, ECE before and after temperature scaling, AUROCs, reconstruction, time."""
        return pd.DataFrame(
            {
                method: {
                    "passes": r.n_passes,
                    "ECE val": r.ece_val,
                    "ECE test before": r.ece_test_before,
                    "temperature": r.temperature,
                    "applied": r.temperature_applied,
                    "ECE test after": r.ece_test_after,
                    **{f"AUROC {kind}": auroc for kind, auroc in r.ood_auroc.items()},
                    **{f"AUROC NLL {kind}": auroc for kind, auroc in r.ood_auroc_predictive_nll.items()},
                    "recon r ensemble": r.recon_median_r_ensemble,
                    "recon r single": r.recon_median_r_single,
                    "train s": r.train_seconds,
                }
                for method, r in self.methods.items()
            }
        ).T


# ------------------------------------------------------------------ the evaluation suite (stage 09)
@dataclass(frozen=True, kw_only=True)
class GenerativeQuality(ResultSection):
    """Precision, recall and Fréchet distance of every model's samples: ``methods`` is the table of
    :func:`~sematlas.evaluation.generative.evaluate_generation`, one row per method."""

    feature_space: str
    k: int
    methods: Table

    @classmethod
    def from_table(cls, table: pd.DataFrame, evaluation: EvaluationParams) -> Self:
        """From the generative-quality table (a ``method`` column) and the parameters that defined it."""
        return cls(
            feature_space=f"PCA-{evaluation['prd_features']} of training maps (widest kernel)",
            k=evaluation["prd_k"],
            # Missing cells (a sample set that is not a mixture has no component count) become null.
            methods={
                method: {key: None if pd.isna(value) else value for key, value in row.items()}
                for method, row in table.set_index("method").to_dict(orient="index").items()
            },
        )


#: The zero-shot probe's task, as stage 09 asks it.
PROBE_TASK = "n-back (1) vs flanker (0), NeuroStore 2026-07 studyset"


@dataclass(frozen=True, kw_only=True)
class ZeroShotProbe(ResultSection):
    """The n-back vs flanker probe of frozen latents: ``features`` is the table of
    :func:`~sematlas.evaluation.probe.run_probe`, one row per feature set."""

    task: str = PROBE_TASK
    chance: float = 0.5
    n_analyses: int
    n_studies: int
    n_in_neurosynth: int
    n_in_training: int
    features: Table

    @classmethod
    def from_tables(cls, probe: pd.DataFrame, analyses: pd.DataFrame) -> Self:
        """From :func:`~sematlas.evaluation.probe.run_probe`'s two tables (per feature set, per analysis)."""
        return cls(
            n_analyses=len(analyses),
            n_studies=int(analyses["neurostore_study_id"].nunique()),
            n_in_neurosynth=int(analyses["in_neurosynth"].sum()),
            n_in_training=int(analyses["in_training"].sum()),
            features=probe.set_index("features").to_dict(orient="index"),
        )


@dataclass(frozen=True, kw_only=True)
class AblationSummary(ResultSection):
    """The ablation protocol (:func:`~sematlas.analysis.ablation.ablation_summary`): ``locked`` holds
    the locked model's metrics, ``ablations`` the table of :func:`~sematlas.analysis.ablation.ablation_table`
    by ablation, ``order`` the protocol's order of its rows."""

    max_epochs: int
    locked: dict[str, float]
    n_ablations: int
    n_pass: int
    order: list[str]
    ablations: Table


@dataclass(frozen=True, kw_only=True)
class EvaluationResults(StageResults):
    """The evaluation suite: ``evaluation/evaluation_results.json``."""

    LOCATION: ClassVar[str] = "evaluation/evaluation_results.json"

    profile: str
    generative_quality: GenerativeQuality
    zero_shot_probe: ZeroShotProbe
    ablations: AblationSummary


def metric_blocks(section: ResultSection) -> dict[str, MapMetrics]:
    """The per-method metric blocks of a task section, by method, in field order (e.g. model, pca, mean_map).

    The methods' own metrics only: not the paired comparisons between them, nor the estimators compared.
    """
    return {
        f.name: getattr(section, f.name) for f in fields(section) if isinstance(getattr(section, f.name), MapMetrics)
    }


__all__ = [
    "PROBE_TASK",
    "AblationSummary",
    "EnsembleGoals",
    "EnsembleMethodResults",
    "EnsembleResults",
    "EvaluationResults",
    "GenerationEstimators",
    "GenerativeQuality",
    "MapMetrics",
    "PointCloudGeneration",
    "PointCloudReconstruction",
    "PointCloudResults",
    "PointCloudTraining",
    "SetMetrics",
    "TrainingSummary",
    "VolumetricGeneration",
    "VolumetricReconstruction",
    "VolumetricResults",
    "VolumetricTraining",
    "YearDebiasing",
    "ZeroShotProbe",
    "metric_blocks",
]
