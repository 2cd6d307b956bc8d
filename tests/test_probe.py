"""The zero-shot probe: curation of the NeuroStore analyses, overlap flags, grouped CV, rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sematlas.core.grid import Grid
from sematlas.core.params import load_params
from sematlas.evaluation.probe import (
    flag_neurosynth_overlap,
    grouped_probe,
    neutral_metadata,
    probe_analyses,
    render_analyses,
)


@pytest.fixture(scope="module")
def analyses():
    return probe_analyses(load_params("ci")["curation"])


def test_analyses_are_curated_like_neurosynth_studies(analyses):
    table, peaks = analyses
    curation = load_params("ci")["curation"]
    assert table["n_peaks"].min() >= curation["min_peaks"]
    assert set(table["comparison_task"]) == {"n-back", "flanker"}
    assert (table["label"] == (table["comparison_task"] == "n-back")).all()
    assert table["id"].is_unique and set(peaks["id"]) == set(table["id"])
    # Every kept peak lies on the validation grid.
    grid = Grid(curation["validation_voxel_size"])
    assert grid.contains(grid.mm_to_voxel(peaks[["x", "y", "z"]].to_numpy())).all()
    # The bundled studyset: 905 analyses of 320 studies before curation.
    assert 600 < len(table) <= 905 and table["neurostore_study_id"].nunique() <= 320


def test_overlap_flags_find_neurosynth_studies_by_title(analyses):
    from sematlas.data.samplesize import load_neurostore_sample_sizes

    table, _ = analyses
    reference = load_neurostore_sample_sizes()
    first = reference.loc[reference["neurostore_study_id"] == table["neurostore_study_id"].iloc[0]].iloc[0]
    neurosynth = pd.DataFrame(
        {"id": ["111", "222"], "title": [first["title"], "An unrelated study of nothing"], "doi": [None, None]}
    )
    flagged = flag_neurosynth_overlap(table, neurosynth, training_ids={"111"})
    same_study = flagged["neurostore_study_id"] == first["neurostore_study_id"]
    assert flagged.loc[same_study, "in_neurosynth"].all() and flagged.loc[same_study, "in_training"].all()
    assert not flagged.loc[~same_study, "in_neurosynth"].any()
    untrained = flag_neurosynth_overlap(table, neurosynth, training_ids={"222"})
    assert not untrained["in_training"].any()


def test_grouped_probe_keeps_studies_in_one_fold_and_learns_a_separable_task():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    features = rng.normal(size=(120, 5))
    features[:, 0] += 4 * labels
    result = grouped_probe(features, labels, groups, n_splits=5, seed=0)
    assert result["balanced_accuracy"] > 0.95 and result["predictions"].shape == (120,)
    noise = grouped_probe(rng.normal(size=(120, 5)), labels, groups, n_splits=5, seed=0)
    assert noise["balanced_accuracy"] < 0.75


def test_grouped_probe_cannot_use_study_identity():
    """Labels constant within a study, features that only identify the study: nothing to learn across folds."""
    groups = np.repeat(np.arange(30), 4)
    labels = np.repeat(np.arange(30) % 2, 4)
    identity = np.eye(30)[groups]
    assert grouped_probe(identity, labels, groups, n_splits=5, seed=0)["balanced_accuracy"] < 0.7


def test_rendered_analyses_have_their_peaks_at_the_maximum(analyses):
    table, peaks = analyses
    grid = Grid(4)
    one = table.iloc[[0]]
    maps = render_analyses(one, peaks, grid, (6.0, 12.0), 4.0)
    assert maps.shape == (1, 2, *grid.shape) and float(maps.max()) == pytest.approx(1.0)
    ijk = grid.mm_to_voxel(peaks.loc[peaks["id"] == one["id"].iloc[0], ["x", "y", "z"]].to_numpy())
    hottest = np.unravel_index(int(torch.argmax(maps[0, 0])), grid.shape)
    assert min(np.abs(ijk - np.array(hottest)).sum(1)) <= 1


def test_neutral_metadata_hides_the_task(analyses):
    from sematlas.core.metadata import MetadataEncoder

    table, _ = analyses
    studies = pd.DataFrame(
        {
            "task_category": ["working_memory", "other"],
            "year": [2000, 2010],
            "n_peaks": [10, 20],
            "space": ["MNI", "TAL"],
            "sample_size": [20.0, np.nan],
        }
    )
    encoder = MetadataEncoder(
        categories=["working_memory", "other"], year_bin_edges=list(range(1996, 2020, 2)), inputs="category"
    ).fit(studies)
    meta = neutral_metadata(encoder, table.iloc[:4])
    assert (meta["task"] == 1).all() and not meta["sparse_mask"].any()
    assert torch.equal(meta["cond"][:, :2], torch.tensor([[0.0, 1.0]]).repeat(4, 1))


def test_wide_features_give_the_same_predictions_as_the_direct_fit():
    """The row-space rotation used when features outnumber rows must not change the L2 logistic fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 2)
    labels = np.repeat(np.arange(20) % 2, 2)
    features = rng.normal(size=(40, 300)) + labels[:, None] * rng.normal(size=300) * 0.3
    result = grouped_probe(features, labels, groups, n_splits=4, C=0.5, seed=0)
    direct = np.zeros(40, dtype=int)
    for train, test in StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=0).split(features, labels, groups):
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression(C=0.5, max_iter=5000, class_weight="balanced", tol=1e-8)
        model.fit(scaler.transform(features[train]), labels[train])
        direct[test] = model.predict(scaler.transform(features[test]))
    assert np.array_equal(result["predictions"], direct)


def test_row_space_coordinates_preserve_inner_products_with_the_rows():
    from sematlas.evaluation.probe import row_space_coordinates

    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(12, 80)), rng.normal(size=(5, 80))
    train_coords, test_coords = row_space_coordinates(train, test)
    assert train_coords.shape == (12, 12) and test_coords.shape == (5, 12)
    # An orthonormal basis of the row space keeps every inner product with a training row.
    assert np.allclose(train_coords @ train_coords.T, train @ train.T, atol=1e-8)
    assert np.allclose(test_coords @ train_coords.T, test @ train.T, atol=1e-8)
