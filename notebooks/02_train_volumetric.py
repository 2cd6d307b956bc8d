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
# # 02 · Volumetric generative models
#
# Three variants learn a latent space of Neurosynth density maps (one channel per
# kernel: 6 and 12 mm FWHM), on the profile's grid:
#
# - **`baseline`** — a 3D ResNet-10-style VAE (GroupNorm, MSE + beta KL);
# - **`cbvae`** — the conditional atlas: DenseNet encoder with dilated last block,
#   FiLM conditioning on what the study is about (its 50 LDA-50 topic weights, year,
#   log sample size, log peak count, space label), a conditional prior p(z | m) learned
#   with it (the KL is to it, generation samples it), a calibrated decoder (one learned
#   noise scale per kernel, the sigma-VAE), an amortised imputation head for the sparse
#   sample size, and an adversarial publication-year head that reads the residual
#   (z - mu(m)) / sigma(m) behind a gradient reversal layer;
# - **`tcvae_sbd`** — beta-TCVAE (Chen et al., 2018) with a Spatial Broadcast Decoder.
#
# Training is `sematlas.training.run.train_variant`, the same function that
# `python -m sematlas.training.run --profile P --variant V` runs under `torchrun`/`srun`;
# here it runs in-process on one device. A rerun after a kill resumes from
# `last.ckpt`. Each model is then evaluated on the held-out test split against the
# linear baselines at equal latent size (PCA, ridge from metadata, the mean map).
# Outputs: `data/models/<profile>/<variant>/` and `data/results/<profile>/<variant>/`.

# %% tags=["parameters"]
profile = "quick"

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.criteria import sprint_criterion
from sematlas.evaluation.reconstruction import results_table
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.trained_run import evaluate_trained_run
from sematlas.reporting.plotting import plot_map_rows, plot_method_comparison, plot_training_curves
from sematlas.training.run import make_datamodule, train_variant

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
variants = params["model"]["variants"]
datamodule = make_datamodule(params, paths)
# Every evaluation and figure below reads its unaugmented maps from here: each study is rendered once.
maps = RenderedSplits(datamodule)
print(
    f"profile {profile}: variants {variants}; {datamodule.train_size} training studies "
    f"({'subset' if params['training']['use_subset'] else 'all studies'}), grid {datamodule.grid.shape} "
    f"at {datamodule.voxel_size} mm, network grid {datamodule.grid.network_shape} (the brain's box), "
    f"{datamodule.n_channels} channels"
)

# %% [markdown]
# ## What the models see
#
# Peaks are rendered on the fly (flip and kernel augmentation while training). Four
# validation studies, widest kernel, orthogonal slices through the grid centre:

# %%
examples = maps.batch(datamodule, "val", range(4))
fig = plot_map_rows(
    {"input": [v[-1].numpy() for v in datamodule.grid.to_native(examples["image"])]},
    column_titles=[f"study {i}" for i in examples["id"]],
)

# %% [markdown]
# ## Train
#
# Each variant trains with AdamW (beta2 = 0.995) and a linear beta warm-up; `cbvae`
# learns its conditional prior p(z | m) and its decoder's noise scale (one per kernel,
# logged as `noise_sigma_<c>`) and ramps its gradient-reversal factor; `tcvae_sbd`
# warms beta_TC up.

# %%
runs = {variant: train_variant(params, variant, paths, datamodule=datamodule) for variant in variants}
pd.DataFrame({v: r.timing for v, r in runs.items()}).T

# %%
fig = plot_training_curves({v: r.metrics for v, r in runs.items()})
fig.savefig(paths.figures / "volumetric_training_curves.png", dpi=120)

# %% [markdown]
# While training, every `recon_every_n_epochs` epochs each run saved input /
# reconstruction / |difference| slices of fixed validation studies to
# `<run>/recon/epoch_<E>/`. The latest, first study, per variant:

# %%
for variant, run in runs.items():
    epochs = sorted((run.run_dir / "recon").glob("epoch_*"))
    if epochs:
        latest = sorted(epochs[-1].glob("study_*.png"))[0]
        print(f"{variant}: {latest.relative_to(paths.root)}")
        display(Image(filename=str(latest)))

# %% [markdown]
# ## Evaluate on the held-out test split
#
# Reconstruction (input map -> model -> map) against PCA with k = z_dim fitted on the
# training maps and against the training mean map; conditional generation from
# metadata alone (the decoded prior mean, decode(mu(m), m)) against ridge regression and
# an MLP regressor from the same metadata vector, each with a paired bootstrap CI; on the
# first `evaluation.estimator_studies` test studies the decoded prior mean is also compared
# with the average of `evaluation.estimator_samples` prior samples. Metrics inside the brain mask on the
# widest-kernel channel: voxel-wise Pearson r, SSIM, MSE, PSNR. `evaluate_trained_run`
# (the same routine as stages 03 and 05) loads each best checkpoint, evaluates it, adds
# the training summary and writes `test_results.json`, `per_study.parquet` and
# `latents.parquet` to `data/results/<profile>/<variant>/`.

# %%
evaluations = {variant: evaluate_trained_run(run, datamodule, params, paths, maps) for variant, run in runs.items()}
atlases = {variant: evaluation.model for variant, evaluation in evaluations.items()}
results = {variant: evaluation.results for variant, evaluation in evaluations.items()}
table = results_table(results)
table.pivot_table(index="label", values=["pearson_r_median", "ssim_median", "mse_median"]).round(4)

# %%
fig = plot_method_comparison(table)
fig.savefig(paths.figures / "volumetric_vs_linear_baselines.png", dpi=120)

# %% [markdown]
# ### Does the model beat PCA at equal latent size? Year de-biasing? Active units?
#
# Reported as measured, whatever the answer.

# %%
pd.DataFrame({variant: r.headline() for variant, r in results.items()}).T

# %% [markdown]
# Sprint criterion of the research plan (`sematlas.evaluation.criteria.sprint_criterion`):
# the best validation reconstruction error of `cbvae` (summed squared error) lower than
# `baseline`'s on the same data. The losses themselves no longer compare: `cbvae`'s is a
# calibrated likelihood in nats, the plain VAE's a squared error.

# %%
criterion = sprint_criterion(results)
criterion if len(criterion) else "needs both baseline and cbvae in model.variants"

# %% [markdown]
# ## Reconstructions
#
# Four test studies: input, and each model's reconstruction (widest kernel).

# %%
test_batch = maps.batch(datamodule, "test", range(4))
rows = {"input": [v[-1].numpy() for v in datamodule.grid.to_native(test_batch["image"])]}
with torch.no_grad():
    for variant, atlas in atlases.items():
        x_hat = atlas.network(test_batch["image"], test_batch["meta"])["x_hat"]
        rows[variant] = [atlas.to_native(v)[-1].numpy() for v in x_hat]
fig = plot_map_rows(rows, column_titles=[f"study {i}" for i in test_batch["id"]])
fig.savefig(paths.figures / "volumetric_reconstructions.png", dpi=120)

# %% [markdown]
# ## Latent traversals
#
# From a test study's latent code, the most active dimensions swept over
# +/- `traversal_range` prior standard deviations (decoded with the study's metadata).

# %%
n_dims, span = params["evaluation"]["traversal_dims"], params["evaluation"]["traversal_range"]
steps = np.linspace(-span, span, 5)
one = {key: value[:1] for key, value in test_batch["meta"].items()}
for variant, atlas in atlases.items():
    mu = torch.as_tensor(evaluations[variant].latents.filter(like="z_").to_numpy())
    order = torch.argsort(mu.var(0), descending=True)[:n_dims]
    base = atlas.encode(test_batch["image"][:1], one)
    rows = {f"z{dim}": [m[-1].numpy() for m in atlas.traverse(base, one, dim, steps)] for dim in order.tolist()}
    fig = plot_map_rows(rows, column_titles=[f"{s:+.1f} sd" for s in steps], vmax=None)
    fig.suptitle(f"{variant}: latent traversals", y=1.02)
    fig.savefig(paths.figures / f"volumetric_traversal_{variant}.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The inference API
#
# `AtlasModel.load(checkpoint)` gives `encode`, `decode`, `generate`, `generate_spread`,
# `move_codes` (counterfactuals) and `to_nifti`. A request says what a study is about in one
# of three ways: a task category (its training studies' mean topic profile), topic weights
# (by index or name), or a few words matched to the LDA-50 topics' key words. Each map is
# the decoded prior mean mu(m); beside it, the standard deviation of the decoded maps over
# samples of p(z | m): where the map depends on what the request leaves open.

# %%
main = "cbvae" if "cbvae" in atlases else variants[0]
atlas = atlases[main]
queries = {
    "task: pain": {"task": "pain", "year": 2012},
    "words: working memory": {"text": "working memory", "year": 2012},
    "topic 40 (faces)": {"topics": {40: 1.0}, "year": 2012},
}
generated = atlas.generate(list(queries.values()))
_, spread = atlas.generate_spread(list(queries.values()), params["evaluation"]["n_prior_samples"], int(params["seed"]))
inside = torch.from_numpy(datamodule.grid.mask())
difference = (generated[1, -1] - generated[0, -1]).abs()[inside]
print(f"{main}: mean |working memory - pain| inside the brain = {difference.mean():.4f}")
fig = plot_map_rows(
    {label: [g[-1].numpy(), s[-1].numpy()] for label, g, s in zip(queries, generated, spread)},
    column_titles=["prior mean, decoded", "sd over prior samples"],
    vmax=None,
)
image = atlas.to_nifti(generated[1])
print(image.shape, image.affine.diagonal()[:3], "mm voxels")
