"""The conditional atlas measured as a meta-analyst uses it: category maps, conditioning and classification.

Per-study correlations (:mod:`sematlas.evaluation.reconstruction`) ask whether a model
predicts one study's map. A meta-analyst asks for the map of a task category, and the
atlas is worth using only if that map is at least as good as what a meta-analysis of
the same studies gives. Three measurements, on the held-out split:

- **Category level.** For every task category with enough held-out studies, the
  held-out category map (the mean of its held-out studies' maps) is compared with the
  model's map for the category query (:meth:`~sematlas.core.metadata.MetadataEncoder.request`
  ``{"task": name}`` decoded at the prior mean), with the mean of its training maps and
  with a real coordinate-based meta-analysis of its training studies: NiMARE's multilevel
  kernel density analysis (:func:`~sematlas.evaluation.baselines.mkda_map`; Wager,
  Lindquist & Kaplan 2007; Kober et al. 2008). Pearson r per category and identification
  accuracy (:func:`identification`);
  model against MKDA and against the training mean by a paired bootstrap over categories.
- **Counterfactual size** (:func:`counterfactual_size`): how alike the model's category
  maps are, the median correlation between every two of them, against the same median of
  the held-out category maps. A model that ignores its conditioning scores 1; one that
  exaggerates it, lower than the data.
- **Classification accuracy score** (CAS; Ravuri & Vinyals, 2019;
  :func:`~sematlas.evaluation.cas.classification_accuracy_score`): a task-category
  classifier trained only on maps the model samples from training studies' metadata and
  tested on real held-out maps. It rewards samples that are both faithful to their
  category and as varied as real studies; trained on real maps it gives the ceiling, on
  ridge's predictions a linear reference.

The functions under :func:`evaluate_conditional_atlas` take plain arrays and callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.io import write_nifti, write_parquet
from sematlas.core.results import parse
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.baselines import MKDA_MAP, mkda_map
from sematlas.evaluation.cas import (
    CAS_PER_CATEGORY,
    classification_accuracy_score,
    meta_rows,
    per_category_sample,
    sample_generator,
)
from sematlas.evaluation.criteria import Goal
from sematlas.evaluation.paired import paired_bootstrap
from sematlas.evaluation.reconstruction import native_widest
from sematlas.evaluation.rendered import RenderedSplits

if TYPE_CHECKING:
    from pathlib import Path

    from sematlas.core.grid import Grid
    from sematlas.core.paths import ProfilePaths
    from sematlas.models import VolumetricVAE

logger = logging.getLogger(__name__)

#: Held-out studies a category needs to have its held-out map: fewer make a mean map of noise.
MIN_TEST_STUDIES = 10
#: Categories left out: ``other`` collects the studies no category's topics claim, not a task.
EXCLUDED_CATEGORIES = ("other",)
#: ``|generated - held_out|`` of the counterfactual size the conditional atlas aims at.
COUNTERFACTUAL_SIZE_GOAL = Goal(0.1, "at_most")


# ------------------------------------------------------------------ category maps
def evaluated_categories(
    test_labels: Sequence[str],
    train_labels: Sequence[str],
    categories: Sequence[str],
    min_test_studies: int = MIN_TEST_STUDIES,
    excluded: Sequence[str] = EXCLUDED_CATEGORIES,
) -> list[str]:
    """The categories measured, in ``categories`` order.

    Those with ``min_test_studies`` held-out studies or more and some training studies, except ``excluded``.
    """
    n_test, n_train = pd.Series(list(test_labels)).value_counts(), pd.Series(list(train_labels)).value_counts()
    return [
        name
        for name in categories
        if name not in excluded and n_test.get(name, 0) >= min_test_studies and n_train.get(name, 0) > 0
    ]


def category_means(maps: np.ndarray, labels: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """The mean map of each category's studies.

    Parameters
    ----------
    maps : ndarray, shape (n_studies, n_voxels)
    labels : ndarray of str, shape (n_studies,)
    categories : sequence of str
        Each has at least one study.

    Returns
    -------
    ndarray, shape (n_categories, n_voxels)
    """
    return np.stack([np.asarray(maps[labels == name], dtype=np.float64).mean(0) for name in categories])


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of every row of ``a`` ``(k, n_voxels)`` with every row of ``b`` ``(m, n_voxels)``, ``(k, m)``.

    NaN where a row is constant (r is undefined there).
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(norms > 0, (a @ b.T) / norms, np.nan)
    return np.clip(r, -1.0, 1.0)  # identical maps give 1 + 2e-16 in floating point


def identification(maps: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """Which held-out category map each category's map correlates best with.

    Parameters
    ----------
    maps, held_out : ndarray, shape (n_categories, n_voxels)
        Row ``i`` of both is category ``i``.

    Returns
    -------
    ndarray of int, shape (n_categories,)
        The best-matching row of ``held_out``; -1 for a map without any defined correlation
        (a constant map). Identification accuracy is ``mean(result == arange(n))``.
    """
    r = correlation_matrix(maps, held_out)
    defined = ~np.isnan(r).all(1)
    best = np.argmax(np.where(np.isnan(r), -np.inf, r), axis=1)
    return np.where(defined, best, -1)


def counterfactual_size(maps: np.ndarray) -> float:
    """Median Pearson r between the maps of every two categories, ``maps`` ``(n_categories, n_voxels)``.

    1 when every category's map is the same: the conditioning changes nothing.
    """
    r = correlation_matrix(maps, maps)
    return float(np.nanmedian(r[np.triu_indices(len(maps), k=1)]))


# ------------------------------------------------------------------ the model's maps
def category_generator(model: VolumetricVAE, datamodule: Any) -> Callable[[str], np.ndarray]:
    """``name -> (n_mask_voxels,)``: the model's map of a category query, the decoded prior mean, widest kernel.

    The query is ``datamodule.encoder.request({"task": name})``: the other fields at their defaults.
    """
    mask = datamodule.brain_mask()

    @torch.no_grad()
    def generate(name: str) -> np.ndarray:
        meta = datamodule.encoder.request({"task": name})
        return native_widest(model.generate_mean(meta), mask)[0].double().numpy()

    return generate


# ------------------------------------------------------------------ the measurements
def category_level(
    categories: Sequence[str], held_out: np.ndarray, methods: Mapping[str, np.ndarray], seed: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every method's category maps against the held-out category maps, and the model against each other method.

    Parameters
    ----------
    categories : sequence of str
    held_out : ndarray, shape (n_categories, n_voxels)
        The held-out category maps, row ``i`` category ``i``.
    methods : mapping of str to ndarray, shape (n_categories, n_voxels)
        ``model`` and the baselines' category maps.
    seed : int
        Seeds the paired bootstraps over categories.

    Returns
    -------
    summary : dict
        Per method ``median_r``, ``mean_r``, ``identification_accuracy``; ``vs_<baseline>``:
        the :class:`~sematlas.evaluation.paired.PairedComparison` of the model's per-category r
        with the baseline's.
    table : DataFrame
        One row per category: ``r_<method>`` and ``match_<method>`` (the held-out category its
        map correlates best with; empty for a constant map).
    """
    table = pd.DataFrame({"category": list(categories)})
    summary: dict[str, Any] = {}
    for name, maps in methods.items():
        r = np.diag(correlation_matrix(maps, held_out))
        best = identification(maps, held_out)
        table[f"r_{name}"] = r
        table[f"match_{name}"] = [categories[b] if b >= 0 else "" for b in best]
        summary[name] = {
            "median_r": float(np.nanmedian(r)),
            "mean_r": float(np.nanmean(r)),
            "identification_accuracy": float((best == np.arange(len(categories))).mean()),
        }
    for baseline in (name for name in methods if name != "model"):
        summary[f"vs_{baseline}"] = paired_bootstrap(
            table["r_model"].to_numpy(), table[f"r_{baseline}"].to_numpy(), seed
        )
    return summary, table


@dataclass(frozen=True)
class ConditionalAtlasEvaluation:
    """What :func:`evaluate_conditional_atlas` measured.

    Attributes
    ----------
    results : ConditionalAtlasResults
        The results file's content.
    categories : DataFrame
        One row per category: ``category``, ``n_test``, ``n_train``, then ``r_<method>`` and
        ``match_<method>`` of :func:`category_level` for ``model``, ``sample_average``, ``training_mean``, ``mkda``.
    classifications : DataFrame
        One row per held-out study of those categories: ``id``, ``category`` and the category each
        CAS classifier predicts (``predicted_model``, ``predicted_ridge``, ``predicted_real``).
    maps : dict of str to ndarray, shape (n_categories, n_mask_voxels)
        The category maps in ``categories`` order: ``held_out``, ``model``, ``sample_average``,
        ``training_mean``, ``mkda``.
    """

    results: ConditionalAtlasResults
    categories: pd.DataFrame
    classifications: pd.DataFrame
    maps: dict[str, np.ndarray]

    def save(self, paths: ProfilePaths, grid: Grid) -> Path:
        """Write the results file, its two tables and the category maps, each atomically.

        Beside ``conditional_atlas.json``: ``conditional_atlas_categories.parquet``,
        ``conditional_atlas_cas.parquet`` and, under ``ConditionalAtlasResults.MAPS_FOLDER``, one 4-D
        NIfTI image per method (MNI152, the widest kernel; volume ``k`` is the ``k``-th of the
        results' ``category_level.categories``), for FSLeyes, nilearn and the manuscript figure.

        Parameters
        ----------
        paths : ProfilePaths
        grid : Grid
            The maps' native grid (``datamodule.grid``): its brain mask holds their voxels.

        Returns
        -------
        Path
            The results file.
        """
        target = self.results.location(paths)
        write_parquet(self.categories, target.with_name("conditional_atlas_categories.parquet"))
        write_parquet(self.classifications, target.with_name("conditional_atlas_cas.parquet"))
        mask = grid.mask()
        for method, rows in self.maps.items():
            volumes = np.zeros((*mask.shape, len(rows)), dtype=np.float32)
            volumes[mask] = rows.T
            image = grid.to_nifti(volumes, f"sematlas {method} category maps")
            write_nifti(image, ConditionalAtlasResults.map_file(paths, method))
        return self.results.save(target)


def evaluate_conditional_atlas(
    model: VolumetricVAE,
    datamodule: Any,
    maps: RenderedSplits | None,
    peaks: pd.DataFrame,
    seed: int,
    *,
    profile: str,
    variant: str,
    pca_max_train: int,
    n_features: int = 64,
    split: str = "test",
    min_test_studies: int = MIN_TEST_STUDIES,
    max_per_category: int = CAS_PER_CATEGORY,
) -> ConditionalAtlasEvaluation:
    """The category-level, conditioning and classification measurements of a conditional model.

    Parameters
    ----------
    model : VolumetricVAE
        The trained network (``AtlasModel.network``).
    datamodule : NeurosynthDataModule
        Set up; its encoder makes the category queries, its training split the baselines.
    maps : RenderedSplits or None
        The stage's rendered splits (``split`` and ``train`` are read whole); ``None`` renders them.
    peaks : DataFrame
        The curated peaks (``peaks.parquet``: ``id``, ``x``, ``y``, ``z``) that MKDA reads.
    seed : int
    profile, variant : str
        Recorded in the results.
    pca_max_train : int
        Training maps of the CAS feature space and its ridge, at most (the linear baselines' sample).
    n_features : int
        Principal components the CAS classifiers read.
    split : str
    min_test_studies : int
        Held-out studies a category needs to be measured; lowered to the second-largest count of
        held-out studies of a category when fewer than two categories reach it.
    max_per_category : int
        Training studies per category, at most (a seeded sample), each decoded from one prior sample
        of its metadata: the CAS classifiers train on these samples, and their category means
        are the ``sample_average`` maps.

    Returns
    -------
    ConditionalAtlasEvaluation

    Raises
    ------
    ValueError
        Fewer than two categories have held-out and training studies.
    """
    model.eval()
    maps = RenderedSplits.shared(maps, datamodule)
    test_maps, train_maps = (maps.images(name)[:, -1].numpy() for name in (split, "train"))
    test_labels, train_labels = (
        datamodule.tables[name].studies["task_category"].to_numpy(dtype=str) for name in (split, "train")
    )
    candidates = evaluated_categories(test_labels, train_labels, datamodule.encoder.categories, 1)
    # A held-out split too small for two categories to reach the threshold (ci's 25 studies) is measured
    # at the largest threshold that leaves two, and the results record it.
    counts = sorted((int((test_labels == name).sum()) for name in candidates), reverse=True)
    if len(counts) < 2:
        raise ValueError(f"fewer than two task categories have {split} and training studies: nothing to compare")
    if counts[1] < min_test_studies:
        logger.warning(
            "fewer than two categories have %d %s studies: measured at %d", min_test_studies, split, counts[1]
        )
        min_test_studies = counts[1]
    categories = evaluated_categories(test_labels, train_labels, datamodule.encoder.categories, min_test_studies)
    logger.info("conditional atlas: %d categories, MKDA of their training studies", len(categories))
    train_ids = datamodule.tables["train"].studies["id"].astype(str).to_numpy()
    generate = category_generator(model, datamodule)
    # One prior sample for each of a seeded sample of every category's training studies, from its own
    # metadata: the CAS trains on them, and their mean per category is the model's category map
    # averaged over the category's studies (the query map decodes one point, the mean topic profile).
    rows = per_category_sample(train_labels, categories, max_per_category, seed)
    logger.info("conditional atlas: %d prior samples from training studies' metadata", len(rows))
    samples = sample_generator(model, datamodule, seed, "sampling for the categories")(
        meta_rows(datamodule.meta["train"], rows)
    )
    category_maps = {
        "held_out": category_means(test_maps, test_labels, categories),
        "model": np.stack([generate(name) for name in categories]),
        "sample_average": category_means(samples, train_labels[rows], categories),
        "training_mean": category_means(train_maps, train_labels, categories),
        # Every training study of the category, no sample drawn: at 4 mm NiMARE fits the largest
        # category of quick (1,167 studies) in about a second.
        "mkda": np.stack([mkda_map(peaks, train_ids[train_labels == name], datamodule.grid) for name in categories]),
    }
    methods = {name: category_maps[name] for name in ("model", "sample_average", "training_mean", "mkda")}
    level, categories_table = category_level(categories, category_maps["held_out"], methods, seed)
    level["sample_average_vs_mkda"] = paired_bootstrap(
        categories_table["r_sample_average"].to_numpy(), categories_table["r_mkda"].to_numpy(), seed
    )
    categories_table.insert(1, "n_test", [int((test_labels == name).sum()) for name in categories])
    categories_table.insert(2, "n_train", [int((train_labels == name).sum()) for name in categories])
    generated, held_out = (counterfactual_size(category_maps[name]) for name in ("model", "held_out"))
    logger.info("conditional atlas: classification accuracy score")
    cas, classifications = classification_accuracy_score(
        train_maps,
        train_labels,
        datamodule.meta["train"],
        test_maps,
        test_labels,
        categories,
        rows,
        samples,
        seed,
        pca_max_train,
        n_features,
        max_per_category,
    )
    ids = datamodule.tables[split].studies["id"].astype(str).to_numpy()
    classifications.insert(0, "id", ids[classifications.pop("row").to_numpy()])
    results = parse(
        ConditionalAtlasResults,
        {
            "profile": profile,
            "variant": variant,
            "split": split,
            "category_level": {
                **level,
                "categories": categories,
                "min_test_studies": min_test_studies,
                "n_test_studies": int(categories_table["n_test"].sum()),
                "chance": 1.0 / len(categories),
                "mkda_map": MKDA_MAP,
                "max_averaged": max_per_category,
            },
            "counterfactual_size": {
                "generated": generated,
                "held_out": held_out,
                "difference": generated - held_out,
                "goal_within": COUNTERFACTUAL_SIZE_GOAL.threshold,
                "meets_goal": COUNTERFACTUAL_SIZE_GOAL.met(abs(generated - held_out)),
            },
            "classification_accuracy_score": cas,
        },
    )
    return ConditionalAtlasEvaluation(results, categories_table, classifications, category_maps)


__all__ = [
    "COUNTERFACTUAL_SIZE_GOAL",
    "EXCLUDED_CATEGORIES",
    "MIN_TEST_STUDIES",
    "ConditionalAtlasEvaluation",
    "category_generator",
    "category_level",
    "category_means",
    "correlation_matrix",
    "counterfactual_size",
    "evaluate_conditional_atlas",
    "evaluated_categories",
    "identification",
]
