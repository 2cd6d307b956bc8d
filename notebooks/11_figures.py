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
# # 11 · Figures
#
# Every figure of the manuscript, remade from the files the earlier stages saved:
# nothing is trained, sampled or decoded here, so a figure changes only when a
# result does. Each figure is written as PNG (150 dpi) and SVG into
# `figures/<profile>/manuscript/`, named for its place in the manuscript
# (`fig1_data` ... `fig11_ablations`), with an `index.json` that gives each
# figure's title and the files it was drawn from (the README's figure index and
# the manuscript use it).
#
# One style throughout: models in blue, baselines in red, chance levels, goals and
# thresholds as grey dashed lines. Every title says what is compared and on how
# many held-out studies, read from the results. Where a model loses to its
# baseline, the figure shows it.
#
# Inputs: `data/processed/<profile>/` (stage 01) and `data/results/<profile>/`
# (stages 01-09): `load_results` reads each results file as the typed object of the
# stage that wrote it (`sematlas.evaluation.results`, `sematlas.analysis.results`), and
# names the stage to run when a file is missing. Output: `figures/<profile>/manuscript/`.

# %% tags=["parameters"]
profile = "quick"

# %%
import matplotlib.pyplot as plt
import nibabel as nib

from sematlas.analysis.clustering import cluster_profiles, topic_names
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.reporting.figures import (
    TITLES,
    load_results,
    plot_cca,
    plot_clusters,
    plot_conditional_atlas,
    plot_corpus,
    plot_forecasting,
    plot_gate,
    plot_generation,
    plot_pointcloud,
    plot_reconstruction,
    plot_uncertainty,
    save_figure,
    write_index,
)
from sematlas.reporting.plotting import plot_ablations

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
out = paths.figures / "manuscript"
results = load_results(paths, params)
print(f"profile {profile}: {len(TITLES)} figures into {out.relative_to(paths.root)}")


def show_and_save(fig, name):
    """Write the figure as PNG and SVG, display it once, and free it."""
    save_figure(fig, out, name)
    plt.show()
    plt.close(fig)


# %% [markdown]
# ## Figure 1 · The data
#
# The share of curated studies per task category (derived from the LDA-50 topics)
# and per publication year, for the whole curated corpus and for the stratified
# subset the profile trains on: the subset should follow the corpus.

# %%
show_and_save(plot_corpus(**results["fig1_data"]), "fig1_data")

# %% [markdown]
# ## Figure 2 · Reconstruction
#
# Every held-out study is one point: voxel-wise Pearson r and SSIM between its map
# and the reconstruction, for each volumetric model and the two linear baselines
# (PCA fitted on the training split at the model's latent size; the training mean
# map). Above each model: the share of studies it reconstructs better than PCA.

# %%
show_and_save(plot_reconstruction(**results["fig2_reconstruction"], seed=int(params["seed"])), "fig2_reconstruction")

# %% [markdown]
# ## Figure 3 · Generation and the zero-shot probe
#
# Top: improved precision and recall, and the Fréchet distance, of prior samples
# against the held-out maps, next to probabilistic PCA and real training maps (the
# ceiling). Bottom: how well each model's frozen latents tell n-back from flanker
# analyses that Neurosynth does not contain, against PCA features, raw voxels and
# chance.

# %%
show_and_save(plot_generation(**results["fig3_generation"]), "fig3_generation")

# %% [markdown]
# ## Figure 4 · The category maps
#
# For six task categories, the map the conditional atlas generates for the category
# query (its training studies' mean topic profile, decoded at the prior mean) beside the
# mean map of the category's held-out studies and NiMARE's MKDA of its training studies,
# each scaled to its own maximum and cut through the held-out map's peak.

# %%
show_and_save(plot_conditional_atlas(**results["fig4_category_maps"]), "fig4_category_maps")

# %% [markdown]
# ## Figure 5 · Point clouds
#
# Top: per held-out study, the Chamfer distance of the model against the
# latent-free retrieval baseline (reconstruction) and the category pool
# (conditional generation); points below the diagonal are studies the model gets
# closer. Bottom: medians of both metrics with the resampling noise floor.

# %%
show_and_save(plot_pointcloud(**results["fig5_pointcloud"]), "fig5_pointcloud")

# %% [markdown]
# ## Figure 6 · Uncertainty
#
# Expected calibration error of each ensemble's predictive distribution before and
# after temperature scaling (fitted on the validation split), and how well its
# uncertainty separates test studies from each kind of out-of-distribution map.

# %%
show_and_save(plot_uncertainty(**results["fig6_uncertainty"]), "fig6_uncertainty")

# %% [markdown]
# ## Figure 7 · The hierarchy
#
# The H-VAE is used downstream only if it passes its stage gate: each criterion's
# value against its threshold. Below, what the two levels learned: how strongly
# each top-level unit relates to the lower-level units, and which task categories
# each top-level unit separates.

# %%
show_and_save(plot_gate(**results["fig7_hierarchy"]), "fig7_hierarchy")

# %% [markdown]
# ## Figure 8 · Shared dimensions of the two latent spaces
#
# Canonical correlations between the volumetric and the point-cloud latents of the
# same held-out studies. A correlation means something only above what shuffled
# pairings give: the red line is the null's 95th percentile.

# %%
show_and_save(plot_cca(**results["fig8_cca"]), "fig8_cca")

# %% [markdown]
# ## Figure 9 · Clusters
#
# HDBSCAN clusters of the latents, named by their most common task and their
# highest-lift topic; most studies may stay unclustered (noise), and the figure says
# how many. The topic lift and task shares are recomputed from the saved
# assignments exactly as stage 07 computed them; the centroid maps are the ones
# stage 07 decoded.

# %%
clustering = results["fig9_clusters"]
members = clustering["members"]
lift, shares = cluster_profiles(members["cluster"].to_numpy(), members, topic_names(clustering["topic_keys"]))
fig = plot_clusters(
    clustering["clusters"],
    clustering["results"],
    lift,
    shares,
    [nib.load(path) for path in clustering["centroids"]],
)
show_and_save(fig, "fig9_clusters")

# %% [markdown]
# ## Figure 10 · Forecasting
#
# The distribution of next years' latents, forecast by the trajectory GRU from the
# years up to the cutoff, against persistence (the last window repeated) and a
# linear trend. Neurosynth v7 stops in 2018, so only the years up to 2018 can be
# scored.

# %%
show_and_save(plot_forecasting(**results["fig10_forecasting"]), "fig10_forecasting")

# %% [markdown]
# ## Figure 11 · Ablations
#
# Each ablation changes one thing of the locked conditional model and declared,
# before its run, the criterion that decides PASS or FAIL. Left: the change of that
# criterion's metric (green: PASS) with the threshold as a tick; right: the
# per-study win rate against PCA, the locked model's as a dashed line.

# %%
show_and_save(plot_ablations(**results["fig11_ablations"]), "fig11_ablations")

# %% [markdown]
# ## Index
#
# `index.json` lists every figure with its title and the files it was drawn from.

# %%
index = write_index(out, results["sources"], paths.root)
{name: TITLES[name] for name in results["sources"]}
