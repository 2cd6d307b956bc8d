"""Every random draw of a training run is a function of (seed, run, epoch, position), whatever ran before.

Unit tests of the epoch sampler and the loaders' budgets (``studies_per_epoch``,
``val_studies``), then tiny trainings: a run killed after its first epoch and
resumed, and a run trained after another on a shared DataModule, end with the
same weights as an uninterrupted run on a fresh DataModule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from tiny_models import tiny_project

from sematlas.core.params import Params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.data.studies import EpochDraw, EpochSampler, epoch_size, stable_seed
from sematlas.training.pointcloud import train_pointcloud
from sematlas.training.run import TrainedRun, make_datamodule, train_variant


def _orders(sampler: EpochSampler, epochs: range) -> list[list[int]]:
    orders = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        orders.append([draw.row for draw in sampler])
    return orders


# ------------------------------------------------------------------------------------ the sampler
def test_seeds_are_a_fixed_function_of_their_parts():
    # Not Python's salted hash: the same in every process (a change here changes every run's numbers).
    assert stable_seed(0, "cbvae", "order", 1) == stable_seed(0, "cbvae", "order", 1) == 6592513513409725014
    assert len({stable_seed(0, "cbvae", "order", 1), stable_seed(0, "cbvae", "order", 2)}) == 2
    assert 0 <= stable_seed("anything") < 2**63


def test_the_order_depends_on_seed_run_and_epoch_only():
    sampler = EpochSampler(50, seed=3, run_key="cbvae")
    orders = _orders(sampler, range(3))
    # Every epoch is a permutation of the split, and a different one.
    assert all(sorted(order) == list(range(50)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    # Epoch 2 alone, on a fresh sampler, after other epochs, or after another run: the same order.
    fresh = EpochSampler(50, seed=3, run_key="cbvae")
    assert _orders(fresh, range(2, 3)) == orders[2:] == _orders(sampler, range(2, 3))
    assert _orders(EpochSampler(50, seed=3, run_key="baseline"), range(2, 3)) != orders[2:]
    assert _orders(EpochSampler(50, seed=4, run_key="cbvae"), range(2, 3)) != orders[2:]
    # Draws carry their epoch and position, for the batch's augmentation stream.
    sampler.set_epoch(2)
    assert list(sampler)[:2] == [EpochDraw(2, 0, orders[2][0]), EpochDraw(2, 1, orders[2][1])]


def test_studies_per_epoch_draws_that_many_distinct_studies_afresh_every_epoch():
    sampler = EpochSampler(50, per_epoch=12, seed=0, run_key="cbvae")
    orders = _orders(sampler, range(20))
    assert len(sampler) == 12 and all(len(order) == len(set(order)) == 12 for order in orders)
    assert len({frozenset(order) for order in orders}) == 20  # a fresh draw each epoch
    assert set().union(*orders) == set(range(50))  # over epochs, every study is seen
    assert len(EpochSampler(10, per_epoch=12, seed=0, run_key="cbvae")) == 10  # capped at the split
    assert epoch_size(10, 0) == 10
    with pytest.raises(ValueError, match="studies per epoch must be >= 0"):
        epoch_size(10, -1)


@pytest.mark.parametrize("n_rows", [24, 25])
def test_under_ddp_the_ranks_share_one_epochs_draw(n_rows):
    # What Lightning wraps a custom sampler in under DDP (unshuffled: this is not a RandomSampler).
    sampler = EpochSampler(n_rows, per_epoch=20 if n_rows == 24 else 0, seed=0, run_key="cbvae")
    ranks = [DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False) for rank in range(2)]
    for rank in ranks:
        rank.set_epoch(3)  # forwarded to the sampler
    shares = [[draw.row for draw in rank] for rank in ranks]
    draw = _orders(EpochSampler(n_rows, per_epoch=len(sampler), seed=0, run_key="cbvae"), range(3, 4))[0]
    assert shares[0] == draw[0::2] and shares[1] == (draw[1::2] + draw[:1])[: len(shares[0])]
    # Disjoint, except that an odd draw pads the last rank with the first study.
    assert len(set(shares[0]) & set(shares[1])) == len(draw) % 2


# ------------------------------------------------------------------------------------ the loaders
def _module(processed: Path, **kwargs) -> NeurosynthDataModule:
    module = NeurosynthDataModule(processed, voxel_size=4, batch_size=2, **kwargs)
    module.setup()
    return module


def _epoch(module: NeurosynthDataModule, epoch: int) -> list[dict]:
    loader = module.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does before every training epoch
    return list(loader)


def test_a_training_epoch_is_the_same_whatever_was_drawn_before(processed):
    shared = _module(processed, seed=1).for_run("cbvae")
    _epoch(shared.for_run("baseline"), 0)  # another run on the same DataModule
    _epoch(shared, 0)
    after = _epoch(shared, 1)
    alone = _epoch(_module(processed, seed=1).for_run("cbvae"), 1)
    assert [b["id"] for b in after] == [b["id"] for b in alone]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(after, alone, strict=True))
    # Another run draws other flips of the same studies (flip_probability 0.5, so almost surely some differ).
    other = _epoch(_module(processed, seed=1).for_run("baseline"), 1)
    by_id = {i: image for b in other for i, image in zip(b["id"], b["image"])}
    assert any(not torch.equal(image, by_id[i]) for b in after for i, image in zip(b["id"], b["image"]))


def test_for_run_leaves_the_shared_datamodule_alone(processed):
    shared = _module(processed, seed=1)
    member = shared.for_run("ensemble/member_1", seed=9)
    assert (member.run_key, member.seed, shared.run_key, shared.seed) == ("ensemble/member_1", 9, "", 1)
    assert member.tables is shared.tables and member.encoder is shared.encoder


def test_the_budgets_set_the_trainers_loaders_and_leave_evaluation_whole(processed):
    module = _module(processed, studies_per_epoch=3, val_studies=2)
    n_train, n_val = len(module.tables["train"]), len(module.tables["val"])
    assert n_train > 3 and n_val > 2
    assert module.studies_per_epoch_count == 3 and module.train_size == n_train
    epochs = [[i for b in _epoch(module, epoch) for i in b["id"]] for epoch in range(4)]
    assert all(len(ids) == len(set(ids)) == 3 for ids in epochs) and len({frozenset(ids) for ids in epochs}) > 1
    first_val = module.tables["val"].studies["id"].tolist()
    validated = [[i for b in module.val_dataloader() for i in b["id"]] for _ in range(2)]
    assert validated == [first_val[:2]] * 2  # the same studies every epoch
    assert [i for b in module.loader("val") for i in b["id"]] == first_val
    assert _module(processed).studies_per_epoch_count == n_train


def test_from_params_reads_the_budgets(processed, sample_params):
    params = override_params(sample_params, {"training": {"studies_per_epoch": 5, "val_studies": 1}})
    module = NeurosynthDataModule.from_params(params, processed, batch_size=2, use_subset=True)
    assert (module.studies_per_epoch, module.val_studies) == (5, 1)


# ------------------------------------------------------------------------------------ trainings
class _KillAfterFirstEpoch(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def _weights(run: TrainedRun) -> dict[str, torch.Tensor]:
    return torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def _assert_equal_weights(first: TrainedRun, second: TrainedRun) -> None:
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and len(a) > 0
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def _other_project(paths: ProfilePaths, root: Path) -> ProfilePaths:
    other = ProfilePaths("ci", root)
    shutil.copytree(paths.processed, other.processed)
    return other


@pytest.fixture
def tiny(processed: Path, tmp_path: Path) -> tuple[Params, ProfilePaths]:
    """Two epochs of tiny ci models, each epoch a draw of 8 of the sample's training studies."""
    budget = {"training": {"max_epochs": 2, "studies_per_epoch": 8, "val_studies": 2}}
    return tiny_project(processed, tmp_path / "project", budget)


@pytest.mark.slow
def test_a_run_killed_after_its_first_epoch_resumes_to_the_uninterrupted_weights(tiny, tmp_path):
    params, paths = tiny
    with pytest.raises(RuntimeError, match="killed"):
        train_variant(params, "cbvae", paths, extra_callbacks=[_KillAfterFirstEpoch()])
    resumed = train_variant(params, "cbvae", paths)
    uninterrupted = train_variant(params, "cbvae", _other_project(paths, tmp_path / "other"))
    assert resumed.resumed and not uninterrupted.resumed
    assert list(resumed.metrics["epoch"]) == [0, 1]
    _assert_equal_weights(resumed, uninterrupted)
    # The throughput counts the 8 studies of an epoch, not the split's.
    timing = uninterrupted.timing
    assert timing["studies_per_second"] * timing["train_seconds"] == pytest.approx(2 * 8)


@pytest.mark.slow
def test_a_longer_run_continues_to_the_weights_of_one_trained_that_long(tiny, tmp_path):
    # One epoch, then the same run with two (max_epochs is not in the fingerprint, so it resumes).
    params, paths = tiny
    train_variant(override_params(params, {"training": {"max_epochs": 1}}), "tcvae_sbd", paths)
    extended = train_variant(params, "tcvae_sbd", paths)
    uninterrupted = train_variant(params, "tcvae_sbd", _other_project(paths, tmp_path / "other"))
    assert extended.resumed and extended.timing["epochs"] == 2
    _assert_equal_weights(extended, uninterrupted)


@pytest.mark.slow
def test_a_run_trained_after_another_on_a_shared_datamodule_equals_it_trained_alone(tiny, tmp_path):
    params, paths = tiny
    shared = make_datamodule(params, paths)
    train_variant(params, "baseline", paths, datamodule=shared)
    after = train_variant(params, "cbvae", paths, datamodule=shared)
    alone = train_variant(params, "cbvae", _other_project(paths, tmp_path / "other"))
    _assert_equal_weights(after, alone)


@pytest.mark.slow
def test_the_point_cloud_run_resumes_to_the_uninterrupted_weights(tiny, tmp_path):
    params, paths = tiny
    params = override_params(params, {"pointcloud": {"max_epochs": 2, "batch_size": 8}})
    with pytest.raises(RuntimeError, match="killed"):
        train_pointcloud(params, paths, extra_callbacks=[_KillAfterFirstEpoch()])
    resumed = train_pointcloud(params, paths)
    uninterrupted = train_pointcloud(params, _other_project(paths, tmp_path / "other"))
    assert resumed.resumed
    _assert_equal_weights(resumed, uninterrupted)
