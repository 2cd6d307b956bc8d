"""Exceptions shared by every subpackage."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: foreign, mismatched weights, another grid."""


__all__ = ["CheckpointError"]
