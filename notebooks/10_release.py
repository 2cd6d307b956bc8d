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
# # 10 · Release
#
# Everything the earlier stages produced, packed so that people who never open
# Python can use it:
#
# - **ONNX** encoders and decoders of every volumetric model and the ensemble's decoder
#   (predictive mean, aleatoric and epistemic variance), each checked against PyTorch with
#   onnxruntime (largest absolute difference below `1e-4`, or the stage fails);
# - **NIfTI** maps in MNI152 space: a generated map per task category, counterfactual series
#   over publication years (4-D, one volume per year), and every map the analysis stages wrote
#   (uncertainty maps, cluster centroids, canonical variates, drift maps);
# - **tables** as CSV and Parquet with a data dictionary (table, column, type, unit, meaning);
# - `metadata_encoder.json`, which says how a request (task, year, sample size) becomes the
#   vector the ONNX decoders take; the Node.js example in `examples/node/` builds it from this file;
# - a `README.md` of the contents, `SHA256SUMS` (`sha256sum -c SHA256SUMS`) and a reproducible
#   `.tar.gz` beside the folder, ready to upload to Zenodo or NeuroVault (by hand: the upload
#   needs the network; see the README).
#
# Inputs: the checkpoints and results of stages 02-09. Output: `data/release/<profile>/`.

# %% tags=["parameters"]
profile = "quick"

# %%
import shutil

import numpy as np
import onnxruntime
import pandas as pd
import torch

import sematlas
from sematlas.core.io import package_versions, read_json, sha256_file, write_json
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.ensemble import AtlasEnsemble
from sematlas.release.archive import archive, copy_tree_files, verify_checksums, write_checksums, write_release_readme
from sematlas.release.onnx import export_ensemble_onnx, export_model_onnx, metadata_encoder_spec, metadata_vector
from sematlas.release.tables import export_tables, release_tables

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
voxel_size = params["render"]["voxel_size"]
release = paths.release
if release.exists():
    shutil.rmtree(release)  # a release is rebuilt whole, so no stale file survives in it
release.mkdir(parents=True)
atlases = {
    variant: AtlasModel.load(paths.models / variant / "checkpoints" / "best.ckpt", voxel_size=voxel_size)
    for variant in params["model"]["variants"]
}
snapshot_folder = paths.models / "ensemble" / "snapshot"
ensemble = AtlasEnsemble.load(snapshot_folder, voxel_size=voxel_size) if snapshot_folder.is_dir() else None
print(
    f"profile {profile}: releasing {', '.join(atlases)}"
    + (f" and the {len(ensemble.members)}-member snapshot ensemble" if ensemble else "")
    + f" into {release}"
)

# %% [markdown]
# ## ONNX models and their parity with PyTorch
#
# Each graph is exported with a dynamic batch dimension and then run by onnxruntime on a
# batch of another size than the one it was traced with.

# %%
onnx_dir = release / "onnx"
exports = {variant: export_model_onnx(atlas, onnx_dir, variant) for variant, atlas in atlases.items()}
if ensemble is not None:
    exports["ensemble"] = {"decoder": export_ensemble_onnx(ensemble, onnx_dir, "ensemble")}
parity = pd.DataFrame(
    [
        {"model": model, "graph": part, "file": info["file"], "max_abs_difference": info["max_abs_difference"]}
        for model, parts in exports.items()
        for part, info in parts.items()
    ]
)
worst = parity["max_abs_difference"].max()
if worst >= 1e-4:
    raise RuntimeError(f"ONNX and PyTorch disagree by {worst:.2e} (>= 1e-4):\n{parity}")
parity

# %%
conditional = next(atlas for atlas in atlases.values() if atlas.is_conditional)
write_json(metadata_encoder_spec(conditional), release / "metadata_encoder.json")

# %% [markdown]
# ## NIfTI maps
#
# The conditional model's map of every task category (year 2015, unknown sample size, averaged
# over `evaluation.n_prior_samples` prior samples), and its counterfactual series: the same
# category across publication years, one volume per year.

# %%
nifti_dir = release / "nifti"
categories = conditional.encoder.categories
years = [1998, 2003, 2008, 2013, 2018]
for folder in ("examples", "counterfactual"):
    (nifti_dir / folder).mkdir(parents=True, exist_ok=True)
n_samples = params["evaluation"]["n_prior_samples"]
seed = int(params["seed"])
examples = conditional.generate([{"task": task, "year": 2015} for task in categories], n_samples, seed)
for task, volume in zip(categories, examples, strict=True):
    conditional.to_nifti(volume).to_filename(nifti_dir / "examples" / f"{task}.nii.gz")
for task in categories:
    series = conditional.generate([{"task": task, "year": year} for year in years], n_samples, seed)[:, -1]
    image = conditional.grid.to_nifti(series.permute(1, 2, 3, 0).numpy(), f"sematlas {task} {years[0]}-{years[-1]}")
    image.to_filename(nifti_dir / "counterfactual" / f"{task}_by_year.nii.gz")
copied = copy_tree_files(paths.results, nifti_dir, "*.nii.gz")
print(
    f"{len(categories)} example maps, {len(categories)} year series ({years}), "
    f"{len(copied)} maps from the analysis stages"
)

# %% [markdown]
# ## Tables and the data dictionary
#
# The curated study table, then every table a stage wrote under `data/results/<profile>/`,
# named `<stage folder>_<table>`.

# %%
tables = release_tables(paths.processed, paths.results)
dictionary = export_tables(tables, release / "tables")
copy_tree_files(paths.results, release / "results", "*.json")
print(f"{len(tables)} tables, {len(dictionary)} columns described")
dictionary.head(12)

# %% [markdown]
# ## README, checksums and the archive

# %%
write_json(
    {
        "sematlas_version": sematlas.__version__,
        "profile": profile,
        "onnx": exports,
        "years_of_counterfactual_series": years,
        "packages": package_versions(),
    },
    release / "release.json",
)
header = f"""# sematlas release, profile `{profile}` (version {sematlas.__version__})

Generated by `notebooks/10_release.py` from the checkpoints and results of stages 02-09.
Learned from Neurosynth v7 (Yarkoni et al., 2011), fetched through NiMARE; Neurosynth data are
under the Open Database License 1.0, and these derived maps, models and tables stay open under it.
Cite the compendium with its `CITATION.cff`. Verify the files with `sha256sum -c SHA256SUMS`.
Maps are NIfTI-1 in MNI152 space at {voxel_size} mm (qform/sform code 4).
The ONNX decoders take `z` (batch, z_dim) and, when conditional, `m` (batch, meta_dim):
build `m` as `metadata_encoder.json` describes (see `examples/node/` in the repository)."""
descriptions = {
    "release.json": "versions, ONNX inputs/outputs and their parity with PyTorch",
    "metadata_encoder.json": "how a request becomes the metadata vector m of the decoders",
    "onnx": "ONNX graphs (opset 18, dynamic batch)",
    "nifti/examples": "generated map per task category (year 2015)",
    "nifti/counterfactual": "a task category's generated map across publication years (4-D)",
    "nifti": "maps written by the analysis stages (folder = stage)",
    "tables": "tables as CSV and Parquet; data_dictionary.* describes every column",
    "results": "results JSON of every stage",
}
write_release_readme(release, descriptions, header)
write_checksums(release)
assert not verify_checksums(release)
bundle = archive(release, release.parent / f"sematlas-{profile}-{sematlas.__version__}.tar.gz")
print(f"{bundle.name}: {bundle.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(bundle)}")
print((release / "README.md").read_text()[:1500])

# %% [markdown]
# A round trip: the released ONNX decoder of the conditional model, run by onnxruntime,
# reproduces the map PyTorch generates for one request.

# %%
request = {"task": categories[0], "year": 2012}
z = torch.zeros((1, conditional.z_dim))
session = onnxruntime.InferenceSession(str(onnx_dir / f"{conditional.variant}_decoder.onnx"))
onnx_map = session.run(None, {"z": z.numpy(), "m": metadata_vector(conditional, request).numpy()})[0]
torch_map = conditional.decode(z, request).numpy()
print(f"{request}: max |ONNX - PyTorch| = {np.abs(onnx_map - torch_map).max():.2e}")
read_json(release / "release.json")["onnx"]
