"""From Neurosynth to tensors: fetch, curation, sample sizes, the peak renderer and the DataModules
(volumetric and point-cloud).

Imports :mod:`sematlas.core` only.
"""
