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
# # 06 · Canonical correlation between the volumetric and point-cloud latent spaces
#
# Stages 02 and 03 learnt two descriptions of every study: the volumetric model encodes the
# study's smoothed density map, the point-cloud model its raw set of peak coordinates. Both
# see the same metadata, but they are trained separately, on different representations and
# losses. Do their latent spaces agree on what varies between studies?
#
# Canonical correlation analysis (CCA; Hotelling, 1936) finds pairs of directions, one in
# each latent space, whose study scores (the *canonical variates*) are maximally correlated;
# each further pair is uncorrelated with the earlier ones. A high canonical correlation
# means a dimension of between-study variation that both models represent, a *shared
# dimension*.
#
# - **studies**: the held-out test split, which neither model trained on, paired by study id;
# - **fit**: each latent space standardised on these studies, then scikit-learn's `CCA`;
# - **significance**: a permutation test of shuffled pairings (the volumetric codes of one
#   study paired with the point-cloud codes of another), stepwise (Winkler et al., 2020):
#   the null of component *k* is the first canonical correlation after the first *k - 1*
#   observed variates are removed from both spaces (a plain shuffled null of the *k*-th
#   correlation ignores what the earlier components explain and rejects far too often,
#   see `sematlas.analysis.cca.stepwise_permutation_null`). CCA always finds *some* correlation,
#   and more so with few studies and many latent units: the null is fitted the same way, so
#   it carries the same optimism. `p` is per component, `p_fwe` is its running maximum
#   (components tested in order; family-wise error control by closure);
# - **reading a shared dimension**: the latent units most correlated with each variate
#   (structure coefficients), and the variate decoded to a brain map and to a peak set by
#   stepping ±2 SD along it from the mean code, with one fixed metadata request.
#
# Library: `sematlas.analysis.cca`. Outputs: `data/results/<profile>/cca/` (`results.json`,
# `shared_dimensions.parquet`, decoded NIfTI maps and point sets) and
# `figures/<profile>/cca_*.png`.

# %% tags=["parameters"]
profile = "quick"

# %%
import time

import numpy as np
import pandas as pd
import torch

from sematlas.analysis.cca import (
    STEP_SD,
    LatentCCA,
    canonical_correlations,
    neutral_metadata,
    paired_latents,
    write_maps,
)
from sematlas.analysis.results import CCAResults, DecodedVariates, LatentDims
from sematlas.core.io import write_parquet
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.metrics import masked_pearson
from sematlas.evaluation.pointcloud import chamfer_mm
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.pointcloud import PointCloudModel
from sematlas.reporting.cca import plot_canonical_correlations, plot_decoded_maps
from sematlas.reporting.pointcloud import plot_glass_brain_points

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
section = params["cca"]
variant = section["variant"]
out = paths.results / "cca"

x, y = paired_latents(
    pd.read_parquet(paths.results / variant / "latents.parquet"),
    pd.read_parquet(paths.results / "pointcloud" / "latents.parquet"),
)
studies = pd.read_parquet(paths.processed / "studies.parquet").set_index("id").loc[x.index]
print(
    f"profile {profile}: {len(x)} held-out (test) studies in both latent tables; "
    f"volumetric '{variant}' latents {x.shape[1]}-d, point-cloud latents {y.shape[1]}-d"
)

# %% [markdown]
# ## Fit and permutation test

# %%
started = time.perf_counter()
cca = LatentCCA(section["n_components"], section["n_permutations"], seed=int(params["seed"])).fit(
    x.to_numpy(), y.to_numpy()
)
fit_seconds = time.perf_counter() - started
exact = canonical_correlations(*(scaler.transform(v.to_numpy()) for scaler, v in zip(cca.scalers_, (x, y))))
agreement = float(np.abs(exact[: cca.n_components_] - cca.correlations_).max())
print(
    f"{cca.n_components_} components, {cca.n_permutations} permutations each: {fit_seconds:.2f} s; "
    f"largest difference between scikit-learn's and the exact (SVD) canonical correlations: {agreement:.1e}"
)
summary = pd.DataFrame(cca.results()).set_index("component")
summary.round(3)

# %% [markdown]
# Bars: the observed canonical correlations; grey: the middle 95% of each component's
# permutation null, with its 95th percentile as a line. A bar above the line is
# significant at 5% on its own.

# %%
fig = plot_canonical_correlations(cca)
fig.savefig(paths.figures / "cca_correlations.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Shared dimensions
#
# For each canonical pair, the latent units of each model most correlated with its
# variate (`structure`, a correlation on the held-out studies) and their canonical
# `weight` (on standardised units). Weights of correlated units trade off against each
# other; the structure coefficients are the safer reading.

# %%
shared = cca.shared_dimensions((list(x.columns), list(y.columns)))
write_parquet(shared, out / "shared_dimensions.parquet")
shared.round(3)

# %% [markdown]
# ## Decoding the top canonical variates
#
# A variate is a direction in each latent space. It is decoded by its expected latent
# code at -2, 0 and +2 SD of the variate (the mean code plus each unit's SD times its
# structure coefficient; `LatentCCA.latent_path`): the volumetric code through the
# volumetric decoder to a density map (its widest-kernel channel), the point-cloud code through
# the point-cloud decoder to a peak set. Both decoders are conditional, so every code is
# decoded with the same request: the most common task category of the held-out studies
# and their median year (peak count and space at the training defaults, sample size
# imputed). What changes along a row is the variate alone.

# %%
metadata = neutral_metadata(studies)
atlas = AtlasModel.load(paths.models / variant / "checkpoints" / "best.ckpt", voxel_size=params["render"]["voxel_size"])
pointcloud = PointCloudModel.load(paths.models / "pointcloud" / "checkpoints" / "best.ckpt")
steps = [-STEP_SD, 0.0, STEP_SD]
n_decoded = min(section["n_decoded"], cca.n_components_)
print(f"decoding {n_decoded} variate(s) at {steps} SD with metadata {metadata}")

mask = torch.from_numpy(atlas.grid.mask())
images, map_pairs, point_sets, changes = {}, [], [], []
for k in range(n_decoded):
    volumes = atlas.decode(torch.from_numpy(cca.latent_path(0, k, steps)).float(), metadata)
    for step, volume in zip(("minus", "mean", "plus"), volumes):
        images[f"variate_{k + 1}_{step}"] = atlas.to_nifti(volume)
    map_pairs.append((images[f"variate_{k + 1}_minus"], images[f"variate_{k + 1}_plus"]))
    points = pointcloud.decode(torch.from_numpy(cca.latent_path(1, k, steps)).float(), metadata)
    point_sets.append(points.numpy())
    changes.append(
        {
            "component": k + 1,
            "map_r": float(masked_pearson(volumes[:1, -1][:, mask], volumes[2:, -1][:, mask])),
            "points_chamfer_mm": float(chamfer_mm(points[:1], points[2:])),
        }
    )
written = write_maps(images, out)
decoded_points = pd.DataFrame(
    [
        {"component": k + 1, "step_sd": step, "point": i, "x": p[0], "y": p[1], "z": p[2]}
        for k, sets in enumerate(point_sets)
        for step, points in zip(steps, sets)
        for i, p in enumerate(points)
    ]
)
write_parquet(decoded_points, out / "decoded_points.parquet")
print(f"wrote {len(written)} NIfTI maps and decoded_points.parquet to {out.relative_to(paths.root)}")
pd.DataFrame(changes).set_index("component").round(3)

# %% [markdown]
# How much a variate changes each decoded output between -2 and +2 SD: `map_r`, the
# voxel-wise correlation of the two maps inside the brain mask, and `points_chamfer_mm`,
# the Chamfer distance between the two point sets. A map correlation near 1 and a Chamfer
# distance of a few mm mean the decoder hardly moves along that direction.
#
# Decoded density maps: glass brains at -2 and +2 SD (same colour scale), and their
# difference (red: denser towards +2 SD).

# %%
titles = [f"variate {k + 1} (r = {cca.correlations_[k]:.2f}, p = {cca.p_values_[k]:.3f})" for k in range(n_decoded)]
fig = plot_decoded_maps(map_pairs, titles, STEP_SD)
fig.savefig(paths.figures / "cca_decoded_maps.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# Decoded peak sets of the same variates: the mean code (black), +2 SD (red) and -2 SD (blue).

# %%
sets = np.stack(point_sets)
fig = plot_glass_brain_points(
    {"mean": sets[:, 1], f"+{STEP_SD:g} SD": sets[:, 2], f"-{STEP_SD:g} SD": sets[:, 0]}, titles
)
fig.savefig(paths.figures / "cca_decoded_points.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Results file

# %%
results = CCAResults.from_fit(
    cca,
    profile=profile,
    variant=variant,
    split="test",
    dims=LatentDims(volumetric=x.shape[1], pointcloud=y.shape[1]),
    n_studies=len(x),
    n_components_requested=section["n_components"],
    sklearn_vs_exact_max_abs_diff=agreement,
    fit_seconds=fit_seconds,
    decoded=DecodedVariates(n_variates=n_decoded, steps_sd=steps, metadata=metadata, changes=changes),
)
print(f"wrote {results.save(results.location(paths)).relative_to(paths.root)}")

# %% [markdown]
# ## Closing note
#
# The canonical correlations and their permutation p-values, read from the results above:

# %%
print(
    f"{results.n_studies} held-out studies, {variant} ({x.shape[1]}-d) vs point cloud ({y.shape[1]}-d), "
    f"{cca.n_permutations} shuffled pairings per component:"
)
for record in results.components:
    verdict = "shared" if record.p_fwe < 0.05 else "not distinguishable from chance"
    print(
        f"  component {record.component}: r = {record.r:.3f}, p = {record.p:.3f} "
        f"(p_fwe = {record.p_fwe:.3f}; null 95th percentile {record.null_q95:.3f}) -> {verdict}"
    )

# %% [markdown]
# A significant component is a dimension of between-study variation that the map model
# and the peak-set model both encode, learnt independently; its decoded map and point set
# show what it is in the brain. A non-significant one may still be real: with few
# held-out studies and many latent units CCA overfits, and the permutation null says how
# large a correlation chance alone produces here. On `ci` (about two dozen studies, toy
# models) no shared dimension is expected; the `quick` and `full` profiles are where the
# question is asked.
