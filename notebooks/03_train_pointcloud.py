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
# # 03 · Point-cloud conditional VAE
#
# The volumetric models of stage 02 see a study as a blurred density map. Here a study
# is what Neurosynth actually stores: a set of peak coordinates in MNI millimetres. A
# conditional VAE learns a latent space of these sets directly:
#
# - **data**: every study's peaks normalised to exactly `n_points` points (seeded random
#   duplication when it has fewer, dropout when it has more; each original peak keeps the
#   same weight) and scaled into [-1, 1], cached in HDF5 beside the curated tables;
# - **encoder**: PointNet++ (Qi et al., 2017) — two set-abstraction levels (farthest-point
#   sampling, ball query, shared MLP, max-pool) over Gaussian random Fourier features of
#   xyz (Tancik et al., 2020), in plain torch on the CPU;
# - **conditioning**: the same metadata vector as the volumetric `cbvae` (task category,
#   year, log peak count, space, sample size), concatenated into encoder and decoder;
# - **decoder**: an MLP to `n_points x 3` coordinates;
# - **loss**: weighted Chamfer distance (Fan et al., 2017) + debiased Sinkhorn divergence
#   (Cuturi, 2013; Feydy et al., 2019) + beta KL (Kingma & Welling, 2014), in float32.
#
# Training is `sematlas.training.pointcloud.train_pointcloud`, which goes through the same run-folder
# routine as the volumetric models (`sematlas.training.run.fit_run`: fingerprint, resume from
# `last.ckpt`, logs). Outputs: `data/models/<profile>/pointcloud/`,
# `data/results/<profile>/pointcloud/` and `figures/<profile>/pointcloud_*.png`.

# %% tags=["parameters"]
profile = "quick"

# %%
import pandas as pd
import torch

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.pointcloud import cache_path, make_datamodule
from sematlas.evaluation.pointcloud import results_frame
from sematlas.evaluation.trained_run import evaluate_trained_run
from sematlas.reporting.plotting import plot_training_curves
from sematlas.reporting.pointcloud import plot_glass_brain_points, plot_metric_comparison, view_points_3d
from sematlas.training.pointcloud import run_params, train_pointcloud

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
section = params["pointcloud"]
datamodule = make_datamodule(run_params(params), paths)
cache = datamodule.cache
print(
    f"profile {profile}: {len(cache.ids)} studies cached in {cache_path(paths).relative_to(paths.root)} "
    f"as {cache.n_points} points, frame: centre {cache.centre_mm.tolist()} mm, scale {cache.scale_mm} mm; "
    f"splits { ({split: len(table) for split, table in datamodule.tables.items()}) }"
)

# %% [markdown]
# ## What the model sees
#
# How many studies had their peaks duplicated (fewer than `n_points`) or thinned out (more):

# %%
counts = pd.Series(cache.counts)
pd.DataFrame(
    {
        "studies": [
            int((counts < cache.n_points).sum()),
            int((counts == cache.n_points).sum()),
            int((counts > cache.n_points).sum()),
        ]
    },
    index=[f"< {cache.n_points} peaks (duplicated)", f"= {cache.n_points}", f"> {cache.n_points} peaks (dropped)"],
)

# %% [markdown]
# Four validation studies, their original peaks (black) and the cached set (red; a
# duplicated peak is drawn once):

# %%
val = datamodule.tables["val"]
peaks = pd.read_parquet(paths.processed / "peaks.parquet", columns=["id", "x", "y", "z"])
shown = val.studies["id"].astype(str).tolist()[:4]
originals = [peaks.loc[peaks["id"].astype(str) == study_id, ["x", "y", "z"]].to_numpy() for study_id in shown]
fig = plot_glass_brain_points(
    {"peaks": originals, "cached set": cache.to_mm(val.points[:4].numpy())},
    titles=[f"study {i} ({len(p)} peaks)" for i, p in zip(shown, originals)],
)

# %% [markdown]
# ## Train
#
# AdamW with a linear beta warm-up; validation uses the final beta, so `val/loss` is the
# same objective every epoch and selects `best.ckpt`. A rerun after a kill resumes.

# %%
run = train_pointcloud(params, paths, datamodule=datamodule)
pd.Series(run.timing)

# %%
fig = plot_training_curves({"pointcloud": run.metrics}, columns=("val/loss", "val/chamfer", "val/sinkhorn", "val/kl"))
fig.savefig(paths.figures / "pointcloud_training_curves.png", dpi=120)

# %% [markdown]
# ## Evaluate on the held-out test split, in millimetres
#
# Chamfer distance (mean of the two directed weighted-mean nearest-neighbour distances) and
# earth mover's distance (debiased Sinkhorn, p = 1, 0.5 mm blur) between each test study's
# cached set and:
#
# - the model's **reconstruction** (posterior mean decoded with the study's metadata);
# - the **resample noise floor**: the same study's peaks normalised with another seed;
# - the **nearest training study** by Chamfer in raw point space (retrieval, no latent space);
# - **conditional generation** from metadata alone (prior samples decoded with the study's
#   metadata) against the **category pool**: points drawn from the pooled training peaks of
#   the study's task category.
#
# `evaluate_trained_run` (the same routine as stages 02 and 05) loads the best checkpoint,
# evaluates it, adds the training summary and writes `test_results.json`,
# `per_study.parquet` and `latents.parquet` to `data/results/<profile>/pointcloud/`.

# %%
evaluation = evaluate_trained_run(run, datamodule, params, paths)
model, results = evaluation.model, evaluation.results
summaries = results.to_dict()
results_frame(summaries).round(2)

# %%
fig = plot_metric_comparison(summaries)
fig.savefig(paths.figures / "pointcloud_vs_baselines.png", dpi=120)

# %% [markdown]
# ### Does the model beat retrieval and the category pool?
#
# Reported as measured, whatever the answer. Retrieval is a strong baseline for
# reconstruction: it searches the training set with the very metric it is scored on.

# %%
pd.Series(results.headline()).round(3)

# %% [markdown]
# ## Reconstructions
#
# Four test studies over a glass brain: the input set (black), the model's reconstruction
# (red) and the nearest training study (blue).

# %%
test_ids = evaluation.per_study["id"].tolist()[:4]
fig = plot_glass_brain_points(
    {
        "input": evaluation.points["input"][:4],
        "reconstruction": evaluation.points["reconstruction"][:4],
        "nearest training study": evaluation.points["nearest_training"][:4],
    },
    titles=[
        f"study {i}: Chamfer {c:.1f} mm"
        for i, c in zip(test_ids, evaluation.per_study["reconstruction_model_chamfer_mm"])
    ],
)
fig.savefig(paths.figures / "pointcloud_reconstructions.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# The first of them in 3-D (drag to rotate; plotly.js is embedded, so this works offline):

# %% tags=["nbval-ignore-output"]
view_points_3d({"input": evaluation.points["input"][0], "reconstruction": evaluation.points["reconstruction"][0]})

# %% [markdown]
# ## Conditional generation and the inference API
#
# `PointCloudModel.load(checkpoint)` rebuilds the model from the checkpoint alone and works
# in MNI mm: `encode(points, metadata)`, `decode(z, metadata)`, `generate(metadata)`.
# Eight samples each for two task categories, pooled per category:

# %%
requests = [{"task": "emotion", "year": 2012}, {"task": "working_memory", "year": 2012}]
generated = model.generate(requests, n_samples=8, generator=torch.Generator().manual_seed(int(params["seed"])))
for request, sets in zip(requests, generated):
    centroid = [round(float(c), 1) for c in sets.reshape(-1, 3).mean(0)]
    print(f"{request['task']}: mean generated position {centroid} mm")
fig = plot_glass_brain_points(
    {r["task"]: [s.reshape(-1, 3).numpy()] for r, s in zip(requests, generated)},
    titles=["8 prior samples per category"],
)
fig.savefig(paths.figures / "pointcloud_generation.png", dpi=120, bbox_inches="tight")
