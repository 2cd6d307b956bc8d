"""Every pass/fail rule of the compendium, in one place.

- **Goals** on one measured value (:class:`Goal`): the ensembles' calibration
  and OOD detection (stage 04) and the year adversary's de-biasing (stage 02).
- **The sprint criterion** of stage 02 (:func:`sprint_criterion`): the
  conditional model's best validation loss and reconstruction below the plain
  VAE's on the same data.
- **The H-VAE's stage gate** (stage 05) and **ablation criteria** (stage 09) are
  analyses of trained models, so they live in :mod:`sematlas.analysis`
  (:func:`sematlas.analysis.hierarchy.stage_gate`, :class:`sematlas.analysis.ablation.Criterion`,
  declared per ablation in ``params/ablations/<name>.yaml``) and use the verdicts defined here.

A criterion is reported as measured, whatever the answer.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

from sematlas.models.registry import MAIN_VARIANT, REFERENCE_VARIANT

if TYPE_CHECKING:
    from sematlas.evaluation.results import EnsembleResults, VolumetricResults

#: The two verdicts every criterion reports.
PASS, FAIL = "PASS", "FAIL"

_COMPARISONS = {"below": ("<", operator.lt), "above": (">", operator.gt), "at_most": ("<=", operator.le)}


@dataclass(frozen=True)
class Goal:
    """A threshold one measured value must clear.

    Parameters
    ----------
    threshold : float
    comparison : {"below", "above", "at_most"}
        ``value < threshold``, ``value > threshold`` or ``value <= threshold``; NaN never meets a goal.
    """

    threshold: float
    comparison: Literal["below", "above", "at_most"]

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        return bool(_COMPARISONS[self.comparison][1](value, self.threshold))

    def describe(self) -> str:
        """The goal as a bound, e.g. ``< 0.15``."""
        return f"{_COMPARISONS[self.comparison][0]} {self.threshold:g}"

    def verdict(self, value: float) -> str:
        """``"meets"`` or ``"MISSES"``."""
        return "meets" if self.met(value) else "MISSES"


#: Expected calibration error of an ensemble's predictive distribution on held-out voxels (stage 04).
ECE_GOAL = Goal(0.15, "below")
#: AUROC of telling held-out test maps from each kind of out-of-distribution map (stage 04).
OOD_AUROC_GOAL = Goal(0.85, "above")
#: Balanced accuracy of the adversarial year head on held-out latents, 10 bins (chance 0.1; stage 02).
YEAR_DEBIASING_GOAL = Goal(0.15, "at_most")

#: Stage 02's sprint criterion: the training summaries on which the conditional model must beat the plain VAE.
#: The squared error only: the losses are different objectives (the cbvae's is a calibrated
#: likelihood in nats, the plain VAE's a squared error), so their values do not compare.
SPRINT_KEYS = ("best_val_recon",)
#: The variant the conditional model is measured against by the sprint criterion.
SPRINT_REFERENCE = REFERENCE_VARIANT


def sprint_criterion(results: Mapping[str, VolumetricResults]) -> pd.DataFrame:
    """The conditional model's best validation reconstruction (summed squared error) against the plain VAE's.

    Parameters
    ----------
    results : mapping
        Variant -> its :class:`~sematlas.evaluation.results.VolumetricResults` (stage 02).

    Returns
    -------
    DataFrame
        One row per key of :data:`SPRINT_KEYS`: the two values and the ``verdict`` (``PASS`` when the
        conditional model's is lower); empty when either variant was not trained.
    """
    candidate, reference = MAIN_VARIANT, SPRINT_REFERENCE
    if not {candidate, reference} <= set(results):
        return pd.DataFrame(columns=[candidate, reference, "verdict"])
    rows = {}
    for key in SPRINT_KEYS:
        ours, theirs = getattr(results[candidate].training, key), getattr(results[reference].training, key)
        rows[key] = {candidate: ours, reference: theirs, "verdict": PASS if ours < theirs else FAIL}
    return pd.DataFrame.from_dict(rows, orient="index")


def ensemble_verdicts(results: EnsembleResults) -> pd.DataFrame:
    """Each ensemble method's test ECE and OOD AUROCs against :data:`ECE_GOAL` and :data:`OOD_AUROC_GOAL`.

    Returns
    -------
    DataFrame
        One row per (method, measure): ``method``, ``measure`` (``test ECE`` after temperature
        scaling, ``OOD AUROC, <score>: <kind>``), ``value``, ``goal`` and ``verdict``.
    """
    rows = []
    for method, r in results.methods.items():
        measures = {"test ECE": (r.ece_test_after, ECE_GOAL)}
        for score, aurocs in (("disagreement", r.ood_auroc), ("predictive NLL", r.ood_auroc_predictive_nll)):
            measures |= {f"OOD AUROC, {score}: {kind}": (value, OOD_AUROC_GOAL) for kind, value in aurocs.items()}
        for measure, (value, goal) in measures.items():
            rows.append(
                {
                    "method": method,
                    "measure": measure,
                    "value": value,
                    "goal": goal.describe(),
                    "verdict": goal.verdict(value),
                }
            )
    return pd.DataFrame(rows)


__all__ = [
    "ECE_GOAL",
    "FAIL",
    "OOD_AUROC_GOAL",
    "PASS",
    "SPRINT_KEYS",
    "SPRINT_REFERENCE",
    "YEAR_DEBIASING_GOAL",
    "Goal",
    "ensemble_verdicts",
    "sprint_criterion",
]
