"""The conditional atlas's results file (stage 09): ``evaluation/conditional_atlas.json``.

:class:`ConditionalAtlasResults` holds the main model's category maps against NiMARE's MKDA, its
conditioning and its classification accuracy score, from
:func:`sematlas.evaluation.conditional.evaluate_conditional_atlas`; the category maps themselves lie
beside it (:meth:`ConditionalAtlasResults.map_file`). The other results files of the held-out
evaluations are in :mod:`sematlas.evaluation.results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from sematlas.core.results import ResultSection, StageResults
from sematlas.evaluation.paired import PairedComparison

if TYPE_CHECKING:
    from pathlib import Path

    from sematlas.core.paths import ProfilePaths


@dataclass(frozen=True, kw_only=True)
class CategoryMethod(ResultSection):
    """One way of making a task category's map, scored against the held-out category maps.

    ``median_r`` and ``mean_r`` over categories of the Pearson r with the category's own held-out
    map; ``identification_accuracy``: the share of categories whose map correlates best with its
    own held-out map among every category's.
    """

    median_r: float
    mean_r: float
    identification_accuracy: float


@dataclass(frozen=True, kw_only=True)
class CategoryLevel(ResultSection):
    """The meta-analyst's view: a category's map against the mean of its held-out studies' maps.

    ``model`` decodes the category query (its training studies' mean topic profile, at the prior
    mean); ``sample_average`` is the model's map averaged over the category's studies instead: the
    mean of one decoded prior sample for each of at most ``max_averaged`` of its training studies,
    each from its own metadata; ``training_mean`` averages the category's training maps;
    ``mkda`` is NiMARE's ``MKDADensity`` of its training studies (``mkda_map`` names the map used).
    ``vs_<method>``: the query map against that method, ``sample_average_vs_mkda`` the average
    against MKDA; paired bootstraps over categories of the per-category r (``n_studies`` of a
    comparison counts categories). ``chance`` of identification is ``1 / n``.
    """

    categories: list[str]
    min_test_studies: int
    n_test_studies: int
    chance: float
    mkda_map: str
    max_averaged: int
    model: CategoryMethod
    sample_average: CategoryMethod
    training_mean: CategoryMethod
    mkda: CategoryMethod
    vs_mkda: PairedComparison
    vs_sample_average: PairedComparison
    vs_training_mean: PairedComparison
    sample_average_vs_mkda: PairedComparison


@dataclass(frozen=True, kw_only=True)
class CounterfactualSize(ResultSection):
    """How different the category maps are: the median correlation between every two categories' maps.

    ``generated`` of the model's category maps, ``held_out`` of the held-out category maps,
    ``difference = generated - held_out`` (positive: the model's categories are more alike than
    real ones); the goal is ``|difference| <= goal_within``.
    """

    generated: float
    held_out: float
    difference: float
    goal_within: float
    meets_goal: bool


@dataclass(frozen=True, kw_only=True)
class AccuracyComparison(ResultSection):
    """Two classifiers on the same held-out studies: the balanced-accuracy difference with a paired bootstrap CI.

    ``difference = BA(model) - BA(baseline)``; the interval resamples test studies with replacement
    and recomputes both balanced accuracies on each draw. ``model_only_correct`` and
    ``baseline_only_correct``: shares of the studies only one of them classifies correctly.
    """

    difference: float
    difference_ci: list[float]
    model_only_correct: float
    baseline_only_correct: float
    n_studies: int
    n_resamples: int
    confidence: float


@dataclass(frozen=True, kw_only=True)
class ClassificationAccuracyScore(ResultSection):
    """Classification accuracy score (Ravuri & Vinyals, 2019): a task-category classifier trained on maps
    from one source and tested on real held-out maps.

    Balanced accuracies of the classifier trained on the model's prior samples (``model``), on ridge's
    predictions (``ridge``) and on the real maps (``real``) of the same training studies; ``*_ratio``
    divides by ``real``, the ceiling of samples as varied as real studies (predictions pulled towards
    each category's mean, as ridge's are, can pass it: they train a nearest-mean classifier);
    ``vs_ridge`` compares model and ridge on the same test studies.
    """

    classifier: str
    n_features: int
    max_per_category: int
    n_train: int
    n_test: int
    chance: float
    model: float
    ridge: float
    real: float
    model_ratio: float
    ridge_ratio: float
    vs_ridge: AccuracyComparison


@dataclass(frozen=True, kw_only=True)
class ConditionalAtlasResults(StageResults):
    """The main model as a conditional atlas: ``evaluation/conditional_atlas.json`` (stage 09).

    The per-category table and the classifier's per-study predictions lie beside it
    (:meth:`sematlas.evaluation.conditional.ConditionalAtlasEvaluation.save`).
    """

    LOCATION: ClassVar[str] = "evaluation/conditional_atlas.json"
    #: The category maps beside it: ``<method>.nii.gz``, 4-D, volume ``k`` for ``category_level.categories[k]``.
    MAPS_FOLDER: ClassVar[str] = "evaluation/category_maps"
    #: The methods whose category maps are saved, in the order the figures draw them.
    MAP_METHODS: ClassVar[tuple[str, ...]] = ("held_out", "model", "sample_average", "training_mean", "mkda")

    @classmethod
    def map_file(cls, paths: ProfilePaths, method: str) -> Path:
        """``data/results/<profile>/evaluation/category_maps/<method>.nii.gz`` (one of :attr:`MAP_METHODS`)."""
        if method not in cls.MAP_METHODS:
            raise ValueError(f"no category maps of method {method!r}: one of {cls.MAP_METHODS}")
        return paths.results / cls.MAPS_FOLDER / f"{method}.nii.gz"

    profile: str
    variant: str
    split: str
    category_level: CategoryLevel
    counterfactual_size: CounterfactualSize
    classification_accuracy_score: ClassificationAccuracyScore

    def headline(self) -> dict[str, float]:
        """The numbers stage 09 answers its questions with: category maps, conditioning, CAS."""
        level, size, cas = self.category_level, self.counterfactual_size, self.classification_accuracy_score
        return {
            "category r, model (median)": level.model.median_r,
            "category r, MKDA (median)": level.mkda.median_r,
            "category r, model averaged over studies (median)": level.sample_average.median_r,
            "category r, training mean (median)": level.training_mean.median_r,
            "model - MKDA r, 95% CI low": level.vs_mkda.median_difference_ci[0],
            "model - MKDA r, 95% CI high": level.vs_mkda.median_difference_ci[1],
            "averaged - MKDA r, 95% CI low": level.sample_average_vs_mkda.median_difference_ci[0],
            "averaged - MKDA r, 95% CI high": level.sample_average_vs_mkda.median_difference_ci[1],
            "identification, model": level.model.identification_accuracy,
            "identification, model averaged over studies": level.sample_average.identification_accuracy,
            "identification, MKDA": level.mkda.identification_accuracy,
            "between-category r, generated": size.generated,
            "between-category r, held out": size.held_out,
            "CAS, model": cas.model,
            "CAS, ridge": cas.ridge,
            "CAS, real maps (ceiling)": cas.real,
        }


__all__ = [
    "AccuracyComparison",
    "CategoryLevel",
    "CategoryMethod",
    "ClassificationAccuracyScore",
    "ConditionalAtlasResults",
    "CounterfactualSize",
]
