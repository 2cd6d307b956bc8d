"""The linear baselines scored once per profile and read back, generation of unconditional models, latents per split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from sematlas.core.params import ParameterError, load_params, override_params
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.evaluation.linear import LINEAR_METHODS, baseline_fingerprint, linear_baseline_scores
from sematlas.evaluation.metrics import map_metrics
from sematlas.evaluation.reconstruction import collect_outputs, evaluate_run, generation_estimators, latents_table
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.models import build_model
from sematlas.models.config import ModelConfig


@pytest.fixture
def datamodule(processed: Path) -> NeurosynthDataModule:
    module = NeurosynthDataModule(processed, batch_size=3)
    module.setup()
    return module


def test_scores_are_saved_once_and_read_back_without_rendering(datamodule, rendered, tmp_path) -> None:
    store = tmp_path / "linear_baselines"
    computed = linear_baseline_scores(RenderedSplits(datamodule), datamodule, "test", 3, 100, 0, store=store)
    assert rendered == rendered.once_each(datamodule, ["train", "test"])
    assert sorted(p.suffix for p in store.iterdir()) == [".json", ".parquet"]
    rendered.clear()

    again = linear_baseline_scores(RenderedSplits(datamodule), datamodule, "test", 3, 100, 0, store=store)
    assert not rendered  # read back: neither split rendered again
    n_train = len(datamodule.tables["train"])
    assert (again.n_train, again.fitted_on) == (computed.n_train, computed.fitted_on) == (n_train, n_train)
    for method in LINEAR_METHODS:
        pd.testing.assert_frame_equal(again.metrics[method], computed.metrics[method])
        assert list(computed.metrics[method].columns) == ["pearson_r", "ssim", "mse", "psnr"]
        assert len(computed.metrics[method]) == len(datamodule.tables["test"])
    # Without a store the same numbers are computed and nothing is written.
    fresh = linear_baseline_scores(RenderedSplits(datamodule), datamodule, "test", 3, 100, 0)
    pd.testing.assert_frame_equal(fresh.metrics["ridge"], computed.metrics["ridge"])
    assert len(list(store.iterdir())) == 2


def test_the_fingerprint_changes_with_every_input_of_the_scores(datamodule, processed) -> None:
    reference = baseline_fingerprint(datamodule, "test", 3, 100, 0)
    assert baseline_fingerprint(datamodule, "test", 3, 100, 0) == reference
    one_kernel = NeurosynthDataModule(processed, fwhms=(12.0,))
    one_kernel.setup()
    changed = {
        "split": baseline_fingerprint(datamodule, "val", 3, 100, 0),
        "latent size": baseline_fingerprint(datamodule, "test", 4, 100, 0),
        "PCA sample": baseline_fingerprint(datamodule, "test", 3, 10, 0),
        "seed": baseline_fingerprint(datamodule, "test", 3, 100, 1),
        "kernels": baseline_fingerprint(one_kernel, "test", 3, 100, 0),
    }
    assert reference not in changed.values() and len(set(changed.values())) == len(changed)
    # The batch size is not an input: a DataModule that only batches otherwise shares the scores.
    other_batches = NeurosynthDataModule(processed, batch_size=5)
    other_batches.setup()
    assert baseline_fingerprint(other_batches, "test", 3, 100, 0) == reference


def test_evaluate_run_reads_the_store_a_previous_run_wrote(untrained_cbvae, tmp_path, rendered) -> None:
    model, datamodule = untrained_cbvae
    evaluation = {"pca_max_train": 100, "estimator_studies": 4, "estimator_samples": 2}
    first, first_per_study = evaluate_run(model, datamodule, "cbvae", evaluation, 0, baseline_store=tmp_path)
    rendered.clear()
    second, second_per_study = evaluate_run(model, datamodule, "cbvae", evaluation, 0, baseline_store=tmp_path)
    assert rendered == rendered.once_each(datamodule, ["test"])  # the model's inputs; not the training split
    assert first == second
    pd.testing.assert_frame_equal(first_per_study, second_per_study)


def test_an_unconditional_model_generates_one_map_for_every_study(datamodule) -> None:
    model = build_model(ModelConfig(z_dim=3, base_channels=4)).eval()
    out = collect_outputs(model, datamodule, "test")
    generated = out["generated"]
    assert generated.shape == out["target"].shape
    # The decoded prior mean z = 0: the same map for every study.
    with torch.no_grad():
        expected = model.decode(torch.zeros(1, 3))[:, -1][:, datamodule.brain_mask()]
    torch.testing.assert_close(generated, expected.expand_as(generated))


def test_generation_estimators_score_the_prior_mean_against_the_sample_average(untrained_cbvae) -> None:
    model, datamodule = untrained_cbvae
    estimators = generation_estimators(model, datamodule, "test", n_studies=3, n_samples=2, seed=0)
    assert (estimators["n_studies"], estimators["n_samples"]) == (3, 2)
    # An untrained prior is N(0, I) for every study: its mean decodes to the generated map scored on every study.
    out = collect_outputs(model, datamodule, "test")
    mask = torch.from_numpy(datamodule.grid.mask())
    expected = map_metrics(out["generated"][:3], out["target"][:3], mask)["pearson_r"].median()
    assert estimators["prior_mean_r_median"] == pytest.approx(float(expected), abs=1e-6)
    assert estimators == generation_estimators(model, datamodule, "test", n_studies=3, n_samples=2, seed=0)


def test_latents_of_the_chosen_splits_only(untrained_cbvae) -> None:
    model, datamodule = untrained_cbvae
    every = latents_table(model, datamodule)
    test_only = latents_table(model, datamodule, splits=["test"])
    assert list(every["split"].unique()) == ["train", "val", "test"]
    assert (test_only["split"] == "test").all() and len(test_only) == len(datamodule.tables["test"])
    pd.testing.assert_frame_equal(test_only, every[every["split"] == "test"].reset_index(drop=True), atol=1e-6)
    # A split already run through collect_outputs gives the same rows without a second encoding.
    reused = latents_table(model, datamodule, collected={"test": collect_outputs(model, datamodule, "test")})
    pd.testing.assert_frame_equal(reused, every, atol=1e-6)


def test_an_analysis_variant_must_keep_every_split_s_latents() -> None:
    params = load_params("ci")
    with pytest.raises(ParameterError, match=r"'clustering.variant' \(baseline\) reads the latents of every split"):
        override_params(params, {"clustering": {"variant": "baseline"}})
