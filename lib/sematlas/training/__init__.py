"""Training: the one LightningModule, weight schedules, callbacks, run folders (fit, fingerprint,
resume) and ensemble training.

Imports :mod:`sematlas.core`, :mod:`sematlas.data` and :mod:`sematlas.models`.
"""
