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
# # 01 · Curation of Neurosynth v7
#
# This stage turns the Neurosynth v7 database (14,371 fMRI studies, 507,891
# reported activation peaks, ODbL 1.0) into the tables every model trains on:
#
# 1. **fetch** the v7 files through NiMARE (from an offline mirror when one is
#    configured) and verify their SHA-256 digests;
# 2. **deduplicate** repeated peaks and tables, and flag studies that duplicate
#    another study;
# 3. **validate** coordinates against the MNI152 grid and brain mask (Neurosynth
#    already mapped Talairach peaks to MNI: nothing is re-transformed);
# 4. build the **study table**: year, journal, space label, peak count, the 50
#    LDA topic weights, a task category derived from them, and the sparse sample
#    sizes matched from NiMARE's NeuroStore studyset;
# 5. **split** 70/15/15, stratified by publication-year bin x peak-count quartile,
#    and draw the stratified development subset with its own splits.
#
# All the logic lives in `sematlas.data.curation`; this notebook runs it and shows the
# numbers. Outputs: `data/processed/<profile>/` (Parquet tables + `manifest.json`).

# %% tags=["parameters"]
profile = "quick"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from sematlas.core.io import package_versions
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.curation import curate, write_outputs
from sematlas.data.fetch import fetch_neurosynth_v7, resolve_mirror
from sematlas.data.reading import read_metadata
from sematlas.data.samplesize import match_sample_sizes

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
print(f"profile {profile}: outputs in {paths.processed}")

# %% [markdown]
# ## 1 · Fetch and verify
#
# `fetch_neurosynth(version="7", source="abstract", vocab="LDA50")` downloads into
# `data/raw/neurosynth/`, skipping files already there; a configured mirror
# (`SEMATLAS_DATA_MIRROR` or `data.mirror`) is linked in first, replacing the links an
# earlier mirror left, so the same NiMARE call runs offline on the named mirror's files.
# A file that came from no mirror is kept, with a warning that the mirror was not used
# for it. Every file must match its published SHA-256. Where each file came from is in
# `data/raw/neurosynth/source.json` and in the manifest (`report.inputs_source`).

# %%
mirror = resolve_mirror(params["data"]["mirror"])
print("mirror:", mirror or "none (NiMARE downloads)")
fetched = fetch_neurosynth_v7(paths.raw, mirror)
files = fetched.paths
pd.DataFrame(fetched.source["files"]).T.join(pd.Series(fetched.checksums, name="sha256 (verified)"))

# %% [markdown]
# ## 2 · Sparse sample sizes
#
# Neurosynth records no sample sizes. NiMARE ships a real NeuroStore studyset
# (n-back vs flanker, 2026-07) with participant counts; matching its studies to
# Neurosynth by normalised title gives a few hundred known sizes. Every other
# study keeps a missing value, which the conditional model imputes.

# %%
sample_sizes = match_sample_sizes(read_metadata(files["metadata"]))
matched = sample_sizes["sample_size"].notna()
print(
    f"{int(matched.sum())} of {len(sample_sizes)} Neurosynth studies have a sample size "
    f"({matched.mean():.2%}); median n = {sample_sizes.loc[matched, 'sample_size'].median():g}"
)

# %% [markdown]
# ## 3 · Deduplicate, validate, build the study table, split

# %%
curation = curate(files, params, sample_sizes=sample_sizes)
steps = pd.DataFrame(
    [
        {
            "step": s["step"],
            "studies": s["studies"],
            "peaks": s["peaks"],
            **{f"{space} studies": c["studies"] for space, c in s["by_space"].items()},
            **{f"{space} peaks": c["peaks"] for space, c in s["by_space"].items()},
        }
        for s in curation.steps
    ]
).set_index("step")
steps

# %%
pd.Series(curation.report["deduplication"], name="deduplication").to_frame()

# %% [markdown]
# Dropped peaks, by reason and by the study's original space label. Talairach-labelled
# studies are validated exactly like MNI ones: their coordinates were converted by Neurosynth.

# %%
pd.crosstab(curation.dropped_peaks["reason"], curation.dropped_peaks["space"], margins=True)

# %% [markdown]
# ## 4 · What the study table looks like

# %%
studies = curation.studies
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
pd.crosstab(studies["year"], studies["split"]).plot.bar(stacked=True, ax=axes[0], width=0.9)
axes[0].set(title="Studies per year and split", xlabel="publication year", ylabel="studies")
studies["task_category"].value_counts().plot.barh(ax=axes[1], color="tab:purple")
axes[1].set(title="Task categories (from LDA-50 topics)", xlabel="studies")
axes[2].hist(studies["n_peaks"], bins=60, range=(0, 120), color="tab:gray")
axes[2].set(title="Peaks per study (after curation)", xlabel="peaks", ylabel="studies")
fig.tight_layout()
paths.figures.mkdir(parents=True, exist_ok=True)
fig.savefig(paths.figures / "curation_overview.png", dpi=120)

# %% [markdown]
# The splits keep the year and peak-count strata in proportion, for all studies and
# for the development subset (flagged duplicates always share a split):

# %%
proportions = pd.concat(
    {
        "all studies": studies["split"].value_counts(normalize=True),
        "subset": studies.loc[studies["in_subset"], "subset_split"].value_counts(normalize=True),
    },
    axis=1,
).round(3)
proportions

# %%
pd.crosstab(studies["year_bin"], studies["split"], normalize="index").round(2).T

# %% [markdown]
# ## 5 · Write the tables and the manifest
#
# Each file is written atomically; `manifest.json` is written last and records the
# counts, parameters, input checksums and where the inputs came from, and package versions.

# %%
curation.report["inputs_source"] = fetched.source  # where the fetched files came from (source.json)
manifest = write_outputs(curation, paths.processed, params, fetched.checksums, package_versions())
print(
    f"wrote {paths.processed}: {manifest['n_studies']} studies, {manifest['n_peaks']} peaks, "
    f"subset '{manifest['subset']}' of {curation.report['subset_size']} studies"
)
sorted(p.name for p in paths.processed.iterdir())
