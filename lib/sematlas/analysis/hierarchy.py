"""The two-level H-VAE's stage gate and the analysis of its learned hierarchy (stage 05).

The gate decides, before the H-VAE is used downstream, whether both levels
earned their place; every criterion is reported with its value, threshold and
verdict (``params["hierarchical"]``):

- **both levels active**: the mean per-study KL of each level on the held-out
  test split is above ``gate_min_kl_per_level`` nats (a collapsed level has KL ~0);
- **reconstruction**: the held-out median voxel-wise Pearson r is no more than
  ``gate_recon_margin`` below the flat ``cbvae``'s at the same total latent size;
- **the top level knows the task**: a linear probe of the top-level posterior
  means predicts the task category with a balanced accuracy at least
  ``gate_probe_margin`` above chance.

The probe is fitted on the training split and scored on the test split
(train-on-train / test-on-test, the split every other held-out number uses):
a multinomial logistic regression on standardised posterior means, classes
weighted inversely to their frequency. Chance is ``1 / n``, ``n`` the number of
categories present in the test split: the balanced accuracy of any constant or
label-blind classifier over those classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from sematlas.evaluation.criteria import FAIL, PASS
from sematlas.evaluation.metrics import balanced_accuracy
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.models.hvae import hierarchical_kl

if TYPE_CHECKING:
    from sematlas.models import HierarchicalVAE

#: Overall verdicts of :func:`stage_gate`.


@torch.no_grad()
def level_kls(
    model: HierarchicalVAE, datamodule: Any, split: str = "test", maps: RenderedSplits | None = None
) -> dict[str, float]:
    """Mean per-study KL of each level of an H-VAE over a split.

    The posterior is :meth:`~sematlas.models.hvae.HierarchicalVAE.encode`'s: the
    lower level conditioned on the top level's posterior mean.

    Parameters
    ----------
    model : HierarchicalVAE
    datamodule : NeurosynthDataModule
        Set up.
    split : str
    maps : RenderedSplits, optional
        The stage's rendered splits; by default the split is rendered for this call.

    Returns
    -------
    dict
        ``kl_top``, ``kl_lower`` (nats per study) and ``n_studies``.
    """
    model.eval()
    top, lower = [], []
    for batch in RenderedSplits.shared(maps, datamodule).batches(datamodule, split):
        mu, logvar = model.encode(batch["image"], batch["meta"])
        kl_top, kl_lower = hierarchical_kl(mu, logvar, model.top_dim)
        top.append(kl_top)
        lower.append(kl_lower)
    kl_top, kl_lower = torch.cat(top), torch.cat(lower)
    return {"kl_top": float(kl_top.mean()), "kl_lower": float(kl_lower.mean()), "n_studies": len(kl_top)}


def linear_probe(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray
) -> dict[str, Any]:
    """Task-category probe: fitted on one split, balanced accuracy on another.

    Parameters
    ----------
    train_features : ndarray, shape (n_train, d)
    train_labels : ndarray of int, shape (n_train,)
    test_features : ndarray, shape (n_test, d)
    test_labels : ndarray of int, shape (n_test,)

    Returns
    -------
    dict
        ``balanced_accuracy`` (mean recall over the classes present in
        ``test_labels``), ``chance`` (``1 / n_classes``), ``n_classes``, ``n_train``, ``n_test``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = len(np.unique(test_labels))
    if len(np.unique(train_labels)) < 2:
        # One training class: the probe can only answer it.
        predictions = np.full_like(test_labels, train_labels[0])
    else:
        probe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        predictions = probe.fit(train_features, train_labels).predict(test_features)
    return {
        "balanced_accuracy": balanced_accuracy(test_labels, predictions),
        "chance": 1.0 / n_classes,
        "n_classes": n_classes,
        "n_train": len(train_labels),
        "n_test": len(test_labels),
    }


def stage_gate(
    kl: Mapping[str, float],
    recon_r: float,
    reference_recon_r: float,
    probe_accuracy: float,
    chance: float,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The H-VAE's stage gate: every criterion with its value, threshold and verdict.

    Parameters
    ----------
    kl : mapping
        ``kl_top`` and ``kl_lower``: mean per-study KL of each level (nats), held out.
    recon_r : float
        The H-VAE's held-out median reconstruction Pearson r.
    reference_recon_r : float
        The flat ``cbvae``'s, at the same total latent size.
    probe_accuracy, chance : float
        The top level's task-category probe balanced accuracy and its chance level.
    settings : mapping
        ``gate_min_kl_per_level``, ``gate_recon_margin``, ``gate_probe_margin``
        (the ``hierarchical`` parameters).

    Returns
    -------
    dict
        ``criteria``: name -> ``value``, ``threshold``, ``rule``, ``pass`` (and the
        reference or chance it is measured against); ``passed`` (count), ``result``:
        ``"PASS"`` when every criterion passes, else ``"FAIL"``. A NaN value fails.
    """
    min_kl = float(settings["gate_min_kl_per_level"])
    recon_threshold = float(reference_recon_r) - float(settings["gate_recon_margin"])
    probe_threshold = float(chance) + float(settings["gate_probe_margin"])
    criteria: dict[str, dict[str, Any]] = {
        f"{level}_active": {
            "value": float(kl[level]),
            "threshold": min_kl,
            "rule": f"{level} > gate_min_kl_per_level",
            "pass": bool(float(kl[level]) > min_kl),
        }
        for level in ("kl_top", "kl_lower")
    }
    criteria["reconstruction"] = {
        "value": float(recon_r),
        "reference_cbvae": float(reference_recon_r),
        "margin": float(settings["gate_recon_margin"]),
        "threshold": recon_threshold,
        "rule": "median r >= cbvae median r - gate_recon_margin",
        "pass": bool(float(recon_r) >= recon_threshold),
    }
    criteria["top_level_probe"] = {
        "value": float(probe_accuracy),
        "chance": float(chance),
        "margin": float(settings["gate_probe_margin"]),
        "threshold": probe_threshold,
        "rule": "balanced accuracy >= chance + gate_probe_margin",
        "pass": bool(float(probe_accuracy) >= probe_threshold),
    }
    passed = sum(c["pass"] for c in criteria.values())
    return {"criteria": criteria, "passed": passed, "result": PASS if passed == len(criteria) else FAIL}


def level_correlation(top: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """|Pearson r| between every top-level unit and every lower-level unit across studies.

    Parameters
    ----------
    top : ndarray, shape (n_studies, top_dim)
    lower : ndarray, shape (n_studies, lower_dim)

    Returns
    -------
    ndarray, shape (top_dim, lower_dim)
        NaN where a unit is constant over the studies (r undefined).
    """
    top = np.asarray(top, dtype=float) - np.mean(top, axis=0)
    lower = np.asarray(lower, dtype=float) - np.mean(lower, axis=0)
    norms = np.outer(np.linalg.norm(top, axis=0), np.linalg.norm(lower, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = top.T @ lower / norms
    return np.where(norms > 0, np.abs(r), np.nan)


def category_profile(top: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Mean standardised top-level activation per task category.

    Parameters
    ----------
    top : ndarray, shape (n_studies, top_dim)
        Top-level posterior means.
    labels : sequence of str, length n_studies
        Task category of each study.

    Returns
    -------
    DataFrame, shape (n_categories, top_dim)
        Index: the categories present (sorted); columns ``top_00`` ...; each unit
        z-scored over all studies first (a constant unit stays 0).
    """
    top = np.asarray(top, dtype=float)
    sd = top.std(axis=0)
    scores = (top - top.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    frame = pd.DataFrame(scores, columns=[f"top_{k:02d}" for k in range(top.shape[1])])
    return frame.groupby(np.asarray(labels)).mean().sort_index()


__all__ = [
    "FAIL",
    "PASS",
    "category_profile",
    "level_correlation",
    "level_kls",
    "linear_probe",
    "stage_gate",
]
