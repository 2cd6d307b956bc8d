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
# # Dual-View Confidence Explorer
#
# Two views of one study under one conditioning:
#
# - **volumetric** (top two rows): the stage 04 snapshot ensemble encodes the study's map
#   and decodes it under the chosen task, year and sample size. The top row is the
#   ensemble's mean map, the second an uncertainty layer as a standard deviation:
#   *aleatoric* (the noise every member expects in the data), *epistemic* (the members'
#   disagreement) or their *total*. Only voxels above the chosen percentile of the layer
#   are drawn.
# - **point cloud** (bottom row): the study's reported peaks (black) and the stage 03
#   point-cloud C-VAE's peaks for the study's code under the same conditioning (red), on
#   glass-brain projections; tick the box for an interactive 3-D view.
#
# The header names the ensemble the demo loaded (`quick` by default). Serve it as a web app
# with `voila notebooks/demos/confidence_explorer.ipynb`.

# %% tags=["parameters"]
profile = "quick"

# %%
from sematlas.widgets import ConfidenceExplorer

demo = ConfidenceExplorer.from_profile(profile)
demo.widget
