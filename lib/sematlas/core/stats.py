"""Small statistics shared by the training logs and the held-out evaluation.

They live in :mod:`sematlas.core` because both :mod:`sematlas.training` (which
logs them every validation epoch) and :mod:`sematlas.evaluation` (which reports
them on the test split) use them, and neither may import the other.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def balanced_accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Mean per-class recall over the classes present in ``labels`` (chance = 1 / n_classes).

    ``BA = (1 / |C|) sum_{c in C} #{i : y_i = c, y_hat_i = c} / #{i : y_i = c}``, ``C`` the
    classes present in ``labels`` (Brodersen et al. 2010).

    Parameters
    ----------
    labels, predictions : array-like of int, shape (n,)
        True and predicted classes (numpy arrays or CPU tensors).

    Returns
    -------
    float
        NaN when ``labels`` is empty.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = np.unique(labels)
    if not len(classes):
        return math.nan
    return float(np.mean([(predictions[labels == c] == c).mean() for c in classes]))


__all__ = ["balanced_accuracy"]
