"""Foundations every subpackage stands on: typed parameters, paths, atomic io, grids, the metadata
encoder, errors and logging.

Imports nothing else of sematlas.
"""
