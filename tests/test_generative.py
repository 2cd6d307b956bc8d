"""Precision/recall, Fréchet distance and probabilistic PCA against references and known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sematlas.evaluation.baselines import ProbabilisticPCA
from sematlas.evaluation.generative import (
    frechet_distance,
    generative_quality,
    knn_radii,
    mixture_samples,
    precision_recall,
    prior_samples,
    standard_normal_samples,
)
from sematlas.evaluation.reconstruction import latents_table
from sematlas.inference.density import LatentMixture


def test_knn_radii_match_brute_force():
    points = np.random.default_rng(0).normal(size=(30, 4))
    k = 3
    expected = [np.sort(np.linalg.norm(points - p, axis=1))[k] for p in points]
    assert np.allclose(knn_radii(points, k), expected, atol=1e-6)
    with pytest.raises(ValueError, match="more than k=3"):
        knn_radii(points[:3], 3)


def test_identical_sets_have_full_precision_and_recall():
    points = np.random.default_rng(1).normal(size=(50, 5))
    assert precision_recall(points, points.copy()) == {"precision": 1.0, "recall": 1.0}


def test_collapsed_samples_are_precise_but_have_low_recall():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 2))
    # Every generated point sits near the mode: inside the real manifold, covering little of it.
    collapsed = rng.normal(scale=0.05, size=(200, 2))
    scores = precision_recall(real, collapsed)
    assert scores["precision"] > 0.95 and scores["recall"] < 0.2


def test_far_samples_have_zero_precision_and_recall():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(100, 3))
    scores = precision_recall(real, real + 100.0)
    assert scores == {"precision": 0.0, "recall": 0.0}


def test_frechet_distance_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(20000, 2))
    b = rng.normal(loc=[3.0, 0.0], scale=2.0, size=(20000, 2))
    # Isotropic: FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 = 9 + 2 * (1 - 2)^2 = 11.
    assert frechet_distance(a, b) == pytest.approx(11.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_ppca_samples_have_the_data_covariance():
    rng = np.random.default_rng(5)
    loadings = rng.normal(size=(6, 2))
    data = rng.normal(size=(5000, 2)) @ loadings.T + 0.1 * rng.normal(size=(5000, 6)) + 7.0
    samples = ProbabilisticPCA(2).fit(data).sample(20000, seed=1)
    assert np.allclose(samples.mean(0), data.mean(0), atol=0.05)
    assert np.allclose(np.cov(samples, rowvar=False), np.cov(data, rowvar=False), atol=0.15)
    assert np.array_equal(
        ProbabilisticPCA(2).fit(data).sample(5, seed=3), ProbabilisticPCA(2).fit(data).sample(5, seed=3)
    )


def test_generative_quality_ranks_real_maps_above_a_collapsed_generator():
    rng = np.random.default_rng(6)
    basis = rng.normal(size=(3, 400))
    draw = lambda n: rng.normal(size=(n, 3)) @ basis  # noqa: E731
    collapsed = draw(1) + 0.01 * rng.normal(size=(60, 400))
    table = generative_quality(draw(60), draw(200), {"real": draw(60), "collapsed": collapsed}, n_features=8, k=3)
    by = table.set_index("method")
    assert list(table.columns) == ["method", "precision", "recall", "frechet_distance", "n"]
    assert by.loc["real", "frechet_distance"] < by.loc["collapsed", "frechet_distance"]
    assert by.loc["real", "recall"] > 0.8 > 0.2 > by.loc["collapsed", "recall"]


def test_prior_samples_give_one_masked_map_per_study(untrained_cbvae):
    model, datamodule = untrained_cbvae
    first = prior_samples(model, datamodule, "train", seed=0)
    assert first.shape == (datamodule.train_size, int(datamodule.grid.mask().sum()))
    assert torch.equal(first, prior_samples(model, datamodule, "train", seed=0))
    assert not torch.equal(first, prior_samples(model, datamodule, "train", seed=1))


def two_clusters(n: int, seed: int) -> np.ndarray:
    """``n`` points in 3-d around (-5, 0, 0) and (5, 0, 0), half each."""
    rng = np.random.default_rng(seed)
    centres = np.where(np.arange(n)[:, None] % 2 == 0, [-5.0, 0.0, 0.0], [5.0, 0.0, 0.0])
    return centres + rng.normal(size=(n, 3))


def test_the_latent_mixture_chooses_its_size_on_held_out_codes_and_samples_reproducibly():
    mixture = LatentMixture(components=(1, 2), seed=0).fit(two_clusters(400, 0), two_clusters(200, 1))
    assert mixture.n_components == 2
    assert mixture.validation_log_likelihood_[2] > mixture.validation_log_likelihood_[1]
    drawn = mixture.sample(300)
    np.testing.assert_array_equal(drawn, mixture.sample(300))
    # Both clusters, in any prefix: the draws are shuffled out of sklearn's per-component order.
    assert 0.3 < (drawn[:100, 0] > 0).mean() < 0.7
    typical, atypical = mixture.log_density(np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert typical > atypical + 5
    with pytest.raises(ValueError, match="more training codes than components"):
        LatentMixture(components=(4,)).fit(two_clusters(4, 0), two_clusters(4, 1))


def test_mixture_and_standard_normal_samples_decode_maps_of_a_conditional_model(untrained_cbvae):
    model, datamodule = untrained_cbvae
    latents = latents_table(model, datamodule, splits=["train", "val"])
    n_voxels = int(datamodule.grid.mask().sum())
    maps, mixture = mixture_samples(model, datamodule, latents, 5, seed=0)
    assert maps.shape == (5, n_voxels) and mixture.n_components >= 1
    # The mixture is over [z, m]: the code and its metadata vector.
    assert mixture.mixture_.means_.shape[1] == model.config.z_dim + model.config.meta_dim
    again, _ = mixture_samples(model, datamodule, latents, 5, seed=0)
    torch.testing.assert_close(maps, again)
    standard = standard_normal_samples(model, datamodule, "test", seed=0)
    assert standard.shape == (len(datamodule.tables["test"]), n_voxels)
    assert torch.isfinite(standard).all()
