"""Trained models for use: :class:`AtlasModel`, :class:`AtlasEnsemble` and :class:`PointCloudModel`.

Imports :mod:`sematlas.core` and :mod:`sematlas.models`: loading a model needs neither Lightning's
DataModule nor the renderer.
"""
