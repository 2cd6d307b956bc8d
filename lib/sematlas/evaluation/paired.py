"""A model against a baseline on the same held-out studies: paired bootstrap confidence intervals.

Every held-out claim of the compendium compares two methods scored on the same
studies (the model's Pearson r against PCA's, ridge's, the mean map's). The
studies differ far more from each other than the methods do on any one study,
so the comparison is paired: each bootstrap resample draws studies with
replacement and recomputes both methods' statistics on the same draw (Efron &
Tibshirani, 1993, ch. 13). The intervals are percentile intervals of

- the difference of medians, ``median(model) - median(baseline)``;
- the win rate, the share of studies where the model scores higher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sematlas.core.results import ResultSection

#: Bootstrap resamples of every paired comparison.
N_RESAMPLES = 2000
#: Central interval of the reported confidence intervals.
CONFIDENCE = 0.95


@dataclass(frozen=True, kw_only=True)
class PairedComparison(ResultSection):
    """A model's per-study scores against a baseline's on the same studies, with 95% paired bootstrap CIs.

    Attributes
    ----------
    median_difference : float
        ``median(model) - median(baseline)`` over the studies.
    median_difference_ci : list of float
        Its percentile interval, ``[low, high]``.
    win_rate : float
        Share of the studies where the model's score is higher.
    win_rate_ci : list of float
        Its percentile interval.
    n_studies, n_resamples : int
    confidence : float
    """

    median_difference: float
    median_difference_ci: list[float]
    win_rate: float
    win_rate_ci: list[float]
    n_studies: int
    n_resamples: int
    confidence: float

    @property
    def model_is_better(self) -> bool:
        """Whether the whole interval of the median difference is above 0."""
        return self.median_difference_ci[0] > 0

    @property
    def model_is_worse(self) -> bool:
        """Whether the whole interval of the median difference is below 0."""
        return self.median_difference_ci[1] < 0


def paired_bootstrap(
    model: np.ndarray, baseline: np.ndarray, seed: int, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE
) -> PairedComparison:
    """Compare per-study scores of a model and a baseline on the same studies.

    Parameters
    ----------
    model, baseline : ndarray, shape (n_studies,)
        Scores of the same studies in the same order (e.g. Pearson r); a study where
        either is NaN (a constant map has no correlation) is left out of both.
    seed : int
        Seeds the resamples.
    n_resamples : int
    confidence : float
        Central mass of the intervals.

    Returns
    -------
    PairedComparison

    Raises
    ------
    ValueError
        The arrays differ in length, or no study has both scores.
    """
    model, baseline = np.asarray(model, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if model.shape != baseline.shape or model.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D arrays of one length, got {model.shape} and {baseline.shape}")
    both = ~(np.isnan(model) | np.isnan(baseline))
    model, baseline = model[both], baseline[both]
    if not len(model):
        raise ValueError("no study has both scores: nothing to compare")
    draws = np.random.default_rng(seed).integers(0, len(model), size=(n_resamples, len(model)))
    differences = np.median(model[draws], axis=1) - np.median(baseline[draws], axis=1)
    wins = (model > baseline)[draws].mean(axis=1)
    tails = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
    return PairedComparison(
        median_difference=float(np.median(model) - np.median(baseline)),
        median_difference_ci=[float(v) for v in np.percentile(differences, tails)],
        win_rate=float((model > baseline).mean()),
        win_rate_ci=[float(v) for v in np.percentile(wins, tails)],
        n_studies=len(model),
        n_resamples=n_resamples,
        confidence=confidence,
    )


__all__ = ["CONFIDENCE", "N_RESAMPLES", "PairedComparison", "paired_bootstrap"]
