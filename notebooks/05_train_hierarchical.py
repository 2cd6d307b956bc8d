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
# # 05 · A two-level hierarchical VAE and its stage gate
#
# The flat models of stage 02 put every factor of a brain map into one latent vector.
# Brain function is organised at more than one scale: a task recruits a large-scale
# network, and within it studies differ in local detail. The hierarchical VAE
# (`hvae`) gives the latent space two levels with the same total size as the flat
# `cbvae` (`model.z_dim`):
#
# - a **global top level** of `hierarchical.top_dim` units, encoded from the deepest
#   (coarsest) encoder features, prior N(0, I);
# - a **local lower level** of the other units, encoded from finer features through a
#   bottom-up skip, given the top level, with a learned conditional prior
#   p(z_low | z_top) (the chain of the Ladder VAE, Sønderby et al., 2016; the lower
#   posterior is a residual normal relative to that prior, as in NVAE, Vahdat & Kautz, 2020);
# - a decoder that reads both levels through its coarse 4^3 bottleneck, and a
#   **protected top-down skip**: the top level also modulates every later decoder stage
#   (FiLM), down to the output layer, but through a stop-gradient, so the decoder cannot
#   turn the top units into a shortcut code for the output voxels: what they encode is
#   learnt through the bottleneck and the conditional prior only. At generation the
#   decoder sees only the latent code.
#
# Objective (`sematlas.models.hvae.HierarchicalVAE.loss`): reconstruction + `top_beta` x KL_top +
# `beta` x KL_lower. The model is unconditional: giving the decoder the task category
# would make it free, and the gate asks the top level to carry it.
#
# **Stage gate**, reported as PASS/FAIL before the H-VAE is used downstream:
# both levels active (held-out KL per level above `gate_min_kl_per_level` nats),
# reconstruction no worse than the flat `cbvae`'s by more than `gate_recon_margin`
# (median Pearson r), and the top level predicting the task category (linear probe,
# balanced accuracy) at least `gate_probe_margin` above chance.
# Outputs: `data/models/<profile>/hvae/`, `data/results/<profile>/hvae/` (as stage 02),
# `data/results/<profile>/hierarchical/results.json` and `figures/<profile>/hierarchical_*.png`.

# %% tags=["parameters"]
profile = "quick"

# %%
import numpy as np
import pandas as pd
import torch

from sematlas.analysis.hierarchy import (
    category_profile,
    level_correlation,
    level_kls,
    linear_probe,
    stage_gate,
)
from sematlas.analysis.results import HierarchicalResults, Hierarchy
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.results import VolumetricResults
from sematlas.evaluation.trained_run import evaluate_trained_run
from sematlas.models.base import ACTIVE_UNIT_THRESHOLD
from sematlas.models.registry import HIERARCHICAL_VARIANT
from sematlas.reporting.hierarchy import plot_hierarchy
from sematlas.reporting.plotting import plot_map_rows, plot_training_curves
from sematlas.training.run import make_datamodule, train_variant

params = load_params(profile)
settings = params["hierarchical"]
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
z_dim, top_dim = params["model"]["z_dim"], settings["top_dim"]
datamodule = make_datamodule(params, paths)
# The evaluation and the level KLs read their unaugmented maps from here: each study is rendered once.
maps = RenderedSplits(datamodule)
print(
    f"profile {profile}: z_dim {z_dim} = top level {top_dim} + lower level {z_dim - top_dim}; "
    f"top_beta {settings['top_beta']}, beta {params['training']['beta']}; "
    f"splits { ({split: len(table) for split, table in datamodule.tables.items()}) }, "
    f"grid {datamodule.grid.shape} at {datamodule.voxel_size} mm"
)

# %% [markdown]
# The flat comparator: stage 02's `cbvae` held-out results, at the same total latent size.

# %%
reference_file = VolumetricResults.path(paths, variant="cbvae")
reference = VolumetricResults.load(reference_file)
reference_r = reference.reconstruction.model.pearson_r_median
print(
    f"loaded {reference_file.relative_to(paths.root)}: cbvae z_dim {reference.z_dim}, "
    f"{reference.n_studies} test studies, median reconstruction r {reference_r:.4f}"
)
assert reference.z_dim == z_dim, "the gate compares the H-VAE with cbvae at the same total latent size"

# %% [markdown]
# ## Train
#
# `train_variant` as in stage 02: AdamW, the linear beta warm-up (applied to both KL
# weights); a rerun resumes from `last.ckpt`, and a change of the
# `hierarchical` parameters or the model code trains afresh.

# %%
run = train_variant(params, HIERARCHICAL_VARIANT, paths, datamodule=datamodule)
pd.Series(run.timing)

# %%
curves = ("val/loss", "val/recon", "val/kl_top", "val/kl_lower")
print(run.metrics[["epoch", *curves]].round(3).to_string(index=False))
fig = plot_training_curves({HIERARCHICAL_VARIANT: run.metrics}, columns=curves)
fig.savefig(paths.figures / "hierarchical_training_curves.png", dpi=120)

# %% [markdown]
# ## Evaluate on the held-out test split
#
# The same evaluation as stage 02 (`evaluate_trained_run`: reconstruction against PCA with
# k = z_dim and the mean map, generation from prior samples), written to
# `data/results/<profile>/hvae/` beside the other variants.

# %%
evaluation = evaluate_trained_run(run, datamodule, params, paths, maps)
atlas, result, latents = evaluation.model, evaluation.results, evaluation.latents
model = atlas.network
recon = result.reconstruction
pd.DataFrame(
    {"median r": [recon.model.pearson_r_median, recon.pca.pearson_r_median, recon.mean_map.pearson_r_median]},
    index=["model", "pca", "mean_map"],
).assign(**{"cbvae median r": reference_r})

# %% [markdown]
# ## Are both levels used? Does the top level know the task?
#
# KL per level on the test split, and a task-category probe of each level's posterior
# means: logistic regression fitted on the training split, balanced accuracy on the
# test split (chance = 1 / the number of categories in the test split). The lower
# level and the whole code are probed for context; the gate uses the top level.

# %%
kl = level_kls(model, datamodule, "test", maps)
tasks = pd.concat([table.studies[["id", "task_category"]] for table in datamodule.tables.values()])
latents = latents.merge(tasks, on="id", how="left", validate="one_to_one")
codes = latents.filter(like="z_").to_numpy()
levels = {"top": codes[:, :top_dim], "lower": codes[:, top_dim:], "all": codes}
categories = {name: i for i, name in enumerate(datamodule.encoder.categories)}
labels = latents["task_category"].map(categories).to_numpy()
is_train, is_test = (latents["split"] == "train").to_numpy(), (latents["split"] == "test").to_numpy()
probes = {name: linear_probe(x[is_train], labels[is_train], x[is_test], labels[is_test]) for name, x in levels.items()}
# Active units (Burda et al. 2016): posterior means that vary across the test studies.
active = {name: int((levels[name][is_test].var(0) > ACTIVE_UNIT_THRESHOLD).sum()) for name in ("top", "lower")}
print(f"held-out KL per study: top {kl['kl_top']:.2f} nats, lower {kl['kl_lower']:.2f} nats; active units {active}")
pd.DataFrame(probes).T

# %% [markdown]
# ## Stage gate

# %%
gate = stage_gate(
    kl,
    recon_r=result.reconstruction.model.pearson_r_median,
    reference_recon_r=reference_r,
    probe_accuracy=probes["top"]["balanced_accuracy"],
    chance=probes["top"]["chance"],
    settings=settings,
)
print(f"stage gate: {gate['result']} ({gate['passed']} of {len(gate['criteria'])} criteria)")
pd.DataFrame(gate["criteria"]).T[["value", "threshold", "rule", "pass"]]

# %% [markdown]
# ## The learned hierarchy
#
# Left: how strongly each top-level unit is tied to each lower-level unit, |Pearson r|
# across all studies between the top-level posterior means and the lower level in its
# own coordinates (z_low = m(z_top) + s(z_top) u, through the learned conditional prior).
# Right: the mean (z-scored) activation of each top-level unit per task category.

# %%
with torch.no_grad():
    lower = model.lower_latent(torch.as_tensor(codes, dtype=torch.float32)).numpy()
correlation = level_correlation(levels["top"], lower)
profile_table = category_profile(levels["top"], latents["task_category"].tolist())
fig = plot_hierarchy(correlation, profile_table)
fig.savefig(paths.figures / "hierarchical_structure.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# What the top level does to a map: each top-level unit swept over +/- `traversal_range`
# prior standard deviations, every other unit at the prior mean (widest kernel).

# %%
span = params["evaluation"]["traversal_range"]
steps = np.linspace(-span, span, 5)
order = np.argsort(-levels["top"][is_test].var(0))[: params["evaluation"]["traversal_dims"]]
origin = torch.zeros(1, z_dim)
rows = {f"top {k}": [m[-1].numpy() for m in atlas.traverse(origin, None, int(k), steps)] for k in order}
fig = plot_map_rows(rows, column_titles=[f"{s:+.1f} sd" for s in steps], vmax=None)
fig.suptitle("hvae: top-level traversals", y=1.02)
fig.savefig(paths.figures / "hierarchical_top_traversals.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Results

# %%
summary = HierarchicalResults.from_analysis(
    paths=paths,
    evaluation=result,
    reference=reference,
    top_dim=top_dim,
    gate=gate,
    kl=kl,
    active_units=active,
    probes=probes,
    hierarchy=Hierarchy.from_tables(correlation, profile_table),
    figures=["hierarchical_training_curves.png", "hierarchical_structure.png", "hierarchical_top_traversals.png"],
)
target = summary.save(summary.location(paths))
print(f"wrote {target.relative_to(paths.root)}: stage gate {summary.gate.result}")
