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
# # 09 · Evaluation suite
#
# Stage 02 asked whether each volumetric model reproduces single held-out maps.
# This stage asks what per-study correlations cannot answer:
#
# 1. **Do the models' samples look like real studies, and cover their variety?**
#    Improved precision and recall (Kynkäänniemi et al., 2019; k-NN manifolds,
#    k = 3) and the Fréchet distance between prior samples (decoded with the test
#    studies' metadata) and the held-out real maps, all in one fixed feature space:
#    the first principal components of the training maps. The linear baseline is
#    probabilistic PCA with as many components as the models have latent units;
#    real training maps give the ceiling.
# 2. **Do the latents carry task information beyond Neurosynth?** A zero-shot
#    linear probe on the NeuroStore n-back vs flanker analyses that ship with
#    NiMARE: rendered like Neurosynth studies, encoded by each frozen model with
#    neutral metadata, classified by logistic regression under study-grouped
#    cross-validation, against PCA features at the same size and raw voxels.
#    Studies also in Neurosynth are flagged and reported separately.
# 3. **Is the main model a better atlas than a meta-analysis?** A task category's
#    generated map against the mean of its held-out studies' maps, next to the
#    category's training mean and NiMARE's MKDA of its training studies; whether
#    each map picks out its own category; whether the categories' maps differ as
#    much as the data's; and the classification accuracy score of its samples.
# 4. **Does each component of the main model earn its place?** The ablation
#    protocol: the locked `cbvae` of `params/` retrained with exactly one change
#    per `params/ablations/<name>.yaml` (no FiLM, no gradient reversal, beta = 1,
#    a Spatial Broadcast Decoder, one kernel, half or twice the latent units, no
#    imputation head), each scored on the success criterion its file declared
#    before the run.
#
# Inputs: the best checkpoints of stage 02 and the curated peaks of stage 01.
# Outputs: `data/results/<profile>/evaluation/`, the ablation runs in
# `data/models/<profile>/ablations/` and their results in `data/results/<profile>/ablations/`.

# %% tags=["parameters"]
profile = "quick"

# %%
import pandas as pd

from sematlas.analysis.ablation import ablation_summary, ablation_table, load_ablation, run_ablation
from sematlas.core.io import write_parquet
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.conditional import evaluate_conditional_atlas
from sematlas.evaluation.generative import evaluate_generation
from sematlas.evaluation.probe import run_probe
from sematlas.evaluation.reconstruction import training_sample
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.results import AblationSummary, EvaluationResults, GenerativeQuality, ZeroShotProbe
from sematlas.inference.atlas import AtlasModel
from sematlas.models.registry import MAIN_VARIANT
from sematlas.reporting.figures import CATEGORY_MAP_LABELS, plot_conditional_atlas
from sematlas.reporting.plotting import plot_ablations, plot_generative_quality, plot_probe
from sematlas.reporting.sources import category_maps
from sematlas.training.run import make_datamodule

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
out_dir = paths.results / "evaluation"
datamodule = make_datamodule(params, paths)
atlases = {
    variant: AtlasModel.load(paths.models / variant / "checkpoints" / "best.ckpt", voxel_size=datamodule.voxel_size)
    for variant in params["model"]["variants"]
}
print(f"profile {profile}: evaluating {', '.join(atlases)} on {len(datamodule.tables['test'])} held-out studies")
# The maps of every evaluation below, the ablation runs' included: each study rendered once.
maps = RenderedSplits(datamodule)
# The training maps that fit every linear baseline here (PPCA, the feature space, the probe's PCA).
train_maps = training_sample(datamodule, params["evaluation"]["pca_max_train"], int(params["seed"]), maps)

# %% [markdown]
# ## Generative quality
#
# Precision: the fraction of generated maps that fall inside the manifold of real
# held-out maps. Recall: the fraction of real maps inside the manifold of generated
# ones. Fréchet distance: lower is closer. One prior sample per test study, drawn from
# each model's prior with that study's metadata (`p(z | m)` for `cbvae`). For the main
# model three more sets: `_mixture`, codes (with their metadata) from a Gaussian mixture
# fitted to the training studies' codes, its size chosen on the validation codes (Ghosh
# et al. 2020); `_standard_normal`, codes from N(0, I) whatever the prior; and
# `_reconstruction`, its reconstructions of the held-out maps, the ceiling of any sampler.

# %%
main_latents = (
    {MAIN_VARIANT: pd.read_parquet(paths.results / MAIN_VARIANT / "latents.parquet")} if MAIN_VARIANT in atlases else {}
)
generation = evaluate_generation(
    {v: a.network for v, a in atlases.items()},
    datamodule,
    train_maps,
    params["evaluation"],
    z_dim=params["model"]["z_dim"],
    seed=int(params["seed"]),
    maps=maps,
    latents=main_latents,
)
write_parquet(generation, out_dir / "generative_quality.parquet")
generation.round(4)

# %%
fig = plot_generative_quality(generation)
fig.savefig(paths.figures / "evaluation_precision_recall.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Zero-shot probe: n-back vs flanker
#
# Chance is 0.5 (balanced accuracy). `new_studies` are analyses whose study is not
# in Neurosynth v7 at all: the cleanest test of generalisation.

# %%
probe, analyses = run_probe(atlases, datamodule, train_maps, params)
write_parquet(analyses, out_dir / "probe_analyses.parquet")
print(
    f"{len(analyses)} analyses of {analyses['neurostore_study_id'].nunique()} studies: "
    f"{int(analyses['label'].sum())} n-back, {int((1 - analyses['label']).sum())} flanker; "
    f"{int(analyses['in_neurosynth'].sum())} from studies also in Neurosynth "
    f"({int(analyses['in_training'].sum())} in the models' training split)"
)
probe.round(3)

# %%
fig = plot_probe(probe)
fig.savefig(paths.figures / "evaluation_zero_shot_probe.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The conditional atlas against a meta-analysis
#
# What a meta-analyst asks for is the map of a task category. For every category
# with enough held-out studies (10 by default), its **held-out map** is the mean of
# its test studies' maps (widest kernel). The model's map decodes the category query
# (the category with the other metadata at their defaults) at the prior mean. The
# baselines: the mean of the category's training maps, and NiMARE's multilevel
# kernel density analysis (MKDA; Wager et al. 2007) of the same training studies,
# computed on the atlas's grid. Pearson r with the held-out map per category, with
# a paired bootstrap over categories. **Identification**: the share of categories
# whose map correlates best with its own held-out map (chance: one in the number
# of categories). **Counterfactual size**: the median correlation between every two
# categories' maps, the model's against the held-out maps' (a model that ignores
# its conditioning scores 1; the goal is to lie within 0.1 of the data). The
# **classification accuracy score** (Ravuri & Vinyals, 2019) trains a category
# classifier only on prior samples the model draws from training studies' own
# metadata and tests it on the real held-out maps; the same classifier trained on
# those studies' real maps is the ceiling, on ridge's predictions a linear reference.

# %%
peaks = pd.read_parquet(paths.processed / "peaks.parquet", columns=["id", "x", "y", "z"])
conditional = evaluate_conditional_atlas(
    atlases[MAIN_VARIANT].network,
    datamodule,
    maps,
    peaks,
    int(params["seed"]),
    profile=profile,
    variant=MAIN_VARIANT,
    pca_max_train=params["evaluation"]["pca_max_train"],
    n_features=params["evaluation"]["prd_features"],
)
print(f"wrote {conditional.save(paths, datamodule.grid).relative_to(paths.root)} and its category maps")
pd.Series(conditional.results.headline()).round(3)

# %% [markdown]
# Per category: held-out and training studies, each method's r with the held-out
# map and the held-out category its map matches best.

# %%
conditional.categories.round(3)

# %% [markdown]
# The held-out category map beside the model's map for the category query, the model's
# map averaged over the category's training studies (one prior sample from each study's
# metadata) and the MKDA map, each scaled to its own maximum and cut through the held-out
# map's peak. The maps are drawn from the files just written
# (`evaluation/category_maps/<method>.nii.gz`, one volume per category, for FSLeyes or
# nilearn), as the manuscript's figure 4 is:

# %%
saved_maps = {method: category_maps(method).load(paths) for method in CATEGORY_MAP_LABELS}
fig = plot_conditional_atlas(conditional.results, conditional.categories, saved_maps)
fig.savefig(paths.figures / "evaluation_category_maps.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Ablations
#
# Every file below was written before its run: the one parameter it changes, the
# hypothesis, and the criterion that decides PASS or FAIL. PASS means the locked
# choice is justified by that criterion; FAIL is reported as measured. The locked
# model and every ablation train through the same code (`sematlas.training.run.train_variant`)
# under one budget and are evaluated like stage 02 on the held-out test split, from the
# maps rendered once above (an ablation of the rendering, such as one kernel, renders its
# own). A killed run resumes from its last checkpoint; a finished one is reused.

# %%
ablations = [load_ablation(name, params) for name in params["ablation"]["names"]]
print(f"{len(ablations)} ablations, {params['ablation']['max_epochs']} epochs each (and the locked model):")
for ablation in ablations:
    print(f"- {ablation.name}: {ablation.key} = {ablation.value}; PASS if {ablation.criterion.describe()}")

# %%
locked = run_ablation(params, paths, None, maps)
ablation_runs = {ablation.name: run_ablation(params, paths, ablation, maps) for ablation in ablations}
ablation_results = ablation_table(params, locked, ablation_runs, ablations)
write_parquet(ablation_results, out_dir / "ablations.parquet")
ablation_results.to_csv(out_dir / "ablations.csv", index=False)
print(f"locked model: {', '.join(f'{k} {v:.3f}' for k, v in locked['metrics'].items())}")
ablation_results[["ablation", "change", "criterion", "locked", "ablated", "delta", "verdict", "beats_pca"]].round(3)

# %%
fig = plot_ablations(ablation_results)
fig.savefig(paths.figures / "evaluation_ablations.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# Every metric of every run, as changes from the locked model (positive: the
# ablation is higher):

# %%
ablation_results.set_index("ablation")[[c for c in ablation_results if c.endswith("_delta")]].round(3)

# %% [markdown]
# ## Results file
#
# Everything above, as one JSON next to the other stages' results.

# %%
results = EvaluationResults(
    profile=profile,
    generative_quality=GenerativeQuality.from_table(generation, params["evaluation"]),
    zero_shot_probe=ZeroShotProbe.from_tables(probe, analyses),
    ablations=AblationSummary(**ablation_summary(locked, ablation_results)),
)
print(f"wrote {results.save(results.location(paths)).relative_to(paths.root)}")
pd.DataFrame(
    {
        "model beats PPCA on precision": {
            v: generation.set_index("method").loc[v, "precision"]
            > generation.set_index("method").loc["ppca", "precision"]
            for v in atlases
        },
        "probe beats PCA": {
            v: probe.set_index("features").loc[v, "balanced_accuracy"]
            > probe.set_index("features").loc["pca", "balanced_accuracy"]
            for v in atlases
        },
    }
)
