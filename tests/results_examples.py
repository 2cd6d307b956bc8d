"""Small, complete results objects of every stage, with distinct values, for the results, figure and manuscript tests.

Each builder takes keyword overrides of its top-level fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sematlas.analysis.results import CCAResults, ClusteringResults, ForecastingResults, HierarchicalResults
from sematlas.core.params import load_params
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.results import EnsembleResults, EvaluationResults, PointCloudResults, VolumetricResults

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params("ci", ROOT)


def map_metrics(r: float, n: int = 6) -> dict[str, Any]:
    """A metric block whose every value derives from ``r``."""
    return {
        "pearson_r_median": r,
        "pearson_r_mean": r - 0.01,
        "ssim_median": r / 2,
        "ssim_mean": r / 2 - 0.01,
        "mse_median": 0.004,
        "mse_mean": 0.005,
        "psnr_median": 24.0,
        "psnr_mean": 24.5,
        "n_studies": n,
    }


def paired(difference: float, n: int = 6) -> dict[str, Any]:
    """A paired comparison whose every value derives from the median ``difference``."""
    return {
        "median_difference": difference,
        "median_difference_ci": [difference - 0.02, difference + 0.02],
        "win_rate": 0.5 + difference,
        "win_rate_ci": [0.4 + difference, 0.6 + difference],
        "n_studies": n,
        "n_resamples": 2000,
        "confidence": 0.95,
    }


def training(**extra: float) -> dict[str, Any]:
    return {"train_seconds": 12.5, "epochs": 2, "studies_per_second": 17.9, "best_val_loss": 178.2, **extra}


def volumetric(variant: str = "cbvae", **overrides: Any) -> VolumetricResults:
    fields: dict[str, Any] = {
        "variant": variant,
        "split": "test",
        "n_studies": 6,
        "z_dim": 8,
        "n_train": 112,
        "pca_fitted_on": 112,
        "ridge_fitted_on": 112,
        "channel": "widest kernel",
        "reconstruction": {
            "model": map_metrics(0.41),
            "pca": map_metrics(0.52),
            "mean_map": map_metrics(0.12),
            "model_beats_pca_fraction": 0.25,
            "vs_pca": paired(-0.11),
            "vs_mean_map": paired(0.29),
        },
        "conditional_generation": {
            "model": map_metrics(0.19),
            "ridge": map_metrics(0.21),
            "mlp": map_metrics(0.2),
            "mean_map": map_metrics(0.12),
            "uses_metadata": True,
            "estimators": {
                "n_studies": 6,
                "n_samples": 4,
                "prior_mean_r_median": 0.19,
                "sample_average_r_median": 0.2,
                "sample_average_vs_prior_mean": paired(0.01),
            },
            "vs_ridge": paired(-0.02),
            "vs_mlp": paired(-0.01),
            "vs_mean_map": paired(0.07),
        },
        "active_units": 7,
        "year_debiasing": {
            "balanced_accuracy": 0.13,
            "chance": 0.1,
            "goal_at_most": 0.15,
            "meets_goal": True,
            "n_bins": 10,
        },
        "training": training(best_val_recon=175.3),
    }
    return VolumetricResults(**(fields | overrides))


def set_metrics(chamfer: float, emd: float) -> dict[str, float]:
    return {"chamfer_mm_median": chamfer, "chamfer_mm_mean": chamfer + 1, "emd_mm_median": emd, "emd_mm_mean": emd + 1}


def pointcloud(**overrides: Any) -> PointCloudResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "units": "mm",
        "n_test": 4,
        "n_train": 10,
        "n_points": 30,
        "n_prior_samples": 2,
        "z_dim": 4,
        "emd_blur_mm": 0.5,
        "reconstruction": {
            "model": set_metrics(5.0, 6.0),
            "resample_noise_floor": set_metrics(0.5, 1.0),
            "nearest_training_study": set_metrics(4.0, 7.0),
            "model_beats_nearest_training_fraction": 0.25,
        },
        "conditional_generation": {
            "model": set_metrics(8.0, 9.0),
            "category_pool": set_metrics(7.5, 9.5),
            "model_beats_category_pool_fraction": 0.5,
        },
        "training": training(best_val_chamfer=0.15),
    }
    return PointCloudResults(**(fields | overrides))


def ensemble_method(ece_before: float, ece_after: float, aurocs: dict[str, float]) -> dict[str, Any]:
    return {
        "n_passes": 3,
        "n_test": 8,
        "n_val": 8,
        "ece_val": 0.17,
        "ece_test_before": ece_before,
        "ece_test_after": ece_after,
        "temperature": 0.8,
        "temperature_applied": True,
        "ood_auroc": aurocs,
        "ood_auroc_predictive_nll": {kind: 1 - value for kind, value in aurocs.items()},
        "recon_median_r_ensemble": 0.3,
        "recon_median_r_single": 0.29,
        "mean_aleatoric_variance": 0.005,
        "mean_epistemic_variance": 1e-05,
        "train_seconds": 114.9,
    }


def ensemble(**overrides: Any) -> EnsembleResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "methods": {
            "snapshot": ensemble_method(0.2, 0.1, {"uniform": 0.7, "white_matter": 0.9, "nimare_synthetic": 0.8}),
            "mc_dropout": ensemble_method(0.25, 0.16, {"uniform": 0.6, "white_matter": 0.95, "nimare_synthetic": 0.75}),
        },
        "n_test": 8,
        "n_ood_per_kind": 8,
        "calibration_levels": [0.25, 0.5, 0.75],
        "settings": PARAMS.ensemble,
    }
    return EnsembleResults(**(fields | overrides))


def hierarchical(**overrides: Any) -> HierarchicalResults:
    probe = {"balanced_accuracy": 0.2, "chance": 0.1, "n_classes": 10, "n_train": 112, "n_test": 24}
    fields: dict[str, Any] = {
        "profile": "ci",
        "variant": "hvae",
        "z_dim": 5,
        "top_dim": 2,
        "lower_dim": 3,
        "gate": {
            "criteria": {
                "kl_top_active": {"value": 0.2, "threshold": 0.5, "pass": False, "rule": "kl_top > min"},
                "reconstruction": {
                    "value": 0.3,
                    "reference_cbvae": 0.3,
                    "margin": 0.05,
                    "threshold": 0.25,
                    "pass": True,
                    "rule": "r >= cbvae r - margin",
                },
                "top_level_probe": {
                    "value": 0.2,
                    "chance": 0.1,
                    "margin": 0.05,
                    "threshold": 0.15,
                    "pass": True,
                    "rule": "balanced accuracy >= chance + margin",
                },
            },
            "passed": 2,
            "result": "FAIL",
        },
        "kl_per_level": {"kl_top": 0.2, "kl_lower": 0.9, "n_studies": 24},
        "active_units": {"top": 2, "lower": 3},
        "reconstruction": {
            "hvae_pearson_r_median": 0.3,
            "cbvae_pearson_r_median": 0.3,
            "reference": "data/results/ci/cbvae/test_results.json",
        },
        "probe": {"method": "logistic regression", "top": probe, "lower": probe, "all": probe},
        "hierarchy": {
            "top_lower_abs_correlation": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
            "category_profile": {"motor": {"top_00": 0.1, "top_01": -0.2}, "pain": {"top_00": 0.3, "top_01": 0.0}},
        },
        "training": training(best_val_recon=224.8),
        "figures": ["figures/ci/hierarchical_structure.png"],
    }
    return HierarchicalResults(**(fields | overrides))


def cca(**overrides: Any) -> CCAResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "variant": "cbvae",
        "split": "test",
        "n_studies": 24,
        "dims": {"volumetric": 8, "pointcloud": 4},
        "n_components_requested": 2,
        "n_components": 2,
        "n_permutations": 100,
        "seed": 7,
        "sklearn_vs_exact_max_abs_diff": 5e-09,
        "fit_seconds": 0.02,
        "components": [
            {"component": 1, "r": 0.8, "p": 0.01, "p_fwe": 0.01, "null_q95": 0.6},
            {"component": 2, "r": 0.4, "p": 0.4, "p_fwe": 0.4, "null_q95": 0.5},
        ],
        "decoded": {
            "n_variates": 1,
            "steps_sd": [-2.0, 0.0, 2.0],
            "metadata": {"task": "motor", "year": 2013},
            "changes": [{"component": 1, "map_r": 0.99, "points_chamfer_mm": 3.5}],
        },
    }
    return CCAResults(**(fields | overrides))


def clustering(**overrides: Any) -> ClusteringResults:
    fields: dict[str, Any] = {
        "n_clusters": 2,
        "noise_fraction": 0.7,
        "n_studies": 40,
        "ari_mean": 0.5,
        "ari_sd": 0.1,
        "ari_clustered_mean": 0.6,
        "ari_clustered_sd": None,
        "bootstrap_ari": [0.4, 0.6, None],
        "bootstrap_ari_clustered": [0.6, None, None],
        "bootstrap_n_clusters": [2, 3, 0],
        "profile": "ci",
        "variant": "cbvae",
        "z_dim": 8,
        "seed": 7,
        "params": PARAMS.clustering,
        "clusters": [
            {"cluster": 0, "name": "C0: motor", "size": 5, "decode_task": "motor", "decode_year": 2011},
            {"cluster": 1, "name": "C1: pain", "size": 7, "decode_task": "pain", "decode_year": 2009},
        ],
        "centroid_maps": [
            "data/results/ci/clustering/centroid_0.nii.gz",
            "data/results/ci/clustering/centroid_1.nii.gz",
        ],
    }
    return ClusteringResults(**(fields | overrides))


def forecasting(**overrides: Any) -> ForecastingResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "variant": "cbvae",
        "cutoff_year": 2016,
        "window": 5,
        "min_studies": 5,
        "note": "Neurosynth v7 stops in 2018.",
        "n_studies_per_year": {2016: 8, 2017: 9, 2018: 6},
        "dropped_years": [],
        "held_out_years_not_scored": [],
        "gru_train_nll": -1.4,
        "frechet_by_year": {
            2017: {"gru": 0.3, "persistence": 0.2, "linear_trend": 0.25},
            2018: {"gru": 0.4, "persistence": 0.3, "linear_trend": 0.35},
        },
        "frechet_mean": {"gru": 0.35, "persistence": 0.25, "linear_trend": 0.3},
        "drift": {"task": "working_memory", "years": [2000, 2018], "n_samples": 8},
    }
    return ForecastingResults(**(fields | overrides))


def probe_row(accuracy: float, new_studies: float | None) -> dict[str, Any]:
    return {
        "balanced_accuracy": accuracy,
        "balanced_accuracy_neurosynth_studies": accuracy - 0.05,
        "balanced_accuracy_new_studies": new_studies,
        "fold_mean": accuracy,
        "fold_sd": 0.05,
        "n": 20,
        "n_neurosynth_studies": 12,
        "n_new_studies": 8,
    }


def ablation_row(change: str, locked: float, ablated: float, verdict: str) -> dict[str, Any]:
    return {
        "change": change,
        "criterion": "reconstruction_r falls by more than 0.01",
        "hypothesis": "h",
        "locked": locked,
        "ablated": ablated,
        "delta": ablated - locked,
        "threshold": -0.01,
        "verdict": verdict,
        "beats_pca": 0.62,
    }


def evaluation(**overrides: Any) -> EvaluationResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "generative_quality": {
            "feature_space": "PCA-8 of training maps (widest kernel)",
            "k": 3,
            "methods": {
                "cbvae": {"precision": 0.5, "recall": 0.4, "frechet_distance": 3.0, "n": 24},
                "cbvae_mixture": {"precision": 0.45, "recall": 0.5, "frechet_distance": 2.5, "n": 24},
                "cbvae_standard_normal": {"precision": 0.6, "recall": 0.1, "frechet_distance": 5.0, "n": 24},
                "cbvae_reconstruction": {"precision": 0.7, "recall": 0.8, "frechet_distance": 1.0, "n": 24},
                "ppca": {"precision": 0.2, "recall": 0.9, "frechet_distance": 4.0, "n": 24},
            },
        },
        "zero_shot_probe": {
            "task": "n-back vs flanker",
            "chance": 0.5,
            "n_analyses": 20,
            "n_studies": 10,
            "n_in_neurosynth": 12,
            "n_in_training": 1,
            "features": {"cbvae": probe_row(0.6, None), "pca": probe_row(0.55, 0.5), "raw_voxels": probe_row(0.7, 0.6)},
        },
        "ablations": {
            "max_epochs": 12,
            "locked": {"reconstruction_r": 0.4651, "beats_pca": 0.62},
            "n_ablations": 2,
            "n_pass": 1,
            "order": ["z_dim_16", "beta_1"],
            "ablations": {
                "beta_1": ablation_row("training.beta: 0.1 -> 1.0", 0.4651, 0.4601, "FAIL"),
                "z_dim_16": ablation_row("model.z_dim: 32 -> 16", 0.4651, 0.4012, "PASS"),
            },
        },
    }
    return EvaluationResults(**(fields | overrides))


def category_method(r: float, identified: float) -> dict[str, float]:
    return {"median_r": r, "mean_r": r - 0.02, "identification_accuracy": identified}


def conditional_atlas(**overrides: Any) -> ConditionalAtlasResults:
    fields: dict[str, Any] = {
        "profile": "ci",
        "variant": "cbvae",
        "split": "test",
        "category_level": {
            "categories": ["emotion", "language", "motor"],
            "min_test_studies": 3,
            "n_test_studies": 11,
            "chance": 1 / 3,
            "mkda_map": "stat",
            "max_averaged": 100,
            "model": category_method(0.45, 2 / 3),
            "sample_average": category_method(0.7, 1.0),
            "training_mean": category_method(0.8, 1.0),
            "mkda": category_method(0.78, 1.0),
            "vs_mkda": paired(-0.33, 3),
            "vs_sample_average": paired(-0.25, 3),
            "vs_training_mean": paired(-0.35, 3),
            "sample_average_vs_mkda": paired(-0.08, 3),
        },
        "counterfactual_size": {
            "generated": 0.95,
            "held_out": 0.5,
            "difference": 0.45,
            "goal_within": 0.1,
            "meets_goal": False,
        },
        "classification_accuracy_score": {
            "classifier": "multinomial logistic regression",
            "n_features": 8,
            "max_per_category": 100,
            "n_train": 42,
            "n_test": 11,
            "chance": 1 / 3,
            "model": 0.3,
            "ridge": 0.4,
            "real": 0.6,
            "model_ratio": 0.5,
            "ridge_ratio": 2 / 3,
            "vs_ridge": {
                "difference": -0.1,
                "difference_ci": [-0.3, 0.1],
                "model_only_correct": 0.1,
                "baseline_only_correct": 0.2,
                "n_studies": 11,
                "n_resamples": 2000,
                "confidence": 0.95,
            },
        },
    }
    return ConditionalAtlasResults(**(fields | overrides))


#: Every stage's results file, one example each.
EXAMPLES = {
    "volumetric": volumetric,
    "pointcloud": pointcloud,
    "ensemble": ensemble,
    "hierarchical": hierarchical,
    "cca": cca,
    "clustering": clustering,
    "forecasting": forecasting,
    "evaluation": evaluation,
    "conditional_atlas": conditional_atlas,
}
