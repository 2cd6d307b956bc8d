"""Stage 06: CCA between latent spaces, its stepwise permutation test and the decoding directions."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sematlas.analysis.cca import (
    LatentCCA,
    canonical_correlations,
    clip_components,
    neutral_metadata,
    paired_latents,
    permutation_p_values,
    stepwise_permutation_null,
    write_maps,
)


def shared_views(n: int, p: int, q: int, k: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two views that share ``k`` latent factors (mixed into correlated units), plus independent noise."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, k))
    x = factors @ rng.standard_normal((k, p)) + noise * rng.standard_normal((n, p))
    y = factors @ rng.standard_normal((k, q)) + noise * rng.standard_normal((n, q))
    return x * rng.uniform(0.1, 10, p) + rng.normal(0, 5, p), y  # arbitrary unit scales and offsets


def independent_views(n: int, p: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)), rng.standard_normal((n, q))


def test_planted_shared_signal_is_found_and_noise_components_are_not():
    x, y = shared_views(n=120, p=10, q=6, k=2, noise=1.0, seed=0)
    cca = LatentCCA(n_components=4, n_permutations=199, seed=0).fit(x, y)
    assert cca.correlations_[0] > 0.7
    assert cca.p_values_[:2].max() < 0.05
    assert cca.p_fwe_[2:].min() > 0.05
    assert np.all(np.diff(cca.p_fwe_) >= 0) and np.all(cca.p_fwe_ >= cca.p_values_)
    assert cca.null_.shape == (199, 4)


def test_null_components_give_roughly_uniform_p_values():
    # Independent views: the first component is null. One planted factor: the second is null, and
    # only the stepwise null keeps it so (a plain permutation null of the 2nd correlation rejects
    # ~30% of the time at 5% in this setting; Winkler et al., 2020).
    independent, after_planted = [], []
    for seed in range(40):
        x, y = independent_views(n=60, p=6, q=4, seed=seed)
        independent.append(LatentCCA(n_components=1, n_permutations=99, seed=seed).fit(x, y).p_values_[0])
        x, y = shared_views(n=100, p=8, q=6, k=1, noise=1.0, seed=seed)
        after_planted.append(LatentCCA(n_components=2, n_permutations=99, seed=seed).fit(x, y).p_values_[1])
    for p in (np.array(independent), np.array(after_planted)):
        assert 0.3 < p.mean() < 0.7
        assert (p < 0.05).mean() <= 0.15


def test_exact_canonical_correlations_match_sklearn_fit():
    x, y = shared_views(n=150, p=32, q=16, k=3, noise=1.5, seed=1)
    cca = LatentCCA(n_components=8, n_permutations=10, seed=0).fit(x, y)
    exact = canonical_correlations(cca.scalers_[0].transform(x), cca.scalers_[1].transform(y))
    np.testing.assert_allclose(cca.correlations_, exact[:8], atol=1e-7)
    # Correlations do not depend on the units of either view.
    np.testing.assert_allclose(canonical_correlations(x, y), exact, atol=1e-10)


def test_stepwise_null_on_unpermuted_data_is_the_observed_correlation():
    x, y = shared_views(n=80, p=6, q=5, k=2, noise=1.0, seed=2)
    exact = canonical_correlations(x, y)
    null = stepwise_permutation_null(x, y, n_components=3, n_permutations=50, seed=0)
    # Each component's null is a first canonical correlation of smaller spaces: bounded by 1, and the
    # permutations rarely reach the planted components.
    assert null.max() <= 1.0
    assert (null[:, 0] >= exact[0]).mean() < 0.05
    with pytest.raises(ValueError, match="exceeds"):
        stepwise_permutation_null(x, y, n_components=6, n_permutations=5, seed=0)


def test_permutations_are_seeded():
    x, y = independent_views(n=40, p=5, q=4, seed=3)
    a = LatentCCA(n_components=3, n_permutations=50, seed=7).fit(x, y)
    b = LatentCCA(n_components=3, n_permutations=50, seed=7).fit(x, y)
    c = LatentCCA(n_components=3, n_permutations=50, seed=8).fit(x, y)
    np.testing.assert_array_equal(a.null_, b.null_)
    np.testing.assert_array_equal(a.p_values_, b.p_values_)
    assert not np.array_equal(a.null_, c.null_)


def test_p_values_count_the_observed_pairing():
    null = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    p, p_fwe = permutation_p_values(np.array([0.9, 0.35]), null)
    np.testing.assert_allclose(p, [1 / 5, 4 / 5])
    np.testing.assert_allclose(p_fwe, [1 / 5, 4 / 5])
    p, p_fwe = permutation_p_values(np.array([0.4, 0.9]), null)
    np.testing.assert_allclose(p, [3 / 5, 1 / 5])
    np.testing.assert_allclose(p_fwe, [3 / 5, 3 / 5])


def test_n_components_is_clipped_with_a_warning(caplog):
    x, y = independent_views(n=30, p=5, q=3, seed=4)
    cca = LatentCCA(n_components=8, n_permutations=10).fit(x, y)
    assert cca.n_components_ == 3 and len(cca.correlations_) == 3 and cca.structure_[1].shape == (3, 3)
    clipped = [(r.levelname, r.getMessage()) for r in caplog.records if "clipped" in r.getMessage()]
    assert clipped == [("WARNING", "n_components=8 clipped to 3 (latent dims 5 and 3, 30 studies)")]
    assert clip_components(5, n_studies=3, x_dim=8, y_dim=4) == 2
    assert clip_components(2, n_studies=30, x_dim=8, y_dim=4) == 2
    assert caplog.text.count("clipped") == 2  # the fit's and 5 -> 2; asking for 2 of 2 warns of nothing
    with pytest.raises(ValueError, match="at least 1"):
        clip_components(0, n_studies=30, x_dim=8, y_dim=4)


@pytest.mark.parametrize("view", [0, 1])
def test_latent_path_follows_the_canonical_variate(view):
    x, y = shared_views(n=100, p=7, q=5, k=2, noise=1.0, seed=5)
    cca = LatentCCA(n_components=3, n_permutations=10).fit(x, y)
    codes = (x, y)[view]
    steps = [-2.0, 0.0, 1.0, 2.0]
    for component in range(3):
        path = cca.latent_path(view, component, steps)
        assert path.shape == (4, codes.shape[1])
        np.testing.assert_allclose(path[1], codes.mean(0))
        # Along one line through the mean code ...
        offsets = path - codes.mean(0)
        np.testing.assert_allclose(offsets[3], 2 * offsets[2])
        np.testing.assert_allclose(offsets[0], -offsets[3])
        # ... the expected code of a study whose variate is t SD from the mean: its score on the
        # variate is exactly t SD, and it has zero score on the other variates (uncorrelated).
        scores = cca.transform(view, path)
        sd = cca.scores_[view][:, component].std()
        np.testing.assert_allclose(scores[:, component], np.array(steps) * sd, atol=1e-8)
        np.testing.assert_allclose(np.delete(scores, component, axis=1), 0.0, atol=1e-8)
    np.testing.assert_allclose(cca.transform(view, codes), cca.scores_[view], atol=1e-8)


def test_structure_signs_and_shared_dimensions_table():
    x, y = shared_views(n=100, p=7, q=5, k=2, noise=1.0, seed=6)
    cca = LatentCCA(n_components=2, n_permutations=20).fit(x, y)
    structure = cca.structure_[0]
    assert np.all(structure[np.abs(structure).argmax(0), [0, 1]] > 0)
    assert np.all(cca.correlations_ > 0)
    names = ([f"z_{i:02d}" for i in range(7)], [f"z_{i:02d}" for i in range(5)])
    table = cca.shared_dimensions(names, top=3)
    assert len(table) == 2 * 2 * 3
    assert list(table.columns) == ["component", "r", "p", "p_fwe", "view", "rank", "unit", "structure", "weight"]
    first = table[(table["component"] == 1) & (table["view"] == "pointcloud")]
    assert first["structure"].abs().is_monotonic_decreasing
    assert first["unit"].iloc[0] == names[1][np.abs(cca.structure_[1][:, 0]).argmax()]


def test_paired_latents_joins_the_held_out_split_on_id():
    volumetric = pd.DataFrame(
        {"id": ["3", "1", "2", "4"], "split": ["test", "test", "train", "test"], "z_00": [3.0, 1.0, 2.0, 4.0]}
    ).assign(z_01=0.0, logvar_mean=-1.0)
    pointcloud = pd.DataFrame({"id": ["1", "3", "5"], "split": "test", "z_00": [10.0, 30.0, 50.0], "logvar_mean": 0.0})
    x, y = paired_latents(volumetric, pointcloud)
    assert list(x.index) == ["1", "3"] and list(y.index) == ["1", "3"]
    assert list(x.columns) == ["z_00", "z_01"] and list(y.columns) == ["z_00"]
    np.testing.assert_array_equal(x["z_00"], [1.0, 3.0])
    np.testing.assert_array_equal(y["z_00"], [10.0, 30.0])


def test_neutral_metadata_and_map_writing(tmp_path):
    studies = pd.DataFrame(
        {"task_category": ["pain", "motor", "pain", "motor", "emotion"], "year": [2001, 2010, 2012, 2014, 2018]}
    )
    assert neutral_metadata(studies) == {"task": "motor", "year": 2012}
    image = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([4.0, 4.0, 4.0, 1.0]))
    (path,) = write_maps({"variate_1_plus": image}, tmp_path)
    assert path.name == "variate_1_plus.nii.gz" and gzip.open(path).read(4)
    np.testing.assert_array_equal(nib.load(path).get_fdata(), image.get_fdata())
