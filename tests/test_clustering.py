"""HDBSCAN clustering of latents: planted blobs, topic-lift naming, stability, the no-cluster case, outputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from sematlas.analysis.clustering import (
    NOISE,
    LatentClustering,
    assignments_frame,
    centroid_latents,
    cluster_profiles,
    decode_centroids,
    describe,
    embed_2d,
    latent_matrix,
    load_inputs,
    summarise_clusters,
    topic_names,
    write_centroid_maps,
)
from sematlas.core.io import read_json, write_json

CENTRES = np.array([[0.0] * 6, [8.0, 0, 0, 0, 0, 0], [0, 8.0, 0, 0, 0, 0]])
N_PER_BLOB, N_NOISE = 60, 6


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight blobs in 6-D plus a few isolated far-away points; returns (z, true labels, -1 = noise)."""
    rng = np.random.default_rng(seed)
    blobs = [c + 0.5 * rng.standard_normal((N_PER_BLOB, 6)) for c in CENTRES]
    noise = 40.0 + 15.0 * np.eye(6)[:N_NOISE] * np.arange(1, N_NOISE + 1)[:, None]
    z = np.concatenate([*blobs, noise])
    truth = np.concatenate([np.repeat(np.arange(3), N_PER_BLOB), np.full(N_NOISE, NOISE)])
    return z, truth


def studies_for(truth: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Study metadata where blob k over-expresses topic_0(2k+1) and is mostly task ``task_k``."""
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.ones(10), size=len(truth))
    for k in range(3):
        topics[truth == k, 2 * k + 1] += 0.5
    tasks = np.where(truth >= 0, np.char.add("task_", np.maximum(truth, 0).astype(str)), "other")
    frame = pd.DataFrame(topics, columns=[f"topic_{i:02d}" for i in range(10)])
    frame.insert(0, "task_category", tasks)
    frame.insert(0, "year", 2000 + np.arange(len(truth)) % 10)
    frame.insert(0, "id", [f"s{i}" for i in range(len(truth))])
    return frame


def names() -> pd.Series:
    return pd.Series({f"topic_{i:02d}": f"word{i} other{i} more{i}" for i in range(10)})


@pytest.fixture(scope="module")
def fitted() -> tuple[LatentClustering, np.ndarray, np.ndarray]:
    z, truth = planted()
    clustering = LatentClustering(min_cluster_size=15, min_samples=5, n_bootstrap=5, seed=1).fit(z)
    return clustering, z, truth


def test_planted_blobs_are_recovered_with_noise(fitted):
    clustering, _, truth = fitted
    assert clustering.n_clusters_ == 3
    assert set(clustering.labels_[truth == NOISE]) == {NOISE}
    for k in range(3):  # each blob is one cluster
        assert len(set(clustering.labels_[truth == k])) == 1
    assert clustering.noise_fraction_ == pytest.approx(N_NOISE / len(truth))
    assert np.all(clustering.probabilities_[truth == NOISE] == 0)


def test_stability_is_high_on_clear_structure(fitted):
    clustering, _, _ = fitted
    summary = clustering.summary()
    assert summary["ari_mean"] > 0.95 and summary["ari_clustered_mean"] > 0.95
    assert len(summary["bootstrap_ari"]) == 5 and summary["bootstrap_n_clusters"] == [3] * 5
    assert "3 clusters" in describe(summary)


def test_determinism_with_a_seed(fitted):
    clustering, z, _ = fitted
    again = LatentClustering(min_cluster_size=15, min_samples=5, n_bootstrap=5, seed=1).fit(z)
    np.testing.assert_array_equal(again.labels_, clustering.labels_)
    np.testing.assert_array_equal(again.bootstrap_ari_, clustering.bootstrap_ari_)
    rows, embedding = embed_2d(z[:80], seed=3)
    np.testing.assert_array_equal(rows, np.arange(80))
    np.testing.assert_array_equal(embedding, embed_2d(z[:80], seed=3)[1])


def test_the_embedding_of_many_studies_is_a_seeded_sample(fitted):
    _, z, _ = fitted
    rows, embedding = embed_2d(z, seed=3, max_studies=50)
    assert embedding.shape == (50, 2) and len(set(rows.tolist())) == 50 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, embed_2d(z, seed=3, max_studies=50)[0])


def test_standardisation_makes_scale_irrelevant(fitted):
    clustering, z, _ = fitted
    rescaled = LatentClustering(min_cluster_size=15, min_samples=5, n_bootstrap=0).fit(z * [100, 1, 1, 1, 1, 0.01] + 5)
    np.testing.assert_array_equal(rescaled.labels_, clustering.labels_)


def test_topic_lift_names_the_planted_topic(fitted):
    clustering, z, truth = fitted
    studies = studies_for(truth)
    clusters = summarise_clusters(clustering.labels_, studies, names(), top_topics=3)
    assert clusters["size"].sum() == (truth != NOISE).sum()
    for row in clusters.itertuples():
        k = int(truth[clustering.labels_ == row.cluster][0])  # the planted blob behind this cluster
        assert row.top_topic_columns[0] == f"topic_{2 * k + 1:02d}"
        assert row.top_topic_lifts[0] > 1.5
        assert row.top_tasks[0] == f"task_{k}" and row.top_task_shares[0] == 1.0
        assert row.name == f"C{row.cluster}: task {k} · word{2 * k + 1} other{2 * k + 1}"
        assert row.decode_task == f"task_{k}" and 2000 <= row.decode_year <= 2009
    centroids = centroid_latents(z, clustering.labels_)
    assert centroids.shape == (3, 6)
    np.testing.assert_allclose(centroids[clusters["cluster"][0]], z[clustering.labels_ == 0].mean(0))
    lift, shares = cluster_profiles(clustering.labels_, studies, names())
    assert list(lift.index) == list(shares.index) == list(clusters["cluster"])
    assert lift.columns.tolist() == names().tolist()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)


def test_no_cluster_is_handled(tmp_path):
    z = np.random.default_rng(0).standard_normal((12, 4))
    clustering = LatentClustering(min_cluster_size=15, min_samples=3, n_bootstrap=3, seed=0).fit(z)
    assert clustering.n_clusters_ == 0 and clustering.noise_fraction_ == 1.0
    summary = clustering.summary()
    assert summary["ari_mean"] is None and summary["bootstrap_ari"] == [None] * 3
    write_json(summary, tmp_path / "results.json")
    assert read_json(tmp_path / "results.json")["ari_mean"] is None
    assert "no cluster" in describe(summary)
    truth = np.full(len(z), NOISE)
    studies = studies_for(truth)
    clusters = summarise_clusters(clustering.labels_, studies, names())
    assert clusters.empty and {"cluster", "name", "size", "top_topics", "top_tasks"} <= set(clusters.columns)
    assert centroid_latents(z, clustering.labels_).shape == (0, 4)
    lift, shares = cluster_profiles(clustering.labels_, studies, names())
    assert lift.empty and shares.empty


def test_assignments_frame_has_the_contract_columns(fitted):
    clustering, _, truth = fitted
    studies = studies_for(truth).assign(split="train")
    frame = assignments_frame(studies, clustering.labels_, clustering.probabilities_)
    assert list(frame.columns[:5]) == ["id", "cluster", "probability", "year", "task_category"]
    assert frame["id"].map(type).eq(str).all() and frame["task_category"].map(type).eq(str).all()
    assert frame["cluster"].dtype == np.int64 and frame["year"].dtype == np.int64
    assert frame["probability"].dtype == np.float64 and len(frame) == len(truth)


def test_latents_topic_names_and_centroid_maps(tmp_path):
    latents = pd.DataFrame({"id": ["a", "b"], "z_01": [1.0, 2.0], "z_00": [3.0, 4.0], "logvar_mean": [0.0, 0.0]})
    np.testing.assert_array_equal(latent_matrix(latents), [[3.0, 1.0], [4.0, 2.0]])
    keys = tmp_path / "keys.tsv"
    keys.write_text("0\t0.1\tpain painful stimulation heat\n1\t0.2\tface faces facial\n")
    assert topic_names(keys).to_dict() == {"topic_00": "pain painful stimulation", "topic_01": "face faces facial"}

    class Atlas:  # the two AtlasModel methods the centroid helpers use
        def decode(self, z, metadata):
            assert metadata == [{"task": "pain", "year": 2010}]
            return torch.ones(len(z), 2, 3, 4, 5) * z[:, :1, None, None, None]

        def to_nifti(self, volume):
            return nib.Nifti1Image(volume[-1].numpy(), np.eye(4))

    clusters = pd.DataFrame({"cluster": [0], "decode_task": ["pain"], "decode_year": [2010]})
    maps = decode_centroids(Atlas(), np.array([[2.0, 0.0]]), clusters)
    (tmp_path / "centroid_7.nii.gz").write_bytes(b"from an earlier run with more clusters")
    (path,) = write_centroid_maps(Atlas(), maps, clusters["cluster"], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("centroid_*")) == ["centroid_0.nii.gz"]
    assert path.name == "centroid_0.nii.gz"
    np.testing.assert_allclose(nib.load(path).get_fdata(), 2.0)


def test_load_inputs_joins_metadata_and_rejects_unknown_studies(tmp_path):
    latents = pd.DataFrame({"id": ["1", "2"], "split": ["train", "test"], "z_00": [0.0, 1.0]})
    studies = pd.DataFrame(
        {"id": ["2", "1", "3"], "year": [2001, 2000, 2002], "task_category": ["pain", "face", "motor"], "title": "x"}
    ).assign(topic_00=[0.1, 0.2, 0.3])
    latents.to_parquet(tmp_path / "latents.parquet")
    studies.to_parquet(tmp_path / "studies.parquet")
    joined = load_inputs(tmp_path / "latents.parquet", tmp_path / "studies.parquet")
    assert joined["year"].tolist() == [2000, 2001] and joined["task_category"].tolist() == ["face", "pain"]
    assert "title" not in joined and joined["topic_00"].tolist() == [0.2, 0.1]
    studies.iloc[:1].to_parquet(tmp_path / "studies.parquet")
    with pytest.raises(ValueError, match="no study metadata"):
        load_inputs(tmp_path / "latents.parquet", tmp_path / "studies.parquet")
