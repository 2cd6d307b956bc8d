"""The point-cloud C-VAE: sampling and grouping, the cache, the set distances, training, loading, metrics in mm."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sematlas.core.errors import CheckpointError
from sematlas.core.params import load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.pointcloud import cache_path, make_datamodule
from sematlas.data.pointcloud_cache import build_cache, load_or_build_cache, normalise_points, read_cache
from sematlas.evaluation.pointcloud import (
    chamfer_mm,
    emd_mm,
    evaluate_pointcloud,
    nearest_by_chamfer,
    pointcloud_latents,
)
from sematlas.inference.pointcloud import PointCloudModel
from sematlas.models.losses import chamfer_distance, sinkhorn_divergence
from sematlas.models.pointcloud import PointCloudConfig, PointCloudVAE, pointcloud_vae_loss
from sematlas.models.pointnet import ball_query, farthest_point_sample
from sematlas.training.pointcloud import run_params, train_pointcloud


# ----------------------------------------------------------------------------------- sampling and grouping
def test_farthest_point_sampling_goes_farthest_first():
    line = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 0, 0], [10, 0, 0]]])
    assert farthest_point_sample(line, 3).tolist() == [[0, 4, 3]]

    xyz = torch.randn(3, 40, 3, generator=torch.Generator().manual_seed(0))
    chosen = farthest_point_sample(xyz, 12)
    for b in range(3):
        assert len(set(chosen[b].tolist())) == 12
        for k in range(1, 12):
            # The k-th pick is at least as far from the earlier picks as any other point is.
            to_chosen = torch.cdist(xyz[b], xyz[b, chosen[b, :k]]).min(dim=1).values
            assert to_chosen[chosen[b, k]] == to_chosen.max()


def test_farthest_point_sampling_picks_each_location_once_before_repeating():
    distinct = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(1))
    with_copies = torch.cat([distinct, distinct[:, [0, 2, 2, 4]]], dim=1)
    chosen = with_copies[0, farthest_point_sample(with_copies, 5)[0]]
    assert len(torch.unique(chosen, dim=0)) == 5


def test_ball_query_returns_points_within_the_radius():
    xyz = torch.rand(2, 30, 3, generator=torch.Generator().manual_seed(2))
    centroids = xyz[:, :6]
    radius, nsample = 0.3, 5
    group = ball_query(xyz, centroids, radius, nsample)
    assert group.shape == (2, 6, nsample)
    for b in range(2):
        for s in range(6):
            distance = (xyz[b] - centroids[b, s]).norm(dim=1)
            assert (distance[group[b, s]] <= radius + 1e-6).all()
            inside = torch.nonzero(distance <= radius).flatten()
            assert set(group[b, s].tolist()) == set(inside[:nsample].tolist())  # the lowest-index points, padded
            assert s in group[b, s].tolist() or len(inside) > nsample


# ------------------------------------------------------------------------------------------------ cache
def test_normalisation_duplicates_or_drops_peaks_of_the_study():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(7, 3))
    points, weights = normalise_points(few, 30, np.random.default_rng(1))
    assert points.shape == (30, 3) and np.isclose(weights.sum(), 1.0)
    rows = [np.flatnonzero((few == p).all(axis=1))[0] for p in points]  # every point is a peak of the study
    assert set(rows) == set(range(7))  # and every peak is kept
    assert np.allclose(np.bincount(rows, weights=weights), 1 / 7)  # each peak weighs the same
    many = rng.normal(size=(45, 3))
    points, weights = normalise_points(many, 30, np.random.default_rng(1))
    rows = [np.flatnonzero((many == p).all(axis=1))[0] for p in points]
    assert len(set(rows)) == 30 and np.allclose(weights, 1 / 30)


def test_cache_shape_range_counts_determinism_and_reuse(processed, tmp_path):
    studies = pd.read_parquet(processed / "studies.parquet")
    peaks = pd.read_parquet(processed / "peaks.parquet")
    path = tmp_path / "pointcloud.h5"
    cache = load_or_build_cache(processed, path, 30, (0.0, -18.0, 18.0), 120.0, seed=5)
    assert cache.points.shape == (len(studies), 30, 3) and cache.points.dtype == np.float32
    assert np.abs(cache.points).max() <= 1.0
    assert np.array_equal(cache.counts, peaks.groupby("id").size().reindex(cache.ids).to_numpy())
    assert np.allclose(cache.weights.sum(axis=1), 1.0, atol=1e-5)
    # In mm, every cached point is one of the study's peaks.
    first = peaks.loc[peaks["id"].astype(str) == cache.ids[0], ["x", "y", "z"]].to_numpy()
    assert np.abs(cache.to_mm(cache.points[0])[:, None] - first[None]).sum(axis=2).min(axis=1).max() < 1e-3

    stamp = path.stat().st_mtime_ns
    again = load_or_build_cache(processed, path, 30, (0.0, -18.0, 18.0), 120.0, seed=5)
    assert path.stat().st_mtime_ns == stamp and np.array_equal(again.points, cache.points)  # reused
    rebuilt = build_cache(studies, peaks, 30, (0.0, -18.0, 18.0), 120.0, seed=5)
    assert np.array_equal(rebuilt.points, cache.points)  # deterministic with the seed
    other = load_or_build_cache(processed, path, 30, (0.0, -18.0, 18.0), 120.0, seed=6)
    assert not np.array_equal(other.points, cache.points) and read_cache(path)[0].seed == 6  # rebuilt on a new key
    assert [p.name for p in tmp_path.iterdir()] == ["pointcloud.h5"]  # written atomically, nothing left over
    with pytest.raises(ValueError, match="raise pointcloud.scale_mm"):
        build_cache(studies, peaks, 30, (0.0, 0.0, 0.0), 20.0, seed=5)


# -------------------------------------------------------------------------------------------- distances
def _brute_force_chamfer(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> float:
    forward = sum(wa[i] * min(np.sum((a[i] - b[j]) ** 2) for j in range(len(b))) for i in range(len(a)))
    backward = sum(wb[j] * min(np.sum((a[i] - b[j]) ** 2) for i in range(len(a))) for j in range(len(b)))
    return float(forward + backward)


def test_chamfer_is_zero_on_itself_symmetric_and_matches_a_brute_force_reference():
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 9, 3, generator=generator), torch.randn(2, 12, 3, generator=generator)
    wa, wb = torch.rand(2, 9, generator=generator), torch.rand(2, 12, generator=generator)
    wa, wb = wa / wa.sum(1, keepdim=True), wb / wb.sum(1, keepdim=True)
    assert torch.allclose(chamfer_distance(a, a, wa, wa), torch.zeros(2))
    assert torch.allclose(chamfer_distance(a, b, wa, wb), chamfer_distance(b, a, wb, wa))
    expected = [_brute_force_chamfer(a[k].numpy(), b[k].numpy(), wa[k].numpy(), wb[k].numpy()) for k in range(2)]
    assert np.allclose(chamfer_distance(a, b, wa, wb).numpy(), expected, rtol=1e-5)
    uniform = [
        _brute_force_chamfer(a[k].numpy(), b[k].numpy(), np.full(9, 1 / 9), np.full(12, 1 / 12)) for k in range(2)
    ]
    assert np.allclose(chamfer_distance(a, b).numpy(), uniform, rtol=1e-5)


def test_sinkhorn_is_zero_for_identical_sets_and_positive_for_shifted_ones():
    a = torch.rand(2, 30, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1
    assert sinkhorn_divergence(a, a).abs().max() < 1e-5
    assert (sinkhorn_divergence(a, a + torch.tensor([0.1, 0.0, 0.0])) > 1e-3).all()


def test_metrics_are_in_millimetres():
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)[:30]
    peaks = (grid * 30.0 - 30.0)[None]  # 30 peaks, 30 mm apart
    shifted = peaks + torch.tensor([10.0, 0.0, 0.0])  # 10 mm to the right: each peak's nearest neighbour is its copy
    assert torch.allclose(chamfer_mm(peaks, shifted), torch.tensor([10.0]), atol=1e-4)
    assert torch.allclose(emd_mm(peaks, shifted), torch.tensor([10.0]), atol=0.1)
    assert emd_mm(peaks, peaks).abs().max() < 1e-3 and chamfer_mm(peaks, peaks).abs().max() < 1e-6


def test_the_nearest_training_study_is_the_brute_force_chamfer_argmin():
    generator = torch.Generator().manual_seed(7)
    pool = torch.rand(60, 30, 3, generator=generator) * 140 - 70  # MNI-like mm
    pool_weights = torch.rand(60, 30, generator=generator)
    pool_weights /= pool_weights.sum(1, keepdim=True)
    # Queries: noisy copies of pool sets 3, 41 and 17, and two unrelated sets.
    query = torch.cat([pool[[3, 41, 17]] + torch.randn(3, 30, 3, generator=generator), torch.rand(2, 30, 3) * 140 - 70])
    query_weights = torch.full((5, 30), 1 / 30)
    brute_force = torch.stack(
        [chamfer_mm(q.expand(60, 30, 3), pool, w.expand(60, 30), pool_weights) for q, w in zip(query, query_weights)]
    ).argmin(1)
    found = nearest_by_chamfer(query, query_weights, pool, pool_weights)
    assert found.tolist() == brute_force.tolist() and found[:3].tolist() == [3, 41, 17]


# ------------------------------------------------------------------------------------------------ model
def _config(**overrides) -> PointCloudConfig:
    values = dict(
        n_points=30,
        cond_dim=6,
        fourier_features=4,
        fourier_sigma=2.0,
        sa_npoint=[8, 4],
        sa_radius=[0.3, 0.6],
        sa_nsample=[4, 4],
        sa_channels=[8, 16],
        global_channels=16,
        decoder_hidden=[16],
        z_dim=3,
    )
    return PointCloudConfig.from_dict({**values, **overrides})


def test_model_shapes_end_to_end():
    torch.manual_seed(0)
    model = PointCloudVAE(_config())
    points = torch.rand(5, 30, 3) * 2 - 1
    meta = {"cond": torch.randn(5, 6), "sparse": torch.zeros(5, 1), "sparse_mask": torch.zeros(5, 1, dtype=torch.bool)}
    out = model(points, meta)
    assert out["points_hat"].shape == (5, 30, 3) and out["mu"].shape == out["logvar"].shape == out["z"].shape == (5, 3)
    terms = pointcloud_vae_loss(
        out["points_hat"], points, torch.full((5, 30), 1 / 30), out["mu"], out["logvar"], beta=0.1
    )
    assert set(terms) == {"loss", "chamfer", "sinkhorn", "kl"} and all(t.dtype == torch.float32 for t in terms.values())
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"sa_npoint\[1\] must be in \[1, 8\]"):
        _config(sa_npoint=[8, 9])


# ------------------------------------------------------------------------------------ training and loading
@pytest.fixture
def tiny(processed: Path, tmp_path: Path) -> tuple[dict, ProfilePaths]:
    """ci parameters, and a project whose processed folder is the NiMARE sample."""
    params = override_params(load_params("ci"), {"pointcloud": {"max_epochs": 2, "batch_size": 8}})
    paths = ProfilePaths("ci", tmp_path / "project")
    shutil.copytree(processed, paths.processed)
    return params, paths


@pytest.mark.slow
def test_training_resumes_is_deterministic_and_the_loader_rebuilds_the_model(tiny, tmp_path):
    params, paths = tiny
    run = train_pointcloud(params, paths)
    assert not run.resumed and run.best_checkpoint.is_file() and cache_path(paths).is_file()
    assert list(run.metrics["epoch"]) == [0, 1] and np.isfinite(run.metrics["val/loss"]).all()
    assert (run.run_dir / "splits.parquet").is_file() and (run.run_dir / "fingerprint.json").is_file()
    assert train_pointcloud(params, paths).resumed  # a rerun resumes from last.ckpt (and has nothing left to do)

    other = ProfilePaths("ci", tmp_path / "again")
    shutil.copytree(paths.processed, other.processed)
    second = train_pointcloud(params, other)
    assert np.array_equal(run.metrics.filter(like="val/").to_numpy(), second.metrics.filter(like="val/").to_numpy())

    model, again = PointCloudModel.load(run.last_checkpoint), PointCloudModel.load(second.last_checkpoint)
    datamodule = make_datamodule(run_params(params), paths)
    test = datamodule.tables["test"]
    meta = datamodule.meta["test"]
    z = model.encode(model.to_mm(test.points), meta)
    assert z.shape == (len(test), params["pointcloud"]["z_dim"])
    decoded = model.decode(z, meta)
    assert decoded.shape == (len(test), 30, 3) and torch.equal(decoded, again.decode(z, meta))
    state = torch.load(run.last_checkpoint, weights_only=False)
    network = PointCloudVAE(PointCloudConfig.from_dict(state["hyper_parameters"]["config"]))
    network.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    with torch.no_grad():
        expected = network.eval().decode(z, meta) * 120.0 + torch.tensor([0.0, -18.0, 18.0])
    assert torch.allclose(decoded, expected, atol=1e-5)  # the loader's model, frame and metadata encoder

    generator = torch.Generator().manual_seed(0)
    requests = [{"task": "emotion", "year": 2010}, {"task": "pain", "year": 2010}]
    generated = model.generate(requests, n_samples=3, generator=generator)
    assert generated.shape == (2, 3, 30, 3)
    z0 = torch.zeros(1, model.z_dim)
    assert not torch.equal(
        model.decode(z0, requests[0]), model.decode(z0, requests[1])
    )  # conditioning reaches the decoder
    with pytest.raises(ValueError, match="unknown task category 'dreaming'"):
        model.generate({"task": "dreaming"})

    peaks = pd.read_parquet(paths.processed / "peaks.parquet")
    evaluation = evaluate_pointcloud(model, datamodule, peaks, n_samples=2, seed=int(params["seed"]))
    assert len(evaluation.per_study) == len(test)
    floor = evaluation.per_study["reconstruction_resample_noise_floor_chamfer_mm"]
    assert np.allclose(floor[evaluation.per_study["n_peaks"] <= 30], 0.0)  # a duplicated set is its own resample
    for task, methods in (
        ("reconstruction", ("model", "resample_noise_floor", "nearest_training_study")),
        ("conditional_generation", ("model", "category_pool")),
    ):
        for method in methods:
            assert np.isfinite(evaluation.results[task][method]["chamfer_mm_median"])
    latents = pointcloud_latents(model, datamodule)
    assert len(latents) == sum(len(t) for t in datamodule.tables.values()) and "z_00" in latents

    state["sematlas"]["variant"] = "cbvae"
    foreign = tmp_path / "foreign.ckpt"
    torch.save(state, foreign)
    with pytest.raises(CheckpointError, match="not a point-cloud checkpoint"):
        PointCloudModel.load(foreign)
