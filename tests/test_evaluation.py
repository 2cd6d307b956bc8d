"""Metric definitions against plain references, and a whole evaluation of a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sematlas.evaluation.baselines import PCABaseline
from sematlas.evaluation.metrics import balanced_accuracy, masked_pearson, ssim3d, unmask
from sematlas.evaluation.reconstruction import evaluate_run


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 300)), rng.random((5, 300))
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)]
    assert np.allclose(masked_pearson(torch.tensor(a), torch.tensor(b)).numpy(), expected, atol=1e-6)
    assert torch.isnan(masked_pearson(torch.ones(1, 10), torch.rand(1, 10))).all()


def test_ssim_is_one_for_identical_maps_and_drops_with_noise():
    mask = torch.zeros(12, 12, 12, dtype=torch.bool)
    mask[2:10, 2:10, 2:10] = True
    x = torch.rand(2, 12, 12, 12)
    assert torch.allclose(ssim3d(x, x, mask), torch.ones(2), atol=1e-5)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim3d(noisy, x, mask) < 0.9).all()


def test_unmask_inverts_masking():
    mask = torch.rand(4, 5, 6) > 0.5
    volume = torch.rand(3, 4, 5, 6) * mask
    assert torch.equal(unmask(volume[:, mask], mask), volume)


def test_pca_with_full_rank_reconstructs_the_training_maps():
    maps = np.random.default_rng(1).random((20, 50))
    pca = PCABaseline(n_components=19).fit(maps)
    assert np.allclose(pca.reconstruct(maps), maps, atol=1e-6)


def test_balanced_accuracy_ignores_class_imbalance():
    labels = np.array([0] * 90 + [1] * 10)
    assert balanced_accuracy(labels, np.zeros(100, int)) == pytest.approx(0.5)
    predictions = np.array([0] * 45 + [1] * 45 + [1] * 10)
    assert balanced_accuracy(labels, predictions) == pytest.approx((0.5 + 1.0) / 2)
    assert np.isnan(balanced_accuracy(np.array([], int), np.array([], int)))


def test_evaluate_run_reports_models_and_baselines(untrained_cbvae):
    model, datamodule = untrained_cbvae
    results, per_study = evaluate_run(
        model, datamodule, "cbvae", {"pca_max_train": 100, "estimator_studies": 4, "estimator_samples": 2}, seed=0
    )
    assert results["n_studies"] == len(per_study) == len(datamodule.tables["test"])
    assert set(results["reconstruction"]) == {
        "model", "pca", "mean_map", "model_beats_pca_fraction", "vs_pca", "vs_mean_map"
    }  # fmt: skip
    assert set(results["conditional_generation"]) == {
        "model", "ridge", "mlp", "mean_map", "uses_metadata", "estimators", "vs_ridge", "vs_mlp", "vs_mean_map"
    }  # fmt: skip
    vs_pca = results["reconstruction"]["vs_pca"]
    model_r, pca_r = per_study["reconstruction_model_pearson_r"], per_study["reconstruction_pca_pearson_r"]
    assert vs_pca["median_difference"] == pytest.approx(model_r.median() - pca_r.median())
    assert vs_pca["win_rate"] == pytest.approx(results["reconstruction"]["model_beats_pca_fraction"])
    assert -1 <= results["reconstruction"]["pca"]["pearson_r_median"] <= 1
    year = results["year_debiasing"]
    assert 0 <= year["balanced_accuracy"] <= 1 and year["chance"] == pytest.approx(1 / year["n_bins"])
    assert results["z_dim"] == 3 and 0 <= results["active_units"] <= 3


def test_the_blur_of_ssim_is_the_zero_padded_gaussian_convolution():
    import torch.nn.functional as F

    from sematlas.evaluation.metrics import _blur, _gaussian_window

    window = _gaussian_window(1.5)
    volume = torch.rand(3, 1, 9, 14, 11, generator=torch.Generator().manual_seed(0))
    reference = volume
    for axis in range(3):
        shape, padding = [1, 1, 1, 1, 1], [0, 0, 0]
        shape[2 + axis], padding[axis] = len(window), len(window) // 2
        reference = F.conv3d(reference, window.view(shape), padding=tuple(padding))
    torch.testing.assert_close(_blur(volume, window), reference, rtol=1e-5, atol=1e-6)


def test_ssim_on_the_mask_box_equals_ssim_on_the_whole_grid():
    generator = torch.Generator().manual_seed(1)
    mask = torch.zeros(20, 22, 18, dtype=torch.bool)
    mask[4:15, 6:17, 3:12] = True
    x = unmask(torch.rand(2, int(mask.sum()), generator=generator), mask)
    y = unmask(torch.rand(2, int(mask.sum()), generator=generator), mask)
    everywhere = torch.ones_like(mask)
    # Inside the box the blurred maps are the whole grid's: the box crop changes nothing.
    whole = ssim3d(x, y, everywhere)
    assert torch.isfinite(whole).all()
    boxed = ssim3d(x, y, mask)
    padded_mask = torch.zeros(30, 30, 30, dtype=torch.bool)
    padded_mask[:20, :22, :18] = mask
    padded = [torch.nn.functional.pad(v, (0, 12, 0, 8, 0, 10)) for v in (x, y)]
    torch.testing.assert_close(ssim3d(*padded, padded_mask), boxed)


def test_paired_bootstrap_of_equal_shifted_and_noisy_scores():
    from sematlas.evaluation.paired import paired_bootstrap

    rng = np.random.default_rng(3)
    baseline = rng.uniform(0.0, 0.8, 400)
    same = paired_bootstrap(baseline, baseline, seed=0)
    assert same.median_difference == 0 and same.median_difference_ci == [0.0, 0.0] and same.win_rate == 0
    # A constant shift is known exactly on every resample: a zero-width interval around it, and every study a win.
    shifted = paired_bootstrap(baseline + 0.05, baseline, seed=0)
    assert shifted.median_difference_ci == pytest.approx([0.05, 0.05]) and shifted.win_rate_ci == [1.0, 1.0]
    assert shifted.model_is_better and not shifted.model_is_worse
    # Noise around a small gain: the interval covers the true gain and the win rate stays near its expectation.
    model = baseline + 0.02 + rng.normal(0, 0.05, 400)
    noisy = paired_bootstrap(model, baseline, seed=1)
    low, high = noisy.median_difference_ci
    assert low < 0.02 < high and high - low < 0.1 and 0.55 < noisy.win_rate < 0.75
    assert paired_bootstrap(model, baseline, seed=1) == noisy  # seeded: a rerun gives the same interval


def test_paired_bootstrap_drops_studies_without_both_scores_and_refuses_unpaired_input():
    from sematlas.evaluation.paired import paired_bootstrap

    model, baseline = np.array([0.3, np.nan, 0.5, 0.4]), np.array([0.2, 0.1, np.nan, 0.1])
    comparison = paired_bootstrap(model, baseline, seed=0)
    assert comparison.n_studies == 2 and comparison.median_difference == pytest.approx(0.2)
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        paired_bootstrap(np.zeros(3), np.zeros(4), seed=0)
    with pytest.raises(ValueError, match="no study has both scores"):
        paired_bootstrap(np.array([np.nan]), np.array([0.1]), seed=0)
