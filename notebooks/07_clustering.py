# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Clusters of studies in the latent space
#
# Does the model's latent space group studies into families that a neuroscientist would
# recognise? Each study is one point: the posterior mean of the main model (`clustering.variant`,
# default the conditional β-VAE of stage 02) for every study of every split of the profile's
# subset. We cluster those points with **HDBSCAN** (Campello et al., 2013; McInnes et al., 2017):
# a density-based method that finds clusters of any shape, chooses their number itself, and
# leaves points in sparse regions unassigned as **noise** rather than forcing them into a
# cluster. The latents are standardised first (each dimension as z-scores), so that a latent
# direction with a wide range does not dominate the distances.
#
# Then, for each cluster:
#
# - **what it is about**: the LDA-50 topics (Neurosynth's topic model of the abstracts) with the
#   largest *lift*, the cluster's mean topic weight divided by the mean over all studies here
#   (noise included); raw weights would name every cluster after the same generic topics. Also the
#   task categories (derived from the topics in stage 01) of its members;
# - **what it looks like**: the centroid latent (mean of the members' posterior means) decoded
#   to a brain map and written as NIfTI;
# - **how stable it is**: the clustering is redone on random 80% subsamples and compared with
#   the full-data clustering by the adjusted Rand index (ARI: 1 = identical partitions,
#   0 = chance agreement).
#
# Outputs: `data/results/<profile>/clustering/` (`assignments.parquet`, `clusters.parquet`,
# `results.json`, `centroid_<k>.nii.gz`) and `figures/<profile>/clustering_*.png`.

# %% tags=["parameters"]
profile = "quick"

# %%
import pandas as pd

from sematlas.analysis.clustering import (
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
from sematlas.analysis.results import ClusteringResults
from sematlas.core.io import write_parquet
from sematlas.core.metadata import TOPIC_KEYS_FILE
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.reporting.clustering import plot_centroid_maps, plot_cluster_profiles, plot_embedding

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
section = params["clustering"]
variant = section["variant"]
out = paths.results / "clustering"
out.mkdir(parents=True, exist_ok=True)

studies = load_inputs(paths.results / variant / "latents.parquet", paths.processed / "studies.parquet")
z = latent_matrix(studies)
names = topic_names(paths.raw / "neurosynth" / TOPIC_KEYS_FILE)
print(
    f"profile {profile}: {len(studies)} studies ({studies['split'].value_counts().to_dict()}), "
    f"{z.shape[1]}-dimensional latents of the '{variant}' model"
)

# %% [markdown]
# ## HDBSCAN and its stability
#
# `min_cluster_size` is the smallest group worth calling a cluster; `min_samples` sets how
# conservative the density estimate is (larger: more studies left as noise). Stability is
# reported two ways: **ARI** treats noise as one more label over all studies a subsample shares
# with the full data, so a study that drifts between a cluster and noise counts against it;
# **ARI among clustered studies** looks only at studies that both fits put in some cluster.

# %%
clustering = LatentClustering.from_params(section, seed=int(params["seed"])).fit(z)
summary = clustering.summary()
print(describe(summary))
pd.DataFrame(
    {
        "ARI, noise as a label": summary["bootstrap_ari"],
        "ARI, clustered studies only": summary["bootstrap_ari_clustered"],
        "clusters found": summary["bootstrap_n_clusters"],
    },
    index=pd.RangeIndex(clustering.n_bootstrap, name=f"subsample ({clustering.bootstrap_fraction:.0%} of the studies)"),
).round(3)

# %% [markdown]
# ## What each cluster is about
#
# Top topics are the highest-lift LDA topics (named by their first key words; lift 2 = twice as
# prominent as in the average study of the analysis). Top tasks are the most common task categories
# with their share of the members. A cluster's short name joins its most common task category
# and its highest-lift topic.

# %%
clusters = summarise_clusters(clustering.labels_, studies, names, int(section["top_topics"]))
assignments = assignments_frame(studies, clustering.labels_, clustering.probabilities_)
write_parquet(assignments, out / "assignments.parquet")
write_parquet(clusters, out / "clusters.parquet")
clusters.assign(
    top_topics=[
        "; ".join(f"{t} (×{v:.1f})" for t, v in zip(ts, vs))
        for ts, vs in zip(clusters["top_topics"], clusters["top_topic_lifts"])
    ],
    top_tasks=[
        "; ".join(f"{t} {v:.0%}" for t, v in zip(ts, vs))
        for ts, vs in zip(clusters["top_tasks"], clusters["top_task_shares"])
    ],
)[["name", "size", "top_topics", "top_tasks"]]

# %%
lift, shares = cluster_profiles(clustering.labels_, studies, names)
fig = plot_cluster_profiles(lift, shares, clusters["name"].tolist(), int(section["top_topics"]))
fig.savefig(paths.figures / "clustering_topics.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The latent space in two dimensions
#
# A t-SNE of the standardised latents (seeded; at most `clustering.embedding_max_studies` of them,
# a seeded sample), coloured by cluster, noise in grey. t-SNE keeps
# neighbourhoods, not distances: the gaps between islands are not to scale, and HDBSCAN worked
# in the full latent space, not in this picture.

# %%
rows, embedding = embed_2d(z, seed=int(params["seed"]), max_studies=section["embedding_max_studies"])
fig = plot_embedding(embedding, clustering.labels_[rows], clusters["name"].tolist())
fig.savefig(paths.figures / "clustering_embedding.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Centroid maps
#
# The mean latent of each cluster's members, decoded to a brain map. The conditional model
# also needs metadata: each centroid is decoded with its cluster's **most common task
# category** and **median publication year** (listed below), so the map shows the cluster's
# typical study. The glass brains show the widest-kernel channel above the 95th percentile
# of its in-brain voxels.

# %%
atlas = AtlasModel.load(
    paths.models / variant / "checkpoints" / "best.ckpt", voxel_size=int(params["render"]["voxel_size"])
)
centroids = centroid_latents(z, clustering.labels_)
maps = decode_centroids(atlas, centroids, clusters)
written = write_centroid_maps(atlas, maps, clusters["cluster"], out)
print(f"decoded with the '{atlas.variant}' model (conditional: {atlas.is_conditional}); wrote {len(written)} maps")
clusters[["name", "decode_task", "decode_year"]]

# %%
fig = plot_centroid_maps(
    [atlas.to_nifti(volume) for volume in maps],
    [
        f"{name} (n={size}; {task}, {year})"
        for name, size, task, year in clusters[["name", "size", "decode_task", "decode_year"]].itertuples(index=False)
    ],
)
fig.savefig(paths.figures / "clustering_centroids.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Results file

# %%
results = ClusteringResults.from_fit(
    clustering,
    paths=paths,
    settings=section,
    seed=int(params["seed"]),
    z_dim=int(z.shape[1]),
    clusters=clusters,
    centroid_maps=written,
)
print(f"wrote {results.save(results.location(paths)).relative_to(paths.root)}")
print(f"profile {profile}, '{variant}' latents: {describe(summary)}")

# %% [markdown]
# ## Reading the result
#
# A cluster is a region of the latent space that is denser than its surroundings; its name is
# a summary of the abstracts of its members, not a label the model was given. The conditional
# model receives the task category beside the latent code, so its latents need not encode it:
# clusters that still line up with task categories say that the maps themselves differ.
# A high noise fraction means most studies sit in no dense region at this `min_cluster_size`,
# which is common for small subsets and low-dimensional latents (the `ci` profile: 160 studies,
# an 8-dimensional model trained for seconds, where neither the clusters nor the ARI mean
# anything). Trust a cluster when the subsample ARI is high and its centroid map is
# recognisable. Stage 08 (forecasting) reads `assignments.parquet`.
