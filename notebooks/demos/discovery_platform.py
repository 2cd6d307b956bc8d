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
# # Discovery Platform
#
# What the analysis stages found, browsable:
#
# - **Clusters** (stage 07): pick an HDBSCAN cluster of the study latents to see its
#   decoded centroid map, its most over-represented topics and tasks, and its members.
# - **Hierarchy** (stage 05): which top-level units of the hierarchical VAE organise which
#   lower-level units and task categories, and whether it passed its stage gate.
# - **Zeitgeist** (stage 08): studies and cluster shares per year; move the year slider to
#   see the conditional model's predicted map for the nearest modelled year and, for
#   held-out years, how close each forecast came.
# - **Downloads** (stage 10): the release's NIfTI maps and tables.
#
# A panel whose stage has not run for the profile says so. Serve it as a web app with
# `voila notebooks/demos/discovery_platform.ipynb`.

# %% tags=["parameters"]
profile = "quick"

# %%
from sematlas.widgets import DiscoveryPlatform

demo = DiscoveryPlatform.from_profile(profile)
demo.widget
