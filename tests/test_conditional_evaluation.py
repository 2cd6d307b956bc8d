"""The conditional atlas's measurements against hand-computed references, NiMARE's MKDA on synthetic studies,
the MLP baseline, and the whole evaluation of a tiny model saved and read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from sematlas.core.grid import Grid
from sematlas.core.paths import ProfilePaths
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.baselines import MLPBaseline, mkda_map
from sematlas.evaluation.cas import accuracy_comparison, classification_accuracy_score, meta_rows, per_category_sample
from sematlas.evaluation.conditional import (
    category_level,
    category_means,
    correlation_matrix,
    counterfactual_size,
    evaluate_conditional_atlas,
    evaluated_categories,
    identification,
)


def _maps(n: int, n_voxels: int = 400, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, n_voxels))


# ------------------------------------------------------------------ category maps
def test_category_means_and_the_categories_measured():
    maps = np.arange(12.0).reshape(4, 3)
    labels = np.array(["a", "b", "a", "c"])
    np.testing.assert_allclose(category_means(maps, labels, ["a", "c"]), [[3.0, 4.0, 5.0], [9.0, 10.0, 11.0]])
    test = ["a"] * 10 + ["b"] * 9 + ["other"] * 12 + ["d"] * 10
    train = ["a", "b", "other"]
    # b has too few held-out studies, other is not a task, d has no training studies.
    assert evaluated_categories(test, train, ["a", "b", "d", "other"]) == ["a"]
    assert evaluated_categories(test, train, ["b", "a"], min_test_studies=9) == ["b", "a"]


def test_correlation_matrix_is_numpy_s_and_undefined_for_a_constant_map():
    a, b = _maps(3), _maps(4, seed=1)
    np.testing.assert_allclose(correlation_matrix(a, b), np.corrcoef(a, b)[:3, 3:])
    r = correlation_matrix(np.ones((1, 400)), b)
    assert np.isnan(r).all()


def test_a_perfect_generator_identifies_every_category_and_a_constant_one_at_most_one():
    held_out = _maps(5)
    noisy = held_out + 0.1 * _maps(5, seed=2)
    assert (identification(held_out, held_out) == np.arange(5)).all()
    assert (identification(noisy, held_out) == np.arange(5)).all()
    # One map for every category matches one held-out map: at most 1 / n_categories.
    constant = np.repeat(_maps(1, seed=3), 5, axis=0)
    best = identification(constant, held_out)
    assert len(set(best)) == 1 and (best == np.arange(5)).mean() == pytest.approx(1 / 5)
    # A flat map correlates with nothing: identified nowhere.
    assert (identification(np.ones((5, 400)), held_out) == -1).all()


def test_category_level_reports_each_method_and_compares_the_model_with_each_baseline():
    categories = ["a", "b", "c", "d"]
    held_out = _maps(4)
    shuffled = held_out[[1, 0, 2, 3]]
    methods = {"model": held_out + 0.5 * _maps(4, seed=1), "mkda": held_out, "shuffled": shuffled}
    summary, table = category_level(categories, held_out, methods, seed=0)
    r_model = np.diag(np.corrcoef(methods["model"], held_out)[:4, 4:])
    np.testing.assert_allclose(table["r_model"], r_model)
    assert summary["model"]["median_r"] == pytest.approx(np.median(r_model))
    assert summary["mkda"] == {
        "median_r": pytest.approx(1.0),
        "mean_r": pytest.approx(1.0),
        "identification_accuracy": 1,
    }
    # Two categories' maps swapped: each matches the other's held-out map.
    assert table["match_shuffled"].tolist() == ["b", "a", "c", "d"]
    assert summary["shuffled"]["identification_accuracy"] == 0.5
    vs_mkda = summary["vs_mkda"]
    assert vs_mkda.median_difference == pytest.approx(np.median(r_model) - 1.0) and vs_mkda.n_studies == 4
    assert vs_mkda.win_rate == 0 and vs_mkda.model_is_worse
    assert set(summary) == {"model", "mkda", "shuffled", "vs_mkda", "vs_shuffled"}


def test_counterfactual_size_of_identical_maps_is_one_and_otherwise_the_median_pairwise_r():
    assert counterfactual_size(np.repeat(_maps(1), 4, axis=0)) == pytest.approx(1.0)
    maps = _maps(4)
    r = np.corrcoef(maps)
    assert counterfactual_size(maps) == pytest.approx(np.median(r[np.triu_indices(4, k=1)]))


# ------------------------------------------------------------------ classification accuracy score
def _separable(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
    """Three classes of maps, each its own pattern plus noise; the metadata is the class one-hot."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(99).random((3, 300))
    labels = np.repeat(np.array(["a", "b", "c"]), n_per_class)
    codes = np.repeat(np.arange(3), n_per_class)
    maps = patterns[codes] + 0.3 * rng.standard_normal((len(codes), 300))
    one_hot = torch.from_numpy(np.eye(3)[codes]).float()
    meta = {"cond": one_hot, "sparse": torch.zeros(len(codes), 1), "sparse_mask": torch.zeros(len(codes), 1)}
    return maps, labels, meta


def _pattern_generator(meta: dict[str, torch.Tensor]) -> np.ndarray:
    """A faithful, varied generator: the class pattern of each study's one-hot, plus fresh noise."""
    patterns = np.random.default_rng(99).random((3, 300))
    codes = meta["cond"].argmax(1).numpy()
    return patterns[codes] + 0.3 * np.random.default_rng(7).standard_normal((len(codes), 300))


def test_the_classification_accuracy_score_of_separable_classes():
    train_maps, train_labels, train_meta = _separable(40, seed=0)
    test_maps, test_labels, _ = _separable(10, seed=1)
    rows = per_category_sample(train_labels, ["a", "b", "c"], 25, seed=0)
    samples = _pattern_generator(meta_rows(train_meta, rows))
    args = (train_maps, train_labels, train_meta, test_maps, test_labels, ["a", "b", "c"], rows)
    summary, table = classification_accuracy_score(
        *args, samples, seed=0, pca_max_train=100, n_features=8, max_per_category=25
    )
    assert summary["real"] == 1.0 and summary["model"] == 1.0 and summary["model_ratio"] == 1.0
    assert summary["ridge"] == 1.0  # ridge from the one-hot predicts each class's mean map
    assert (summary["n_train"], summary["n_test"], summary["n_features"], summary["chance"]) == (75, 30, 8, 1 / 3)
    assert table["category"].tolist() == test_labels.tolist() and table["row"].tolist() == list(range(30))
    # A generator that ignores the metadata gives one class to the classifier: chance.
    flat = np.repeat(samples[:1], len(samples), axis=0)
    ignored, _ = classification_accuracy_score(
        *args, flat, seed=0, pca_max_train=100, n_features=8, max_per_category=25
    )
    assert ignored["model"] == pytest.approx(1 / 3) and ignored["vs_ridge"].difference == pytest.approx(-2 / 3)


def test_per_category_sample_caps_each_category():
    labels = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 3)
    rows = per_category_sample(labels, ["a", "b"], 3, seed=0)
    assert (np.diff(rows) > 0).all() and pd.Series(labels[rows]).value_counts().to_dict() == {"a": 3, "b": 2}
    np.testing.assert_array_equal(rows, per_category_sample(labels, ["a", "b"], 3, seed=0))


def test_accuracy_comparison_against_hand_computed_balanced_accuracies():
    labels = np.array(["a", "a", "a", "b"])
    model = np.array(["a", "a", "b", "b"])  # recalls 2/3 and 1: BA 5/6
    baseline = np.array(["a", "a", "a", "a"])  # recalls 1 and 0: BA 1/2
    comparison = accuracy_comparison(labels, model, baseline, seed=0)
    assert comparison.difference == pytest.approx(5 / 6 - 1 / 2)
    assert comparison.model_only_correct == 0.25 and comparison.baseline_only_correct == 0.25
    low, high = comparison.difference_ci
    assert low <= comparison.difference <= high and comparison.n_studies == 4
    same = accuracy_comparison(labels, model, model, seed=0)
    assert same.difference == 0 and same.difference_ci == [0.0, 0.0]
    # Always right against always wrong: a difference of 1 on every resample.
    assert accuracy_comparison(labels, labels, np.array(["c"] * 4), seed=0).difference_ci == [1.0, 1.0]


# ------------------------------------------------------------------ baselines
def _linear_maps(n: int, n_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    metadata = rng.standard_normal((n, 4))
    return metadata, metadata @ rng.standard_normal((4, n_voxels)) + 0.01 * rng.standard_normal((n, n_voxels))


def test_the_mlp_baseline_predicts_maps_through_the_pca_of_the_training_maps():
    metadata, maps = _linear_maps(80, 300)
    mlp = MLPBaseline(seed=0).fit(metadata, maps)
    assert mlp.pca_.pca_.n_components_ == 79  # min(256, n_train - 1)
    predicted = mlp.predict(metadata[:10])
    assert predicted.shape == (10, 300)
    # Inside the span of the training maps' components.
    assert np.abs(predicted - mlp.pca_.reconstruct(predicted)).max() < 1e-8
    # Enough studies to learn a map that depends on the metadata alone.
    metadata, maps = _linear_maps(400, 40)
    predicted = MLPBaseline(seed=0).fit(metadata, maps).predict(metadata[:10])
    assert np.diag(correlation_matrix(predicted, maps[:10])).min() > 0.9


def test_mkda_of_synthetic_studies_peaks_at_their_shared_focus():
    grid = Grid(4)
    focus = np.array([38.0, -22.0, 54.0])
    rng = np.random.default_rng(0)
    rows = []
    for study in range(6):
        rows.append({"id": f"s{study}", "x": focus[0], "y": focus[1], "z": focus[2]})
        jitter = focus + rng.normal(0, 3, 3)
        rows.append({"id": f"s{study}", "x": jitter[0], "y": jitter[1], "z": jitter[2]})
        elsewhere = np.array([-40.0, 20.0, 0.0]) + rng.uniform(-30, 30, 3)
        rows.append({"id": f"s{study}", "x": elsewhere[0], "y": elsewhere[1], "z": elsewhere[2]})
    peaks = pd.DataFrame(rows)
    density = mkda_map(peaks, [f"s{study}" for study in range(5)], grid)
    mask = grid.mask()
    assert density.shape == (int(mask.sum()),)
    # Every one of the five studies' 10 mm spheres covers the focus: the statistic there counts them all,
    # and the voxels it does so at lie around the focus.
    xyz = np.argwhere(mask) * grid.voxel_size + grid.affine[:3, 3]
    nearest = np.argmin(np.linalg.norm(xyz - focus, axis=1))
    top = density == density.max()
    assert density.max() == pytest.approx(5.0) and top[nearest]
    assert np.linalg.norm(xyz[top].mean(0) - focus) < 4.0 and np.linalg.norm(xyz[top] - focus, axis=1).max() <= 14.0


def test_the_category_map_figure_cuts_every_map_of_a_row_through_the_held_out_peak():
    import matplotlib

    matplotlib.use("Agg")
    from sematlas.reporting.plotting import plot_category_maps

    mask = np.zeros((6, 7, 5), dtype=bool)
    mask[1:5, 1:6, 1:4] = True
    held_out = np.zeros((*mask.shape, 3))
    held_out[mask] = _maps(3, int(mask.sum())).T
    maps = {"held_out": held_out, "model": held_out[..., ::-1], "mkda": 5 * held_out}
    table = pd.DataFrame({"category": ["a", "b", "c"], "r_model": [0.1, 1.0, 0.3], "r_mkda": [1.0, 1.0, 1.0]})
    fig = plot_category_maps(maps, ["a", "b", "c"], shown=("c", "x", "a"), table=table, labels={"model": "m"})
    assert len(fig.axes) == 2 * 9  # two rows (c, a), three slices of three maps
    assert [ax.get_title() for ax in fig.axes[:9] if ax.get_title()] == ["held_out", "m (r = 0.30)", "mkda (r = 1.00)"]
    assert fig.axes[0].get_ylabel() == "c"
    # The MKDA map of c, five times the held-out one, shows the same slices at its own scale.
    np.testing.assert_allclose(fig.axes[6].get_images()[0].get_array(), 5 * fig.axes[0].get_images()[0].get_array())


# ------------------------------------------------------------------ the whole evaluation
@pytest.fixture
def two_categories(processed: Path, tmp_path: Path) -> NeurosynthDataModule:
    """The NiMARE sample with every split's studies alternately emotion and pain studies."""
    folder = tmp_path / "processed"
    shutil.copytree(processed, folder)
    studies = pd.read_parquet(folder / "studies.parquet")
    order = studies.groupby("subset_split").cumcount().to_numpy()
    studies["task_category"] = np.where(order % 2 == 0, "emotion", "pain")
    studies.to_parquet(folder / "studies.parquet")
    datamodule = NeurosynthDataModule(folder, batch_size=4)
    datamodule.setup()
    return datamodule


def test_evaluate_conditional_atlas_measures_and_saves_a_tiny_model(untrained_cbvae, two_categories, tmp_path):
    model, _ = untrained_cbvae
    peaks = pd.read_parquet(two_categories.processed_dir / "peaks.parquet")
    evaluation = evaluate_conditional_atlas(
        model, two_categories, None, peaks, seed=0, profile="ci", variant="cbvae", pca_max_train=100, n_features=4
    )
    results = evaluation.results
    level = results.category_level
    n_test = len(two_categories.tables["test"])
    # Too few held-out studies for 10 a category: measured at the second-largest count.
    assert level.categories == ["emotion", "pain"] and level.min_test_studies == n_test // 2
    assert level.n_test_studies == n_test and level.chance == 0.5
    assert evaluation.categories["category"].tolist() == ["emotion", "pain"]
    assert {name: m.shape for name, m in evaluation.maps.items()} == {
        name: (2, int(two_categories.grid.mask().sum()))
        for name in ("held_out", "model", "sample_average", "training_mean", "mkda")
    }
    # The averaged map is the category mean of the CAS's samples: as many as the classifiers train on.
    assert results.category_level.max_averaged == 100 and results.classification_accuracy_score.n_train == len(
        two_categories.tables["train"]
    )
    assert evaluation.categories.filter(like="r_").columns.tolist() == [
        "r_model",
        "r_sample_average",
        "r_training_mean",
        "r_mkda",
    ]
    test_maps = two_categories.all_images("test")[:, -1].double().numpy()
    labels = two_categories.tables["test"].studies["task_category"].to_numpy(dtype=str)
    np.testing.assert_allclose(evaluation.maps["held_out"][0], test_maps[labels == "emotion"].mean(0), rtol=1e-6)
    cas = results.classification_accuracy_score
    assert cas.n_test == n_test and 0 <= cas.model <= 1 and 0 <= cas.real <= 1
    assert evaluation.classifications["id"].tolist() == two_categories.tables["test"].studies["id"].tolist()
    assert -1 <= results.counterfactual_size.generated <= 1

    paths = ProfilePaths("ci", tmp_path)
    saved = evaluation.save(paths, two_categories.grid)
    assert saved == paths.results / "evaluation" / "conditional_atlas.json"
    # One 4-D MNI152 image per method: volume k is category k, its brain voxels the map's values.
    mask = two_categories.grid.mask()
    for method, rows in evaluation.maps.items():
        image = nib.load(ConditionalAtlasResults.map_file(paths, method))
        assert image.shape == (*mask.shape, 2) and int(image.header["sform_code"]) == 4
        volumes = np.asarray(image.dataobj)
        np.testing.assert_allclose(volumes[mask].T, rows, rtol=1e-6)
        assert not volumes[~mask].any()
    # As written (a ratio to a ceiling of 0 is NaN on so few studies, and NaN equals nothing).
    assert json.dumps(ConditionalAtlasResults.load(saved).to_dict()) == json.dumps(results.to_dict())
    pd.testing.assert_frame_equal(
        pd.read_parquet(saved.with_name("conditional_atlas_categories.parquet")), evaluation.categories
    )
    assert len(pd.read_parquet(saved.with_name("conditional_atlas_cas.parquet"))) == n_test
