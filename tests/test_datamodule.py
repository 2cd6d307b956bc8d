"""The DataModule: dict batches on the padded grid, metadata tensors, deterministic augmentation."""

from __future__ import annotations

import numpy as np
import torch

from sematlas.core.grid import Grid
from sematlas.data.datamodule import NeurosynthDataModule, PeakTable
from sematlas.data.render import reference_render


def _module(processed, **kwargs):
    module = NeurosynthDataModule(processed, voxel_size=4, batch_size=4, **kwargs)
    module.setup()
    return module


def test_batches_follow_the_data_contract(processed):
    module = _module(processed)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 2, 48, 48, 48) and batch["image"].dtype == torch.float32
    assert len(batch["id"]) == 4 and all(isinstance(i, str) for i in batch["id"])
    meta = batch["meta"]
    assert meta["cond"].shape == (4, module.encoder.cond_dim)
    assert meta["sparse"].shape == meta["sparse_mask"].shape == (4, 1) and meta["sparse_mask"].dtype == torch.bool
    assert meta["year_bin"].dtype == torch.long and int(meta["year_bin"].max()) < module.encoder.n_year_bins
    # the 50 standardised topic weights, then year and log peaks, then space one-hot
    assert module.encoder.n_topics == 50 and module.encoder.cond_dim == 50 + 2 + 3
    assert torch.all(meta["cond"][:, -3:].sum(1) == 1)
    # Padding stays empty and the native grid holds the maps, zero outside the brain.
    image = batch["image"]
    assert image[..., 46:, :, :].abs().sum() == 0 and image[..., :, 55:, :].abs().sum() == 0
    assert image[:, :, ~module.brain_mask()].abs().sum() == 0
    assert torch.allclose(image.amax(dim=(2, 3, 4)), torch.ones(4, 2))


def test_category_metadata_gives_the_task_one_hot(processed):
    module = _module(processed, metadata="category")
    meta = module.meta["train"]
    n_categories = len(module.encoder.categories)
    assert module.encoder.inputs == "category" and meta["cond"].shape[1] == n_categories + 2 + 3
    assert torch.equal(meta["cond"][:, :n_categories].argmax(1), meta["task"])


def test_evaluation_batches_equal_the_reference_renderer(processed):
    module = _module(processed)
    batch = next(iter(module.val_dataloader()))
    table = module.tables["val"]
    ijk, index = table.gather(range(len(batch["id"])))
    reference = reference_render(ijk, index, len(batch["id"]), Grid(4), (6.0, 12.0))
    # The batch holds the network grid: the reference maps cut to the brain's box.
    expected = Grid(4).to_network(torch.from_numpy(reference)).numpy()
    assert batch["image"].shape[-3:] == (48, 48, 48)
    assert np.abs(batch["image"].numpy() - expected).max() <= 1e-4 * np.abs(reference).max()


def test_augmentation_is_seeded(processed):
    first = [b["image"] for b in _module(processed, seed=5, flip_probability=0.5).train_dataloader()]
    again = [b["image"] for b in _module(processed, seed=5, flip_probability=0.5).train_dataloader()]
    other = [b["image"] for b in _module(processed, seed=6, flip_probability=0.5).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))


def test_random_kernel_choice_gives_one_channel(processed):
    module = _module(processed, kernel_choice="random")
    assert module.n_channels == 1
    assert next(iter(module.train_dataloader()))["image"].shape[1] == 1
    evaluation = module.render_rows("val", [0])["image"]
    widest = _module(processed).render_rows("val", [0])["image"][:, 1:]
    assert torch.equal(evaluation, widest)


def test_peak_table_gathers_each_studys_peaks(processed):
    module = _module(processed)
    table: PeakTable = module.tables["train"]
    ijk, index = table.gather([2, 0])
    counts = np.bincount(index, minlength=2)
    assert counts[0] == table.studies["n_peaks"].iloc[2] and counts[1] == table.studies["n_peaks"].iloc[0]
    assert module.all_images("val").shape == (len(module.tables["val"]), 2, int(Grid(4).mask().sum()))


def test_all_images_renders_the_asked_rows_in_order(processed):
    from sematlas.data.datamodule import NeurosynthDataModule
    from sematlas.evaluation.baselines import training_sample_rows
    from sematlas.evaluation.reconstruction import training_sample

    datamodule = NeurosynthDataModule(processed, batch_size=2)
    datamodule.setup()
    every = datamodule.all_images("train")
    rows = [2, 0, 1]
    assert torch.equal(datamodule.all_images("train", batch_size=2, rows=rows), every[rows])
    sample_rows = training_sample_rows(datamodule.train_size, 3, seed=5)
    assert list(sample_rows) == sorted(sample_rows) and len(set(sample_rows)) == 3
    assert torch.equal(training_sample(datamodule, 3, seed=5), every[sample_rows])
