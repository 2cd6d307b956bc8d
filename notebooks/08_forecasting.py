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
# # 08 · Forecasting the latent space: the "Zeitgeist" of neuroimaging
#
# Every study is a point in the latent space of the conditional β-VAE of stage 02, and
# every study has a publication year. Grouping the points by year turns the database
# into a time series of clouds: what kind of brain maps the field published in 1999,
# in 2005, in 2014. This notebook asks two questions.
#
# 1. **Is the drift predictable?** Each year is summarised by the mean and covariance of
#    its studies' latents (Ledoit-Wolf shrinkage covariances, because early years hold
#    only a handful of studies). A small recurrent network (a GRU) learns from the years
#    up to a cutoff (2014 by default) how one year's distribution follows from the few
#    before it, then forecasts the later years on its own. Each forecast is scored by the
#    Fréchet distance to the studies actually published in that year (lower is closer),
#    against two baselines: **persistence** (next year looks like the last observed year)
#    and a **linear trend** (a straight line through the yearly means, with the pooled
#    within-year spread).
# 2. **What changed?** The timeline figure shows how the share of the stage 07 clusters
#    and of the LDA-50 topics moved over the years, and how the model's predicted map of
#    one task changes when only the year it is asked about changes.
#
# Caveats for the reader: Neurosynth v7 stops in 2018, and 2018 itself is incomplete, so
# only four years can be held out. The latent space was learned from studies of all
# years (the random 70/15/15 split of stage 01 is not chronological): the held-out
# years are hidden from the forecasters, not from the encoder.
#
# Inputs: `data/results/<profile>/<variant>/latents.parquet`, `data/processed/<profile>/studies.parquet`,
# stage 07's cluster assignments and the stage 02 checkpoint. Outputs:
# `data/results/<profile>/forecasting/` and `figures/<profile>/forecasting_*.png`.

# %% tags=["parameters"]
profile = "quick"

# %%
import logging

import pandas as pd
import torch

from sematlas.analysis import forecasting
from sematlas.analysis.clustering import latent_columns, load_inputs, topic_names
from sematlas.analysis.results import ForecastingResults
from sematlas.core.io import write_parquet
from sematlas.core.metadata import TOPIC_KEYS_FILE
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.reporting.forecasting import plot_frechet, plot_trajectories, plot_zeitgeist

params = load_params(profile)
paths = ProfilePaths.for_profile(profile)
paths.figures.mkdir(parents=True, exist_ok=True)
section = params["forecasting"]
out_dir = paths.results / "forecasting"
if params["training"]["num_threads"] > 0:
    torch.set_num_threads(params["training"]["num_threads"])
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
cutoff, min_studies, window = section["cutoff_year"], section["min_studies"], section["window"]
studies_path = paths.processed / "studies.parquet"
frame = load_inputs(paths.results / section["variant"] / "latents.parquet", studies_path)
print(
    f"profile {profile}: {len(frame)} studies with {section['variant']} latents "
    f"({len(latent_columns(frame))} dimensions), {frame['year'].min()}-{frame['year'].max()}; "
    f"cutoff {cutoff}, a year needs at least {min_studies} studies"
)

# %% [markdown]
# ## The yearly series
#
# Per year and per task category: number of studies, mean latent and shrunk
# covariance. A year with fewer than `min_studies` studies gets no estimate; it is
# listed here and left out of training and scoring (a gap inside the training years is
# bridged by carrying the previous year forward). The shrinkage column is the
# Ledoit-Wolf intensity: near 1 the covariance is mostly the scaled identity, i.e. the
# year has too few studies to say much about correlations.

# %%
series_by_group = forecasting.yearly_series_by_group(frame, min_studies)
series = series_by_group["all"]
table = forecasting.series_table(series_by_group)
write_parquet(table, out_dir / "yearly_series.parquet")
dropped = [int(y) for y in series.years[~series.observed]]
print(
    f"all studies: {int(series.observed.sum())} of {len(series.years)} years observed; dropped (fewer than "
    f"{min_studies} studies): {dropped or 'none'}"
)
table.loc[table["group"] == "all", ["year", "n", "observed", "shrinkage"]].set_index("year").round(2).T

# %% [markdown]
# Per task category the studies are spread thin: the counts below (studies per
# category and year) show why the forecasts use the overall series only. The
# per-category series are in `yearly_series.parquet` all the same (`group` column).

# %%
counts = table[table["group"] != "all"].pivot(index="group", columns="year", values="n")
print(f"category-years with an estimate: {int(table.loc[table['group'] != 'all', 'observed'].sum())} of {counts.size}")
counts

# %% [markdown]
# ## Forecasts
#
# - **GRU**: input per year is the mean and the log per-dimension variance; output is
#   next year's mean and variances (a diagonal covariance: a full one has more entries
#   than there are training years). It predicts the *change* from the input year and
#   starts out as persistence. Loss: the Gaussian negative log-likelihood of the next
#   year's study latents (Nix & Weigend, 1994), computed exactly from that year's
#   moments. Trained by teacher forcing on runs of `window` consecutive years up to the
#   cutoff, then rolled out autoregressively (feeding its own forecasts back).
# - **persistence**: the last observed year up to the cutoff, mean and covariance.
# - **linear trend**: a least-squares line per latent dimension through the training
#   years' means; covariance pooled within years.
#
# The dotted curves are in-sample fits (training years); the grey band is held out.

# %%
model, train_nll = forecasting.fit_trajectory_gru(
    series, cutoff, window, section["hidden_size"], section["max_epochs"], section["lr"], int(params["seed"])
)
last_year = int(series.years[-1])
held_out = list(range(cutoff + 1, last_year + 1))
first = int(series.observed_years(until=cutoff)[0])
forecasts = {
    "gru": forecasting.gru_forecast(model, series, cutoff, window, last_year),
    "persistence": forecasting.persistence_forecast(series, cutoff, held_out),
    "linear_trend": forecasting.linear_trend_forecast(series, cutoff, range(first, last_year + 1)),
}
print(f"GRU trained on {first}-{cutoff} ({section['max_epochs']} epochs): final NLL {train_nll:.3f} per study")
fig = plot_trajectories(series, forecasts, cutoff)
fig.savefig(paths.figures / "forecasting_trajectories.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Fréchet distance per held-out year
#
# `frechet` is the full distance between the forecast Gaussian and the Gaussian fitted
# to the year's study latents; `mean_term` is its part due to the means alone (the
# rest is the covariance mismatch). Lower is better; a held-out year with fewer than
# `min_studies` studies is not scored.

# %%
frechet = forecasting.frechet_by_year(
    frame[latent_columns(frame)].to_numpy(), frame["year"].to_numpy(), forecasts, cutoff, min_studies
)
write_parquet(frechet, out_dir / "frechet_by_year.parquet")
unscored = sorted(set(held_out) - set(frechet["year"]))
print(f"held-out years scored: {sorted(set(frechet['year']))}; not scored (too few studies): {unscored or 'none'}")
wide = frechet.pivot(index="year", columns="method", values="frechet")[list(forecasting.METHODS)]
wide.insert(0, "n", frechet.drop_duplicates("year").set_index("year")["n"])
wide.round(4)

# %%
fig = plot_frechet(frechet)
fig.savefig(paths.figures / "forecasting_frechet.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The Zeitgeist timeline
#
# Top: the share of each year's studies in each stage 07 cluster (grey: studies HDBSCAN
# left unclustered). Middle: the LDA-50 topics whose mean weight changed most over
# 1997-2018, over all curated studies (not only the profile's subset). Bottom: the
# conditional model's predicted map for one task at several years. The same prior draws
# are decoded at every year, so the differences between columns come from the year
# input alone; the sd row is the spread over those draws, i.e. the latent (prior)
# uncertainty of the prediction, not the disagreement of an ensemble.

# %%
assignments = pd.read_parquet(paths.results / "clustering" / "assignments.parquet")
clusters = pd.read_parquet(paths.results / "clustering" / "clusters.parquet")
cluster_share = forecasting.cluster_prevalence(assignments, dict(zip(clusters["cluster"], clusters["name"])))
studies = pd.read_parquet(studies_path)
topic_share = forecasting.topic_prevalence(studies, topic_names(paths.raw / "neurosynth" / TOPIC_KEYS_FILE), top=6)
atlas = AtlasModel.load(
    paths.models / section["variant"] / "checkpoints" / "best.ckpt", voxel_size=int(params["render"]["voxel_size"])
)
task, years = section["drift_task"], section["drift_years"]
drift = forecasting.drift_maps(atlas, task, years, section["drift_samples"], int(params["seed"]))
forecasting.write_drift_maps(atlas, drift, task, out_dir)
images = {year: (atlas.to_nifti(mean), atlas.to_nifti(sd)) for year, (mean, sd) in drift.items()}
fig = plot_zeitgeist(cluster_share, topic_share, images, task)
fig.savefig(paths.figures / "forecasting_zeitgeist.png", dpi=110, bbox_inches="tight")

# %% [markdown]
# How far does the predicted map move? The correlation of each year's mean map with
# the first year's, and the largest change relative to the prior sd at that voxel:

# %%
reference = drift[years[0]][0].ravel()
pd.DataFrame(
    {
        year: {
            f"r with {years[0]}": float(pd.Series(mean.ravel()).corr(pd.Series(reference))),
            "max |change| / sd": float((abs(mean - drift[years[0]][0]) / (sd + 1e-12))[sd > 0.01 * sd.max()].max()),
        }
        for year, (mean, sd) in drift.items()
    }
).round(3)

# %% [markdown]
# ## Results file and closing note

# %%
results = ForecastingResults.from_forecasts(
    profile=profile,
    settings=section,
    series=series,
    frechet=wide,
    methods=forecasting.METHODS,
    not_scored=unscored,
    gru_train_nll=train_nll,
    note=forecasting.NOTE,
)
print(f"wrote {results.save(results.location(paths)).relative_to(paths.root)}")
means = results.frechet_mean
print(
    f"Held-out years {wide.index.min()}-{wide.index.max()} (cutoff {cutoff}); mean Fréchet distance: "
    f"GRU {means['gru']:.3f}, persistence {means['persistence']:.3f}, linear trend {means['linear_trend']:.3f}. "
    f"The GRU beats persistence in {int((wide['gru'] < wide['persistence']).sum())} and the linear trend in "
    f"{int((wide['gru'] < wide['linear_trend']).sum())} of {len(wide)} years.\n{forecasting.NOTE}"
)
