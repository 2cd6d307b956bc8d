"""Typed stage results: files round-trip, bad files are refused naming the file and the key, builders
write what the stages wrote before, and the criteria judge as declared."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from results_examples import EXAMPLES, PARAMS, cca, ensemble, forecasting, volumetric

from sematlas.analysis.results import (
    CCAResults,
    ClusteringResults,
    DecodedVariates,
    ForecastingResults,
    HierarchicalResults,
    Hierarchy,
    LatentDims,
)
from sematlas.core.params import override_params
from sematlas.core.paths import ProfilePaths
from sematlas.core.results import SCHEMA_KEY, ResultsError, StageResults
from sematlas.evaluation.criteria import (
    ECE_GOAL,
    OOD_AUROC_GOAL,
    YEAR_DEBIASING_GOAL,
    Goal,
    ensemble_verdicts,
    sprint_criterion,
)
from sematlas.evaluation.reconstruction import evaluate_run, latents_table, results_table
from sematlas.evaluation.results import (
    EnsembleMethodResults,
    GenerativeQuality,
    VolumetricResults,
    VolumetricTraining,
    ZeroShotProbe,
)
from sematlas.evaluation.trained_run import evaluate_trained_run
from sematlas.pipeline.registry import writer_of


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_results_file_round_trips(name, tmp_path):
    results = EXAMPLES[name]()
    path = results.save(tmp_path / "results.json")
    loaded = type(results).load(path)
    assert loaded == results
    assert results.to_dict() == loaded.to_dict()
    assert path.read_text() == json.dumps(results.to_dict(), indent=2, sort_keys=True) + "\n"  # write_json's layout


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "data" / "results" / "ci" / "cca" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_an_unknown_key_is_refused_naming_the_file_and_the_key(tmp_path):
    data = cca().to_dict()
    path = _write(tmp_path, {**data, "colour": "blue"})
    with pytest.raises(ResultsError, match=rf"{path}: unknown key 'colour'"):
        CCAResults.load(path)
    data["decoded"]["changes"][0]["map_rho"] = 0.9
    path = _write(tmp_path, data)
    with pytest.raises(ResultsError, match=rf"{path}: unknown key 'decoded\.changes\.0\.map_rho'"):
        CCAResults.load(path)


def test_a_missing_key_is_refused_naming_the_file_and_the_key(tmp_path):
    data = cca().to_dict()
    del data["fit_seconds"]
    path = _write(tmp_path, data)
    with pytest.raises(ResultsError, match=rf"{path}: missing key 'fit_seconds'"):
        CCAResults.load(path)
    data = cca().to_dict()
    del data["components"][1]["null_q95"]
    path = _write(tmp_path, data)
    with pytest.raises(ResultsError, match=rf"{path}: missing key 'components\.1\.null_q95'"):
        CCAResults.load(path)


def test_another_schema_version_or_none_is_refused(tmp_path):
    path = _write(tmp_path, {**cca().to_dict(), SCHEMA_KEY: CCAResults.SCHEMA_VERSION + 1})
    with pytest.raises(
        ResultsError, match=rf"{path}: schema version 2, but CCAResults reads version 1: rerun the stage that writes it"
    ):
        CCAResults.load(path)
    data = cca().to_dict()
    del data[SCHEMA_KEY]
    path = _write(tmp_path, data)
    with pytest.raises(ResultsError, match=rf"{path}: missing key 'schema_version'"):
        CCAResults.load(path)


def test_a_value_of_the_wrong_type_is_refused_where_it_is_built():
    with pytest.raises(ResultsError, match=r"VolumetricResults: 'n_studies' must be int, got 'six'"):
        volumetric(n_studies="six")
    with pytest.raises(ResultsError, match=r"'active_units' must be int, got True"):
        volumetric(active_units=True)  # a bool is not a count
    bad = volumetric().to_dict()["reconstruction"]
    bad["pca"]["ssim_median"] = None
    with pytest.raises(ResultsError, match=r"'reconstruction\.pca\.ssim_median' must be float, got None"):
        volumetric(reconstruction=bad)
    with pytest.raises(ResultsError, match=r"'n_studies_per_year' has a key 'late' that is not an integer"):
        forecasting(n_studies_per_year={"late": 3})


def test_the_json_of_a_results_object_is_the_hand_written_file():
    expected = {
        "schema_version": 1,
        "profile": "ci",
        "variant": "cbvae",
        "cutoff_year": 2016,
        "window": 5,
        "min_studies": 5,
        "note": "Neurosynth v7 stops in 2018.",
        "n_studies_per_year": {"2016": 8, "2017": 9, "2018": 6},
        "dropped_years": [],
        "held_out_years_not_scored": [],
        "gru_train_nll": -1.4,
        "frechet_by_year": {
            "2017": {"gru": 0.3, "persistence": 0.2, "linear_trend": 0.25},
            "2018": {"gru": 0.4, "persistence": 0.3, "linear_trend": 0.35},
        },
        "frechet_mean": {"gru": 0.35, "persistence": 0.25, "linear_trend": 0.3},
        "drift": {"task": "working_memory", "years": [2000, 2018], "n_samples": 8},
    }
    results = forecasting()
    assert json.loads(json.dumps(results.to_dict())) == expected
    assert results.frechet_by_year[2017]["gru"] == 0.3  # years are ints in memory, strings only in the file
    assert ForecastingResults.from_dict(expected) == results


def test_numpy_values_are_written_as_write_json_wrote_them(tmp_path):
    from sematlas.core.io import write_json

    decoded = {
        "n_variates": np.int64(1),
        "steps_sd": np.array([-2.0, 0.0, 2.0]),
        "metadata": {"task": "motor", "year": np.int64(2013)},
        "changes": [{"component": 1, "map_r": np.float32(0.99), "points_chamfer_mm": np.float64(3.5)}],
    }
    built = DecodedVariates(**decoded)
    assert built.n_variates == 1 and type(built.n_variates) is int and built.steps_sd == [-2.0, 0.0, 2.0]
    assert built.changes[0].map_r == float(np.float32(0.99))  # float32's value, as tolist() gives it
    assert json.dumps(built.to_dict(), sort_keys=True) == json.dumps(
        json.loads(write_json(decoded, tmp_path / "x.json").read_text()), sort_keys=True
    )


def test_each_file_knows_where_it_lies_and_which_stage_writes_it(tmp_path):
    paths = ProfilePaths("ci", tmp_path)
    assert volumetric("tcvae_sbd").location(paths) == tmp_path / "data/results/ci/tcvae_sbd/test_results.json"
    assert VolumetricResults.path(paths, variant="hvae") == tmp_path / "data/results/ci/hvae/test_results.json"
    # The stage registry names each file's writer; the H-VAE's stage writes its own variant folder.
    assert writer_of(VolumetricResults.path(paths, variant="hvae"), paths).number == "05"
    locations = {
        cls.LOCATION: writer_of(make().location(paths), paths).number
        for cls, make in ((type(make()), make) for make in EXAMPLES.values())
    }
    assert locations == {
        "{variant}/test_results.json": "02",
        "pointcloud/test_results.json": "03",
        "ensemble/test_results.json": "04",
        "hierarchical/results.json": "05",
        "cca/results.json": "06",
        "clustering/results.json": "07",
        "forecasting/results.json": "08",
        "evaluation/evaluation_results.json": "09",
        "evaluation/conditional_atlas.json": "09",
    }
    assert all(issubclass(type(make()), StageResults) for make in EXAMPLES.values())


# ------------------------------------------------------------------ builders: what the notebooks wrote before
def test_hierarchical_results_are_stage_05s_file(tmp_path):
    paths = ProfilePaths("ci", tmp_path)
    evaluation, reference = volumetric("hvae", z_dim=5, year_debiasing=None), volumetric("cbvae", z_dim=5)
    probe = {"balanced_accuracy": 0.2, "chance": 0.1, "n_classes": 10, "n_train": 112, "n_test": 24}
    gate = {"criteria": {"kl_top_active": {"value": 1.0, "threshold": 0.5, "rule": "r", "pass": True}}, "passed": 1}
    correlation = np.array([[0.123456, np.nan, 0.5]])
    profile = pd.DataFrame({"top_00": [0.333333, -0.25]}, index=["motor", "pain"])
    results = HierarchicalResults.from_analysis(
        paths=paths,
        evaluation=evaluation,
        reference=reference,
        top_dim=1,
        gate={**gate, "result": "PASS"},
        kl={"kl_top": 1.0, "kl_lower": 2.0, "n_studies": 6},
        active_units={"top": 1, "lower": 4},
        probes={"top": probe, "lower": probe, "all": probe},
        hierarchy=Hierarchy.from_tables(correlation, profile),
        figures=["hierarchical_structure.png"],
    )
    assert results.to_dict() | {"training": None, "probe": None} == {
        "schema_version": 1,
        "profile": "ci",
        "variant": "hvae",
        "z_dim": 5,
        "top_dim": 1,
        "lower_dim": 4,
        "gate": {**gate, "result": "PASS"},
        "kl_per_level": {"kl_top": 1.0, "kl_lower": 2.0, "n_studies": 6},
        "active_units": {"top": 1, "lower": 4},
        "reconstruction": {
            "hvae_pearson_r_median": 0.41,
            "cbvae_pearson_r_median": 0.41,
            "reference": "data/results/ci/cbvae/test_results.json",
        },
        "probe": None,
        "hierarchy": {
            "top_lower_abs_correlation": [[0.1235, 0.0, 0.5]],
            "category_profile": {"motor": {"top_00": 0.3333}, "pain": {"top_00": -0.25}},
        },
        "training": None,
        "figures": ["figures/ci/hierarchical_structure.png"],
    }
    assert results.probe.method == "logistic regression, train split -> test split, balanced accuracy"
    assert results.probe.top.balanced_accuracy == 0.2 and results.training == evaluation.training


def test_cca_clustering_and_forecasting_builders_read_the_fitted_objects(tmp_path):
    paths = ProfilePaths("ci", tmp_path)
    records = [{"component": 1, "r": 0.7, "p": 0.02, "p_fwe": 0.02, "null_q95": 0.6}]
    fitted = SimpleNamespace(n_components_=1, n_permutations=50, seed=3, results=lambda: records)
    decoded = DecodedVariates(n_variates=0, steps_sd=[-2.0, 0.0, 2.0], metadata={"task": "motor"}, changes=[])
    results = CCAResults.from_fit(
        fitted,
        profile="ci",
        variant="cbvae",
        split="test",
        dims=LatentDims(volumetric=8, pointcloud=4),
        n_studies=24,
        n_components_requested=2,
        sklearn_vs_exact_max_abs_diff=1e-9,
        fit_seconds=0.5,
        decoded=decoded,
    )
    assert results.to_dict()["components"] == records and results.n_components == 1 and results.seed == 3
    assert results.permutation_test.startswith("stepwise shuffled pairing (Winkler et al., 2020)")

    example = EXAMPLES["clustering"]().to_dict()
    statistics = ("n_clusters", "noise_fraction", "n_studies", "ari_mean", "ari_sd", "ari_clustered_mean")
    statistics += ("ari_clustered_sd", "bootstrap_ari", "bootstrap_ari_clustered", "bootstrap_n_clusters")
    summary = {key: example[key] for key in statistics}
    clusters = pd.DataFrame(
        {
            "cluster": [0],
            "name": ["C0"],
            "size": [5],
            "top_topics": [["a"]],
            "decode_task": ["motor"],
            "decode_year": [2011],
        }
    )
    written = [paths.results / "clustering" / "centroid_0.nii.gz"]
    results = ClusteringResults.from_fit(
        SimpleNamespace(summary=lambda: summary),
        paths=paths,
        settings=PARAMS.clustering,
        seed=7,
        z_dim=8,
        clusters=clusters,
        centroid_maps=written,
    )
    assert results.to_dict()["clusters"] == [
        {"cluster": 0, "name": "C0", "size": 5, "decode_task": "motor", "decode_year": 2011}
    ]
    assert results.centroid_maps == ["data/results/ci/clustering/centroid_0.nii.gz"]
    assert results.to_dict()["params"] == PARAMS.clustering.to_dict() and results.standardised is True

    series = SimpleNamespace(
        years=np.array([2015, 2016, 2017]), n=np.array([3, 9, 8]), observed=np.array([False, True, True])
    )
    frechet = pd.DataFrame({"n": [8], "gru": [0.5], "persistence": [0.25]}, index=pd.Index([2017], name="year"))
    forecast = ForecastingResults.from_forecasts(
        profile="ci",
        settings=PARAMS.forecasting,
        series=series,
        frechet=frechet,
        methods=("gru", "persistence"),
        not_scored=[2018],
        gru_train_nll=-1.0,
        note="n",
    )
    assert forecast.n_studies_per_year == {2015: 3, 2016: 9, 2017: 8} and forecast.dropped_years == [2015]
    assert forecast.frechet_by_year == {2017: {"gru": 0.5, "persistence": 0.25}}
    assert forecast.frechet_mean == {"gru": 0.5, "persistence": 0.25}
    assert (
        forecast.drift.task == PARAMS.forecasting.drift_task and forecast.cutoff_year == PARAMS.forecasting.cutoff_year
    )


def test_evaluation_suite_builders_keep_the_tables_row_by_row():
    generation = pd.DataFrame(
        {
            "method": ["cbvae_mixture", "ppca"],
            "precision": [0.5, 0.2],
            "n": np.array([24, 24]),
            "mixture_components": pd.array([3, None], dtype="Int64"),
        }
    )
    quality = GenerativeQuality.from_table(generation, PARAMS.evaluation)
    assert quality.to_dict() == {
        "feature_space": f"PCA-{PARAMS.evaluation.prd_features} of training maps (widest kernel)",
        "k": PARAMS.evaluation.prd_k,
        "methods": {
            "cbvae_mixture": {"precision": 0.5, "n": 24, "mixture_components": 3},
            "ppca": {"precision": 0.2, "n": 24, "mixture_components": None},  # not a mixture: no count
        },
    }
    assert json.loads(json.dumps(quality.to_dict(), default=int))["methods"]["ppca"]["mixture_components"] is None
    probe = pd.DataFrame({"features": ["cbvae"], "balanced_accuracy": [0.6]})
    analyses = pd.DataFrame(
        {"neurostore_study_id": ["a", "a", "b"], "in_neurosynth": [True, False, True], "in_training": [0, 0, 1]}
    )
    assert ZeroShotProbe.from_tables(probe, analyses).to_dict() == {
        "task": "n-back (1) vs flanker (0), NeuroStore 2026-07 studyset",
        "chance": 0.5,
        "n_analyses": 3,
        "n_studies": 2,
        "n_in_neurosynth": 2,
        "n_in_training": 1,
        "features": {"cbvae": {"balanced_accuracy": 0.6}},
    }


def test_a_training_summary_is_the_runs_timing_and_best_validation_values():
    run = SimpleNamespace(
        timing={"train_seconds": 3.0, "epochs": 2, "studies_per_second": 7.5},
        metrics=pd.DataFrame({"val/loss": [3.0, 2.0, 2.5], "val/recon": [1.5, 1.0, 0.5]}),
    )
    assert VolumetricTraining.from_run(run).to_dict() == {
        "train_seconds": 3.0,
        "epochs": 2,
        "studies_per_second": 7.5,
        "best_val_loss": 2.0,
        "best_val_recon": 0.5,
    }
    run.timing["resumed"] = True
    with pytest.raises(ResultsError, match="unknown key 'resumed'"):
        VolumetricTraining.from_run(run)


def test_ensemble_results_record_the_goals_and_the_settings():
    method = EXAMPLES["ensemble"]().methods["snapshot"].to_dict()
    del method["train_seconds"]
    parsed = EnsembleMethodResults.from_evaluation(method, None)
    assert parsed.train_seconds is None and parsed.ood_auroc == {
        "uniform": 0.7,
        "white_matter": 0.9,
        "nimare_synthetic": 0.8,
    }
    results = ensemble()
    assert results.to_dict()["goals"] == {"ece_below": 0.15, "ood_auroc_above": 0.85}
    assert results.to_dict()["settings"] == PARAMS.ensemble.to_dict()
    table = results.table()
    assert list(table.index) == ["snapshot", "mc_dropout"] and table.loc["mc_dropout", "ECE test after"] == 0.16


# ------------------------------------------------------------------ criteria
def test_goals_judge_values_against_their_thresholds():
    assert ECE_GOAL.met(0.149) and not ECE_GOAL.met(0.15) and ECE_GOAL.describe() == "< 0.15"
    assert OOD_AUROC_GOAL.met(0.86) and not OOD_AUROC_GOAL.met(0.85) and OOD_AUROC_GOAL.verdict(0.5) == "MISSES"
    assert YEAR_DEBIASING_GOAL.met(0.15) and not YEAR_DEBIASING_GOAL.met(0.151)
    assert not Goal(1.0, "above").met(float("nan"))


def test_ensemble_verdicts_list_every_measure_against_its_goal():
    verdicts = ensemble_verdicts(ensemble()).set_index(["method", "measure"])
    assert len(verdicts) == 2 * (1 + 3 + 3)  # per method: ECE, AUROC per kind for both scores
    assert verdicts.loc[("snapshot", "test ECE"), "verdict"] == "meets"  # 0.10 < 0.15
    assert verdicts.loc[("mc_dropout", "test ECE"), "verdict"] == "MISSES"  # 0.16
    assert verdicts.loc[("snapshot", "OOD AUROC, disagreement: white_matter"), "verdict"] == "meets"  # 0.9
    assert verdicts.loc[("snapshot", "OOD AUROC, predictive NLL: uniform"), "value"] == pytest.approx(0.3)
    assert set(verdicts["goal"]) == {"< 0.15", "> 0.85"}


def test_sprint_criterion_compares_cbvae_with_baseline():
    results = {v: volumetric(v) for v in ("baseline", "tcvae_sbd")}
    assert sprint_criterion(results).empty
    # The losses are different objectives (a likelihood in nats, a squared error): only the error compares.
    reference = volumetric().training.to_dict()
    better = volumetric("cbvae", training={**reference, "best_val_recon": reference["best_val_recon"] - 1.0})
    table = sprint_criterion({**results, "cbvae": better})
    assert list(table.index) == ["best_val_recon"]
    assert table.loc["best_val_recon"].tolist() == [
        reference["best_val_recon"] - 1.0,
        reference["best_val_recon"],
        "PASS",
    ]
    assert sprint_criterion({**results, "cbvae": volumetric("cbvae")}).loc["best_val_recon", "verdict"] == "FAIL"


# ------------------------------------------------------------------ one evaluate-and-save routine
def test_results_table_lists_each_baseline_once():
    table = results_table({"baseline": volumetric("baseline"), "cbvae": volumetric("cbvae")})
    assert table["label"].tolist() == [
        "reconstruction: baseline",
        "reconstruction: pca",
        "reconstruction: mean_map",
        "conditional generation: baseline",
        "conditional generation: ridge",
        "conditional generation: mlp",
        "conditional generation: mean_map",
        "reconstruction: cbvae",
        "conditional generation: cbvae",
    ]
    assert table.set_index("label").loc["reconstruction: pca", "pearson_r_median"] == 0.52


def _checkpoint(model, datamodule, path: Path) -> Path:
    """A checkpoint of an untrained network, as ``train_variant`` writes one (payload, hyperparameters, weights)."""
    from sematlas.training.module import AtlasModule

    module = AtlasModule(model.config, PARAMS.training, mask=datamodule.brain_mask())
    module.model.load_state_dict(model.state_dict())
    payload = {
        "variant": model.config.variant,
        "voxel_size": datamodule.voxel_size,
        "profile": "ci",
        "metadata_encoder": datamodule.encoder.to_dict(),
    }
    torch.save({"sematlas": payload, "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_evaluate_trained_run_saves_what_the_evaluation_computed(untrained_cbvae, tmp_path):
    model, datamodule = untrained_cbvae
    run = SimpleNamespace(
        best_checkpoint=_checkpoint(model, datamodule, tmp_path / "best.ckpt"),
        timing={"train_seconds": 1.0, "epochs": 1, "studies_per_second": 10.0},
        metrics=pd.DataFrame({"val/loss": [5.0, 4.0], "val/recon": [3.0, 3.5]}),
    )
    params = override_params(
        PARAMS,
        {"evaluation": {"n_prior_samples": 1, "pca_max_train": 100, "estimator_studies": 4, "estimator_samples": 2}},
    )
    paths = ProfilePaths("ci", tmp_path)
    evaluation = evaluate_trained_run(run, datamodule, params, paths)

    folder = paths.results / "cbvae"
    saved = VolumetricResults.load(folder / "test_results.json")
    assert saved == evaluation.results
    expected, per_study = evaluate_run(model, datamodule, "cbvae", params.evaluation, int(params.seed))
    training = {
        "train_seconds": 1.0,
        "epochs": 1,
        "studies_per_second": 10.0,
        "best_val_loss": 4.0,
        "best_val_recon": 3.0,
    }
    assert json.loads((folder / "test_results.json").read_text()) == json.loads(
        json.dumps({SCHEMA_KEY: VolumetricResults.SCHEMA_VERSION, **expected, "training": training})
    )
    latents = latents_table(model, datamodule)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "per_study.parquet"), per_study)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "latents.parquet"), latents)
    pd.testing.assert_frame_equal(evaluation.latents, latents)
    assert evaluation.model.variant == "cbvae" and evaluation.points == {}


def test_evaluate_trained_run_of_the_point_cloud_saves_its_results(processed, tmp_path):
    import shutil

    from sematlas.data.pointcloud import make_datamodule
    from sematlas.evaluation.pointcloud import evaluate_pointcloud, pointcloud_latents
    from sematlas.evaluation.results import PointCloudResults
    from sematlas.inference.pointcloud import PointCloudModel
    from sematlas.training.pointcloud import run_params, train_pointcloud

    params = override_params(PARAMS, {"pointcloud": {"max_epochs": 1, "batch_size": 8}})
    paths = ProfilePaths("ci", tmp_path)
    shutil.copytree(processed, paths.processed)
    run = train_pointcloud(params, paths)
    datamodule = make_datamodule(run_params(params), paths)
    evaluation = evaluate_trained_run(run, datamodule, params, paths)

    saved = PointCloudResults.load(paths.results / "pointcloud" / "test_results.json")
    assert saved == evaluation.results and saved.profile == "ci"
    assert saved.training.best_val_chamfer == float(run.metrics["val/chamfer"].min())
    model = PointCloudModel.load(run.best_checkpoint)
    peaks = pd.read_parquet(paths.processed / "peaks.parquet", columns=["id", "x", "y", "z"])
    expected = evaluate_pointcloud(model, datamodule, peaks, params.evaluation.n_prior_samples, int(params.seed))
    assert {key: value for key, value in saved.to_dict().items() if key in expected.results} == json.loads(
        json.dumps(expected.results)
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(paths.results / "pointcloud" / "per_study.parquet"), expected.per_study
    )
    pd.testing.assert_frame_equal(evaluation.latents, pointcloud_latents(model, datamodule))
    assert evaluation.points.keys() == expected.points.keys()
