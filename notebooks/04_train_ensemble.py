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
# # 04 · Uncertainty: deep ensembles of the conditional beta-VAE
#
# How sure is the atlas of a map it draws? Two kinds of uncertainty, per voxel:
#
# - **aleatoric**: noise inherent in the data (where studies of the same kind
#   disagree anyway). The decoder predicts a mean *and* a variance per voxel and is
#   trained with the Gaussian negative log-likelihood (Kendall & Gal, 2017).
# - **epistemic**: what the model does not know, measured as the disagreement
#   between several models that fit the training data equally well.
#
# Three ways to get those several models are compared (`ensemble.methods`):
#
# - **snapshot** ensemble (Huang et al., 2017): one run with a cosine learning rate
#   restarted every `cycle_epochs`; the model at the end of each of the K cycles is a member.
#   The run continues from stage 02's trained `cbvae`, so its members cost K x `cycle_epochs`
#   epochs of fine-tuning rather than a training from scratch;
# - **independent** members (Lakshminarayanan et al., 2017): K runs from different seeds,
#   each from scratch (their independence is the point);
# - **MC dropout** (Gal & Ghahramani, 2016): the snapshot run's final model with dropout
#   left on at test time, S stochastic passes.
#
# The predictive distribution of a map is the Gaussian with mean = the mean of the
# members' means and variance = aleatoric (mean predicted variance) + epistemic
# (variance of the members' means). It is judged by **calibration** on held-out voxels
# (expected calibration error, ECE; goal < 0.15, with temperature scaling fitted on
# the validation split when it exceeds 0.10) and by **out-of-distribution detection**:
# does the ensemble disagree more on maps unlike any study (goal AUROC > 0.85)?
# Outputs: `data/models/<profile>/ensemble/`, `data/results/<profile>/ensemble/`
# (`test_results.json`, NIfTI maps) and figures under `figures/<profile>/`.

# %% tags=["parameters"]
profile = "quick"

# %%
import numpy as np
import pandas as pd
import torch

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.criteria import ensemble_verdicts
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.results import EnsembleMethodResults, EnsembleResults
from sematlas.evaluation.uncertainty import CALIBRATION_LEVELS, evaluate_ensemble, ood_peak_lists, render_peak_lists
from sematlas.inference.ensemble import AtlasEnsemble, write_uncertainty_maps
from sematlas.reporting.plotting import plot_map_rows
from sematlas.reporting.uncertainty import plot_ood_histograms, plot_reliability
from sematlas.training.ensemble import initial_weights, train_independent_members, train_snapshot_ensemble
from sematlas.training.run import make_datamodule

params = load_params(profile)
settings = params["ensemble"]
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
results_dir = paths.results / "ensemble"
methods = settings["methods"]
datamodule = make_datamodule(params, paths)
# Every evaluation below reads its validation and test maps from here: each study is rendered once.
maps = RenderedSplits(datamodule)
n_eval = settings["n_eval"] or None
n_test = min(n_eval or len(datamodule.tables["test"]), len(datamodule.tables["test"]))
print(
    f"profile {profile}: methods {methods}; K = {settings['n_members']} members, "
    f"{settings['mc_samples']} MC-dropout passes; {datamodule.train_size} training studies, "
    f"{n_test} test studies, grid {datamodule.grid.shape} at {datamodule.voxel_size} mm"
)

# %% [markdown]
# ## Train
#
# The snapshot run starts from the weights of stage 02's `cbvae`
# (`data/models/<profile>/cbvae/checkpoints/best.ckpt`) and trains K cycles of
# `cycle_epochs` epochs: the learning rate starts each cycle at `training.lr` and is
# annealed along a cosine to `lr_min_ratio` times that, and a snapshot (a complete
# checkpoint that loads alone) is written at each cycle's end. The member's architecture
# adds to the main model's a variance output head (the aleatoric decoder), which starts
# from the seeded initialisation, and dropout, which has no weights; every other tensor
# is the main model's. The KL weights start at their end values (the main model went
# through its warm-up). A retrained main model (another checkpoint hash) retrains the
# snapshots. The same run's final model serves MC dropout. Independent members, when
# asked for, train `member_epochs` epochs each from scratch, from seeds
# `seed + seed_offset * k`. Reruns reuse finished runs and resume killed ones.

# %%
runs = {}
if {"snapshot", "mc_dropout"} & set(methods):
    runs["snapshot"] = train_snapshot_ensemble(params, paths, datamodule)
if "independent" in methods:
    runs["independent"] = train_independent_members(params, paths, datamodule)
snapshot_files = sorted((runs["snapshot"].run_dir / "snapshots").glob("snapshot_*.ckpt")) if "snapshot" in runs else []
train_seconds = {
    # The fine-tuning alone: the main model it starts from is stage 02's, trained there.
    "snapshot": runs["snapshot"].timing["train_seconds"] if "snapshot" in runs else None,
    # MC dropout needs no training of its own: it reuses the snapshot run's final model.
    "mc_dropout": runs["snapshot"].timing["train_seconds"] if "snapshot" in runs else None,
    "independent": sum(r.timing["train_seconds"] for r in runs["independent"]) if "independent" in runs else None,
}
pd.DataFrame({m: {"train seconds": train_seconds[m]} for m in methods}).T

# %%
if "snapshot" in runs:
    start = initial_weights(runs["snapshot"])
    if start is not None:
        print(
            f"the snapshot run started from {start['checkpoint']} (sha256 {start['sha256'][:12]}): "
            f"{len(start['loaded'])} tensors inherited, new: {', '.join(start['new']) or 'none'}"
        )
    curve = runs["snapshot"].metrics
    print(f"{len(snapshot_files)} snapshots: {[f.name for f in snapshot_files]}")
    shown_columns = [c for c in ("epoch", "val/loss", "val/recon", "val/recon_se") if c in curve]
    print(curve[shown_columns].round(2).to_string(index=False))

# %% [markdown]
# ## The ensembles
#
# Each method is an `AtlasEnsemble` (members are `AtlasModel`s), next to a single
# deterministic member as the reference for reconstruction quality.

# %%
ensembles: dict[str, tuple[AtlasEnsemble, AtlasEnsemble]] = {}
seed = int(params["seed"])
if "snapshot" in methods:
    ensembles["snapshot"] = (AtlasEnsemble.load(snapshot_files), AtlasEnsemble.load(snapshot_files[-1]))
if "mc_dropout" in methods:
    ensembles["mc_dropout"] = (
        AtlasEnsemble.load(snapshot_files[-1], mc_samples=settings["mc_samples"], seed=seed),
        AtlasEnsemble.load(snapshot_files[-1]),
    )
if "independent" in methods:
    members = [r.best_checkpoint for r in runs["independent"]]
    ensembles["independent"] = (AtlasEnsemble.load(members), AtlasEnsemble.load(members[0]))
{method: ensemble.n_passes for method, (ensemble, _) in ensembles.items()}

# %% [markdown]
# ## Out-of-distribution maps
#
# Three kinds of maps unlike any study, each paired with a test study (its metadata
# and its number of peaks) and rendered by the same renderer and kernels:
#
# - **uniform**: peaks drawn uniformly in the brain mask;
# - **white_matter**: the test study's own peaks, each moved to the nearest
#   white-matter voxel (nilearn's MNI152 template): its layout, off the grey matter;
# - **nimare_synthetic**: studies from NiMARE's synthetic coordinate generator
#   (a few shared foci plus noise foci).

# %%
n_ood = min(settings["ood_maps"], n_test)
ood_peaks = ood_peak_lists(datamodule, n_ood, settings["ood_true_foci"], seed)
ood_images = {kind: render_peak_lists(datamodule, peaks) for kind, peaks in ood_peaks.items()}
test_example = datamodule.grid.to_native(maps.batch(datamodule, "test", [0])["image"][0])
fig = plot_map_rows(
    {
        "test study": [test_example[-1].numpy()],
        **{kind: [datamodule.grid.to_native(images[0, -1]).numpy()] for kind, images in ood_images.items()},
    }
)
fig.savefig(paths.figures / "ensemble_ood_examples.png", dpi=120)

# %% [markdown]
# ## Calibration, OOD detection and reconstruction, per method
#
# On the widest-kernel channel inside the brain mask. The temperature is fitted on the
# validation split (one scalar multiplying the predictive standard deviation) and
# applied when the validation ECE exceeds `temperature_threshold`; the test ECE is
# reported before and after.

# %%
method_results, details = {}, {}
for method, (ensemble, single) in ensembles.items():
    summary, details[method] = evaluate_ensemble(
        ensemble, single, datamodule, ood_images, settings["temperature_threshold"], n_eval=n_eval, maps=maps
    )
    method_results[method] = EnsembleMethodResults.from_evaluation(summary, train_seconds[method])
results = EnsembleResults(
    profile=profile,
    methods=method_results,
    n_test=n_test,
    n_ood_per_kind=n_ood,
    calibration_levels=CALIBRATION_LEVELS,
    settings=settings,
)
results.table().round(3)

# %% [markdown]
# Written to `data/results/<profile>/ensemble/test_results.json`, and judged against the
# goals of `sematlas.evaluation.criteria` (`ECE_GOAL`, `OOD_AUROC_GOAL`): the test ECE
# after temperature scaling, and the OOD AUROC of both scores for every kind.

# %%
print(f"wrote {results.save(results.location(paths)).relative_to(paths.root)}")
ensemble_verdicts(results).round(3)

# %% [markdown]
# ### Reliability diagram
#
# Observed fraction of held-out voxel values inside the central p-interval of the
# predictive Gaussian, against p; the diagonal is perfect calibration.

# %%
curves = {}
for method, detail in details.items():
    curves[f"{method}, before"] = detail["coverage_before"]
    if results.methods[method].temperature_applied:
        curves[f"{method}, T = {results.methods[method].temperature:.2f}"] = detail["coverage_after"]
fig = plot_reliability(curves)
fig.savefig(paths.figures / "ensemble_reliability.png", dpi=120)

# %% [markdown]
# ### OOD scores on test maps and on OOD maps
#
# Two scores per map (`sematlas.evaluation.uncertainty.ood_scores`): the ensemble's disagreement (mean
# epistemic variance), which is what an ensemble is meant to offer, and the predictive
# negative log-likelihood of the input map, which also counts maps the members agree on
# but cannot reconstruct within their stated uncertainty.

# %%
fig = plot_ood_histograms({method: detail["scores"] for method, detail in details.items()})
fig.savefig(paths.figures / "ensemble_ood_scores.png", dpi=120)

# %% [markdown]
# ## Uncertainty maps of generated maps
#
# One map per task category, generated from metadata alone (prior mean), with its
# aleatoric and epistemic standard deviations. Every category's three maps are written
# as NIfTI (MNI152, the model's grid) under `data/results/<profile>/ensemble/nifti/<method>/`.

# %%
categories = list(next(iter(ensembles.values()))[0].members[0].encoder.categories)
requests = [{"task": category} for category in categories]
generated = {method: ensemble.generate(requests) for method, (ensemble, _) in ensembles.items()}
for method, prediction in generated.items():
    files = write_uncertainty_maps(ensembles[method][0], prediction, categories, results_dir / "nifti" / method)
    print(f"{method}: {len(files)} NIfTI files in {files[0].parent.relative_to(paths.root)}")
main_method = next(iter(generated))
shown = categories[:4]
prediction = generated[main_method]
fig = plot_map_rows(
    {
        "mean": [prediction.mean[i, -1].numpy() for i in range(len(shown))],
        "aleatoric sd": [prediction.aleatoric[i, -1].sqrt().numpy() for i in range(len(shown))],
        "epistemic sd": [prediction.epistemic[i, -1].sqrt().numpy() for i in range(len(shown))],
    },
    column_titles=shown,
    vmax=None,
)
fig.suptitle(f"{main_method} ensemble: generated maps and their uncertainty", y=1.02)
fig.savefig(paths.figures / "ensemble_uncertainty_maps.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The inference API
#
# `sematlas.AtlasEnsemble.load(folder_or_checkpoints)` gives `reconstruct`,
# `encode`/`decode` (one latent code per member), `generate` and `to_nifti`; each
# returns the mean, aleatoric and epistemic maps.

# %%
ensemble = ensembles[main_method][0]
pain = ensemble.generate({"task": "pain", "year": 2012}) if "pain" in categories else prediction
brain = torch.from_numpy(ensemble.grid.mask())
print(
    f"{main_method}: mean aleatoric sd {pain.aleatoric[0, -1][brain].sqrt().mean():.4f}, "
    f"mean epistemic sd {pain.epistemic[0, -1][brain].sqrt().mean():.4f} inside the brain"
)
image = ensemble.to_nifti(pain.epistemic[0])
print(image.shape, np.diag(image.affine)[:3], "mm voxels")
