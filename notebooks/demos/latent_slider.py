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
# # Latent Slider
#
# Pick a study (search its title or id, or filter by task category): the top row is its
# map as the models see it (its peaks rendered with the profile's kernels), the middle row
# the model's decoding of the study's latent code. Each slider moves one latent dimension
# (in prior standard deviations), the most active dimensions first (largest variance of
# the study codes of stage 02); the bottom row shows what the move changed. **Reset** puts
# every slider back on the study's code; **Export NIfTI** downloads the current map
# (MNI152, the model's grid).
#
# The header names the checkpoint the demo loaded (`quick` by default). Serve it as a web
# app with `voila notebooks/demos/latent_slider.ipynb`.

# %% tags=["parameters"]
profile = "quick"

# %%
from sematlas.widgets import LatentSlider

demo = LatentSlider.from_profile(profile)
demo.widget
