"""Interactive demos of the atlas (ipywidgets, servable as web apps with Voila).

- :class:`LatentSlider`: a study's latent code, one slider per (most active) dimension.
- :class:`CounterfactualMachine`: a study's code decoded under another task, year or sample size.
- :class:`ConfidenceExplorer`: the ensemble's mean and uncertainty beside the point-cloud model's peaks.
- :class:`DiscoveryPlatform`: clusters, hierarchy, Zeitgeist timeline and downloads.

Each has a ``from_profile(profile)`` constructor (what the notebooks in
``notebooks/demos/`` call) and accepts models and tables directly (what the tests
do). ``python -m sematlas.widgets serve counterfactual_machine --profile ci`` serves
a demo notebook with Voila (see :mod:`sematlas.widgets.serve`).
"""

from sematlas.widgets.common import REDRAW_BUDGET_MS, StudyCatalogue, measure_latency
from sematlas.widgets.confidence import ConfidenceExplorer
from sematlas.widgets.counterfactual import CounterfactualMachine
from sematlas.widgets.discovery import DiscoveryPlatform
from sematlas.widgets.slider import LatentSlider

__all__ = [
    "REDRAW_BUDGET_MS",
    "ConfidenceExplorer",
    "CounterfactualMachine",
    "DiscoveryPlatform",
    "LatentSlider",
    "StudyCatalogue",
    "measure_latency",
]
