"""Each split rendered once per stage: RenderedSplits, and the render counts of every stage's evaluation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_project

from sematlas.analysis.ablation import load_ablation, protocol_params, run_ablation
from sematlas.analysis.hierarchy import level_kls
from sematlas.core.params import override_params
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.evaluation.generative import evaluate_generation
from sematlas.evaluation.reconstruction import evaluate_run, latents_table, training_sample
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.trained_run import evaluate_trained_run
from sematlas.inference.atlas import AtlasModel
from sematlas.models.registry import HIERARCHICAL_VARIANT, MAIN_VARIANT
from sematlas.training.run import make_datamodule, train_variant


@pytest.fixture
def datamodule(processed: Path) -> NeurosynthDataModule:
    module = NeurosynthDataModule(processed, batch_size=3)
    module.setup()
    return module


# ---- the cache ------------------------------------------------------------------------------------


def test_batches_are_the_loader_s_and_rows_are_render_rows(datamodule) -> None:
    maps = RenderedSplits(datamodule)
    cached, loaded = list(maps.batches(datamodule, "val")), list(datamodule.loader("val"))
    assert len(cached) == len(loaded) > 1
    for mine, theirs in zip(cached, loaded, strict=True):
        assert torch.equal(mine["image"], theirs["image"]) and mine["id"] == theirs["id"]
        assert mine["meta"].keys() == theirs["meta"].keys()
        assert all(torch.equal(mine["meta"][key], theirs["meta"][key]) for key in theirs["meta"])
    rows = [2, 0, 1]
    picked, expected = maps.batch(datamodule, "test", rows), datamodule.render_rows("test", rows)
    assert torch.equal(picked["image"], expected["image"]) and picked["id"] == expected["id"]
    assert torch.equal(maps.images("train"), datamodule.all_images("train"))


def test_each_study_is_rendered_once_as_the_asked_prefix_grows(datamodule, rendered) -> None:
    maps = RenderedSplits(datamodule)
    first = maps.images("train", 2)
    assert first.shape == (2, 2, int(datamodule.grid.mask().sum()))
    assert maps.images("val", 0).shape == (0, 2, first.shape[2]) and rendered == Counter({("train", (6.0, 12.0)): 2})
    maps.batch(datamodule, "train", [5])  # rows up to 5: renders 2 to 5
    assert rendered == Counter({("train", (6.0, 12.0)): 6})
    every = maps.images("train")
    list(maps.batches(datamodule, "train"))
    assert torch.equal(every[:2], first) and rendered == rendered.once_each(datamodule, ["train"])
    # The prefix grows in one buffer: what was served earlier is a view of it, never copied again.
    assert first.data_ptr() == every.data_ptr() == maps.images("train", 3).data_ptr()


def test_maps_rendered_otherwise_are_refused(datamodule, processed: Path) -> None:
    maps = RenderedSplits(datamodule)
    one_kernel = NeurosynthDataModule(processed, fwhms=(12.0,))
    one_kernel.setup()
    other_batch_size = NeurosynthDataModule(processed, batch_size=5)
    other_batch_size.setup()
    assert maps.renders_like(other_batch_size) and not maps.renders_like(one_kernel)
    assert RenderedSplits.shared(maps, other_batch_size) is maps
    with pytest.raises(ValueError, match="not the DataModule's: other studies, kernels or grid"):
        RenderedSplits.shared(maps, one_kernel)
    with pytest.raises(ValueError, match="not the DataModule's"):
        maps.batch(one_kernel, "test", [0])


# ---- render counts of the stages' evaluations -----------------------------------------------------


@pytest.fixture(scope="module")
def trained(processed: Path, tmp_path_factory: pytest.TempPathFactory):
    """One-epoch tiny runs of baseline, cbvae and hvae on NiMARE's 20-study sample."""
    params, paths = tiny_project(processed, tmp_path_factory.mktemp("project"))
    datamodule = make_datamodule(params, paths)
    variants = ("baseline", MAIN_VARIANT, HIERARCHICAL_VARIANT)
    runs = {variant: train_variant(params, variant, paths, datamodule=datamodule) for variant in variants}
    return params, paths, runs


@pytest.mark.slow
def test_stages_02_and_05_render_each_split_once(trained, rendered) -> None:
    params, paths, runs = trained
    datamodule = make_datamodule(params, paths)
    # Without a shared cache each call renders what it reads once: the held-out and training splits.
    atlas = AtlasModel.load(runs["baseline"].best_checkpoint)
    evaluate_run(atlas.network, datamodule, "baseline", params.evaluation, int(params.seed))
    assert rendered == rendered.once_each(datamodule, ["train", "test"])
    rendered.clear()

    # Stage 02: every variant's evaluation, latents and figures from one cache.
    maps = RenderedSplits(datamodule)
    maps.batch(datamodule, "val", range(4))
    for variant in ("baseline", MAIN_VARIANT):
        evaluate_trained_run(runs[variant], datamodule, params, paths, maps)
    maps.batch(datamodule, "test", range(3))
    assert rendered == rendered.once_each(datamodule)
    rendered.clear()

    # Stage 05: the H-VAE's evaluation and its level KLs.
    maps = RenderedSplits(datamodule)
    evaluation = evaluate_trained_run(runs[HIERARCHICAL_VARIANT], datamodule, params, paths, maps)
    kl = level_kls(evaluation.model.network, datamodule, "test", maps)
    assert rendered == rendered.once_each(datamodule) and kl["n_studies"] == len(datamodule.tables["test"])


@pytest.mark.slow
def test_a_shared_cache_gives_the_numbers_of_fresh_renders(trained) -> None:
    params, paths, runs = trained
    datamodule = make_datamodule(params, paths)
    network = AtlasModel.load(runs[MAIN_VARIANT].best_checkpoint).network
    maps = RenderedSplits(datamodule)
    latents_table(network, datamodule, maps)  # fills the cache first
    shared, shared_per_study = evaluate_run(network, datamodule, "cbvae", params.evaluation, 0, maps=maps)
    fresh, fresh_per_study = evaluate_run(network, datamodule, "cbvae", params.evaluation, 0)
    assert shared == fresh
    assert shared_per_study.equals(fresh_per_study)


@pytest.mark.slow
def test_stage_09_renders_each_split_once_for_generation_and_the_ablations(trained, rendered) -> None:
    params, paths, runs = trained
    locked, kernel = protocol_params(params), load_ablation("kernel_12mm", params)
    # Train the protocol's runs first: only the evaluation is counted.
    for name, run_params in (("locked", locked), (kernel.name, protocol_params(kernel.apply(params)))):
        train_variant(run_params, MAIN_VARIANT, paths, make_datamodule(run_params, paths), run_name=f"ablations/{name}")
    rendered.clear()

    datamodule = make_datamodule(params, paths)
    maps = RenderedSplits(datamodule)
    train_maps = training_sample(datamodule, params.evaluation.pca_max_train, int(params.seed), maps)
    networks = {MAIN_VARIANT: AtlasModel.load(runs[MAIN_VARIANT].best_checkpoint).network}
    neighbours = override_params(params, {"evaluation": {"prd_k": 1, "prd_features": 2}}).evaluation  # 3 test maps
    evaluate_generation(networks, datamodule, train_maps, neighbours, params.model.z_dim, 0, maps=maps)
    run_ablation(params, paths, None, maps)
    record = run_ablation(params, paths, kernel, maps)
    one_kernel = make_datamodule(kernel.apply(params), paths)
    # The locked run shares the stage's maps; the one-kernel ablation renders its own, once.
    assert rendered == rendered.once_each(datamodule, ["train", "test"]) + rendered.once_each(
        one_kernel, ["train", "test"]
    )
    assert record["results"]["n_studies"] == len(datamodule.tables["test"])
