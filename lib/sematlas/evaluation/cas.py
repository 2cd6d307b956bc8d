"""Classification accuracy score (CAS; Ravuri & Vinyals, 2019): samples judged by what a classifier learns from them.

A task-category classifier is trained only on maps a conditional model samples from
training studies' own metadata, then tested on real held-out maps. Precision and recall
(:mod:`sematlas.evaluation.generative`) ask whether samples look real and cover the data;
CAS asks whether they carry their category, with the variety a classifier needs to
recognise real studies of it. The same classifier trained on the same studies' real maps
is the reference (the ceiling of samples as varied as real studies), trained on ridge's
predictions from their metadata a linear baseline. Model and ridge are compared on the same
held-out studies (:func:`accuracy_comparison`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.metadata import meta_batches
from sematlas.core.progress import progress
from sematlas.core.stats import balanced_accuracy
from sematlas.evaluation.atlas_results import AccuracyComparison
from sematlas.evaluation.baselines import PCABaseline, RidgeBaseline, metadata_matrix, training_sample_rows
from sematlas.evaluation.paired import CONFIDENCE, N_RESAMPLES
from sematlas.evaluation.reconstruction import native_widest

if TYPE_CHECKING:
    from sematlas.models import VolumetricVAE

#: Training studies per category the classifiers are trained on, at most: one prior sample each
#: (13 categories: 1,300 decodes, about 30 s on two cores).
CAS_PER_CATEGORY = 100


def meta_rows(meta: Mapping[str, torch.Tensor], rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The studies ``rows`` of a metadata dict, in that order."""
    index = torch.from_numpy(rows)
    return {key: value[index] for key, value in meta.items()}


def sample_generator(
    model: VolumetricVAE, datamodule: Any, seed: int, description: str = "sampling"
) -> Callable[[Mapping[str, torch.Tensor]], np.ndarray]:
    """``meta -> (n, n_mask_voxels)``: one decoded prior sample per study of ``meta``, widest kernel.

    Decoded in batches of ``datamodule.batch_size`` under a progress bar named ``description``;
    the samples are drawn from one stream seeded by ``seed``.
    """
    mask = datamodule.brain_mask()
    generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(meta: Mapping[str, torch.Tensor]) -> np.ndarray:
        model.eval()
        batches = meta_batches(meta, datamodule.batch_size)
        total = -(-len(meta["cond"]) // datamodule.batch_size)
        chunks = [
            native_widest(model.generate(batch, 1, generator)[0], mask)
            for batch in progress(batches, description, total=total, unit="batch")
        ]
        return torch.cat(chunks).numpy()

    return generate


def cas_predictions(
    training_sets: Mapping[str, np.ndarray], train_labels: np.ndarray, test_features: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Task-category predictions for held-out maps of classifiers trained on each training set.

    Multinomial logistic regression (L2, ``C = 1``), classes weighted by their inverse
    frequency (the score is a balanced accuracy). The features are not rescaled per training
    set: a set with little spread (ridge's predictions vary little within a category) would
    otherwise stretch the real held-out maps' noise by its own small scale.

    Parameters
    ----------
    training_sets : mapping of str to ndarray, shape (n_train, n_features)
        Features of the maps each classifier is trained on (model samples, ridge's predictions,
        real maps), all of the same studies.
    train_labels : ndarray, shape (n_train,)
        Their categories.
    test_features : ndarray, shape (n_test, n_features)
        Features of the real held-out maps.
    seed : int

    Returns
    -------
    dict of str to ndarray, shape (n_test,)
        The predicted category of every held-out map, per training set.
    """
    from sklearn.linear_model import LogisticRegression

    predictions = {}
    for name, features in training_sets.items():
        classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
        predictions[name] = classifier.fit(features, train_labels).predict(test_features)
    return predictions


def accuracy_comparison(
    labels: np.ndarray,
    model: np.ndarray,
    baseline: np.ndarray,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> AccuracyComparison:
    """Two classifiers' predictions of the same held-out studies: balanced-accuracy difference, paired bootstrap CI.

    The resampling is :func:`~sematlas.evaluation.paired.paired_bootstrap`'s (studies drawn with
    replacement, both scores recomputed on each draw), but the statistic is the difference of
    balanced accuracies: per-study correctness is 0 or 1, so the median difference that
    ``paired_bootstrap`` reports would be 0, 1/2 or 1 and say nothing.

    Parameters
    ----------
    labels, model, baseline : ndarray, shape (n_studies,)
        True categories and the two classifiers' predictions.
    seed, n_resamples : int
    confidence : float

    Returns
    -------
    AccuracyComparison
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    k = len(classes)
    right = {"model": np.asarray(model) == labels, "baseline": np.asarray(baseline) == labels}
    draws = np.random.default_rng(seed).integers(0, len(codes), size=(n_resamples, len(codes)))
    # Per draw and class, the studies drawn and those classified correctly, by one bincount over (draw, class).
    cells = (codes[draws] + k * np.arange(n_resamples)[:, None]).ravel()
    drawn = np.bincount(cells, minlength=n_resamples * k).reshape(n_resamples, k)

    def resampled(correct: np.ndarray) -> np.ndarray:
        hits = np.bincount(cells, weights=correct[draws].ravel(), minlength=n_resamples * k).reshape(n_resamples, k)
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.where(drawn > 0, hits / np.maximum(drawn, 1), np.nan), axis=1)

    differences = resampled(right["model"]) - resampled(right["baseline"])
    tails = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
    return AccuracyComparison(
        difference=balanced_accuracy(labels, model) - balanced_accuracy(labels, baseline),
        difference_ci=[float(v) for v in np.percentile(differences, tails)],
        model_only_correct=float((right["model"] & ~right["baseline"]).mean()),
        baseline_only_correct=float((right["baseline"] & ~right["model"]).mean()),
        n_studies=len(codes),
        n_resamples=n_resamples,
        confidence=confidence,
    )


def per_category_sample(labels: np.ndarray, categories: Sequence[str], max_per_category: int, seed: int) -> np.ndarray:
    """Sorted rows of a seeded sample of at most ``max_per_category`` studies of each category."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == name))[:max_per_category] for name in categories]
    return np.sort(np.concatenate(picked))


def classification_accuracy_score(
    train_maps: np.ndarray,
    train_labels: np.ndarray,
    train_meta: Mapping[str, torch.Tensor],
    test_maps: np.ndarray,
    test_labels: np.ndarray,
    categories: Sequence[str],
    rows: np.ndarray,
    model_samples: np.ndarray,
    seed: int,
    pca_max_train: int = 5000,
    n_features: int = 64,
    max_per_category: int = CAS_PER_CATEGORY,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The classification accuracy score of model samples, against ridge's predictions and real maps (the ceiling).

    Every classifier reads the same features, the first ``n_features`` principal components of
    the linear baselines' training sample (:func:`~sematlas.evaluation.baselines.training_sample_rows`)
    divided by their standard deviations there, and is trained on the same training studies
    (:func:`per_category_sample`): on their model samples, their ridge predictions or their real
    maps; all are tested on the real held-out maps of ``categories``.

    Parameters
    ----------
    train_maps : ndarray, shape (n_train, n_voxels)
    train_labels : ndarray of str, shape (n_train,)
    train_meta : mapping of str to Tensor
        The training studies' metadata tensors (the data contract), ``n_train`` rows each.
    test_maps : ndarray, shape (n_test, n_voxels)
    test_labels : ndarray of str, shape (n_test,)
    categories : sequence of str
        The classes.
    rows : ndarray of int, shape (n_rows,)
        The training studies the classifiers learn from (:func:`per_category_sample` with
        ``max_per_category``).
    model_samples : ndarray, shape (n_rows, n_voxels)
        One model sample per study of ``rows``, from its metadata (:func:`sample_generator`).
    seed : int
    pca_max_train, n_features : int
    max_per_category : int
        Recorded: the bound ``rows`` was drawn with.

    Returns
    -------
    summary : dict
        The fields of :class:`~sematlas.evaluation.atlas_results.ClassificationAccuracyScore`.
    table : DataFrame
        One row per held-out study of ``categories``: ``row`` (in the split), ``category`` and
        ``predicted_model``, ``predicted_ridge``, ``predicted_real``.
    """
    fit_rows = training_sample_rows(len(train_maps), pca_max_train, seed)
    fit_maps = np.asarray(train_maps[fit_rows])
    space = PCABaseline(n_features, seed).fit(fit_maps)
    scale = np.sqrt(space.pca_.explained_variance_)

    def features(maps: np.ndarray) -> np.ndarray:
        return space.transform(np.asarray(maps)) / scale

    matrix = metadata_matrix(train_meta)
    # Ridge to the PCA scores, not the voxels: for one regularisation strength the projection of
    # ridge's voxel-wise prediction is the ridge prediction of the projected maps (both are linear
    # in the targets), and n_features targets instead of every voxel fit in milliseconds, not a minute.
    ridge = RidgeBaseline().fit(matrix[fit_rows], features(fit_maps))
    training_sets = {
        "model": features(model_samples),
        "ridge": ridge.predict(matrix[rows]),
        "real": features(train_maps[rows]),
    }
    tested = np.flatnonzero(np.isin(test_labels, list(categories)))
    labels = test_labels[tested]
    predictions = cas_predictions(training_sets, train_labels[rows], features(test_maps[tested]), seed)
    accuracy = {name: balanced_accuracy(labels, predicted) for name, predicted in predictions.items()}
    summary = {
        "classifier": "multinomial logistic regression on whitened PCA features of training maps (widest kernel)",
        "n_features": int(space.pca_.n_components_),
        "max_per_category": max_per_category,
        "n_train": len(rows),
        "n_test": len(tested),
        "chance": 1.0 / len(categories),
        **accuracy,
        # Of the ceiling; undefined where real maps teach the classifier nothing (a tiny split).
        "model_ratio": accuracy["model"] / accuracy["real"] if accuracy["real"] > 0 else float("nan"),
        "ridge_ratio": accuracy["ridge"] / accuracy["real"] if accuracy["real"] > 0 else float("nan"),
        "vs_ridge": accuracy_comparison(labels, predictions["model"], predictions["ridge"], seed),
    }
    table = pd.DataFrame({"row": tested, "category": labels, **{f"predicted_{k}": v for k, v in predictions.items()}})
    return summary, table


__all__ = [
    "CAS_PER_CATEGORY",
    "accuracy_comparison",
    "cas_predictions",
    "classification_accuracy_score",
    "meta_rows",
    "per_category_sample",
    "sample_generator",
]
