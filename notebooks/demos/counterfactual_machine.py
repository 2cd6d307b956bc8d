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
# # Counterfactual Machine
#
# Take one study's latent code, as the conditional β-VAE (`cbvae`, stage 02) encoded it
# under the study's own metadata, and decode it again under other metadata: another task
# category, another publication year (1997-2018), another sample size. Top row: the
# study's code decoded with its own metadata (the **original**); middle row: the same code
# decoded with the controls' metadata (the **counterfactual**); bottom row: *counterfactual
# minus original* (red: the model puts more density there under the new conditioning).
# Only the conditioning changes: the code, i.e. what the study found, stays the same.
#
# The header names the checkpoint the demo loaded. It runs on any profile's outputs
# (`quick` by default; `python -m sematlas.widgets serve counterfactual_machine --profile ci`
# serves it for another one). Serve it as a web app with
# `voila notebooks/demos/counterfactual_machine.ipynb`.

# %% tags=["parameters"]
profile = "quick"

# %%
from sematlas.widgets import REDRAW_BUDGET_MS, CounterfactualMachine

demo = CounterfactualMachine.from_profile(profile)
demo.widget

# %% [markdown]
# ## Redraw latency
#
# From a control change to the finished image, every change decoding a conditioning not
# seen before (no cache), on this machine's CPU at the profile's grid; the budget is
# 200 ms. `benchmarks/widget_latency.py` measures all four demos.

# %%
latency = demo.latency(repeats=5)
print(f"redraw latency (budget {REDRAW_BUDGET_MS:.0f} ms):")
print(latency.to_string())
