"""The release's tables (stage 10): every table as CSV and Parquet, with its data dictionary.

Each column of a released table is described once, in :data:`COLUMNS` (or, for a
family of columns such as ``z_00`` ..., in :data:`COLUMN_PATTERNS`), by a unit and
a meaning; :func:`data_dictionary` refuses a table with an undescribed column, so
no column ships unexplained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sematlas.analysis.ablation import METRICS as ABLATION_METRICS
from sematlas.core.io import atomic_path, write_parquet

#: Column -> (unit, meaning) of every column a release table may have.
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("", "Neurosynth study id (PMID-based)"),
    "title": ("", "article title"),
    "journal": ("", "journal"),
    "year": ("year", "publication year"),
    "doi": ("", "digital object identifier"),
    "space": ("", "reported stereotactic space (MNI, TAL, UNKNOWN)"),
    "split": ("", "train/val/test split over all studies"),
    "subset_split": ("", "train/val/test split of the stratified development subset (empty outside it)"),
    "in_subset": ("", "whether the study is in the development subset"),
    "n_peaks": ("count", "peaks kept after curation"),
    "n_tables": ("count", "tables (contrasts) the peaks come from"),
    "task_category": ("", "task category from the LDA-50 topics (params curation.task_categories)"),
    "sample_size": ("participants", "sample size from NeuroStore, missing when unknown"),
    "logvar_mean": ("log variance", "mean posterior log-variance over latent units (per-study uncertainty)"),
    "variant": ("", "model variant"),
    "pearson_r": ("", "Pearson correlation between the held-out map and its reconstruction"),
    "ssim": ("", "structural similarity between the held-out map and its reconstruction"),
    "cluster": ("", "HDBSCAN cluster (-1 = noise)"),
    "probability": ("", "HDBSCAN membership strength"),
    "name": ("", "cluster name from its top topics and task"),
    "size": ("count", "studies in the cluster"),
    "top_topics": ("", "the cluster's LDA topics of highest lift"),
    "top_tasks": ("", "the cluster's most frequent task categories with their shares"),
    "sample_size_source": ("", "where the sample size comes from (NeuroStore match), empty when unknown"),
    "duplicate_group": ("", "id of the group of near-duplicate studies the study belongs to"),
    "year_bin": ("", "publication-year bin used to stratify the splits"),
    "peak_count_bin": ("", "peak-count bin used to stratify the splits"),
    "nearest_training_id": ("", "id of the training study nearest by Chamfer distance (retrieval baseline)"),
    "neurostore_study_id": ("", "NeuroStore study id of a probe analysis"),
    "comparison_task": ("", "the analysis's task in the n-back vs flanker studyset"),
    "label": ("", "probe label: 1 = n-back, 0 = flanker"),
    "in_neurosynth": ("", "whether the analysis's study is also in Neurosynth v7 (PMID, title or DOI)"),
    "in_training": ("", "whether that study is in the models' training split"),
    "method": ("", "model or baseline"),
    "precision": ("", "improved precision (Kynkaanniemi et al., 2019): generated maps inside the real manifold"),
    "recall": ("", "improved recall: real maps inside the generated manifold"),
    "frechet_distance": ("", "Frechet distance between Gaussian fits of the two sets of features"),
    "n": ("count", "number of items the row summarises"),
    "top_topic_columns": ("", "study-table columns of the cluster's top topics"),
    "top_topic_lifts": ("ratio", "mean topic weight in the cluster over the corpus mean, per top topic"),
    "top_task_shares": ("fraction", "share of the cluster's studies in each top task category"),
    "decode_task": ("", "task category the centroid map was decoded with"),
    "decode_year": ("year", "publication year the centroid map was decoded with"),
    "component": ("", "canonical variate (1 = largest canonical correlation)"),
    "r": ("", "canonical correlation of the component on the held-out studies"),
    "p": ("", "permutation p-value of the component (stepwise shuffled pairing)"),
    "p_fwe": ("", "family-wise p-value: running maximum of p over components"),
    "view": ("", "latent space: volumetric or pointcloud"),
    "rank": ("", "rank of the unit among the component's top-loading units"),
    "unit": ("", "latent unit (z_<k>)"),
    "structure": ("", "structure coefficient: correlation of the unit with the canonical variate"),
    "weight": ("", "canonical weight of the standardised unit"),
    "step_sd": ("canonical sd", "position along the canonical variate the point set was decoded at"),
    "point": ("", "index of the point in the decoded set"),
    "x": ("mm", "MNI x coordinate"),
    "y": ("mm", "MNI y coordinate"),
    "z": ("mm", "MNI z coordinate"),
    "frechet": ("", "Frechet distance between forecast and observed latent distributions of the year"),
    "mean_term": ("", "the part of the Frechet distance due to the means: squared distance between them"),
    "group": ("", "all studies, or one task category"),
    "observed": ("", "whether the year has enough studies to be used"),
    "shrinkage": ("", "Ledoit-Wolf shrinkage intensity of the year's covariance"),
    "cov": ("latent sd squared", "the year's shrinkage covariance of the latents, row by row"),
    "ablation": ("", "the ablation: params/ablations/<name>.yaml"),
    "change": ("", "the one parameter the ablation changes, 'key: locked -> ablated'"),
    "hypothesis": ("", "what the ablation tests, declared before the run"),
    "criterion": ("", "the success criterion, declared before the run"),
    "locked": ("", "the criterion's metric for the locked model, retrained under the protocol's budget"),
    "ablated": ("", "the criterion's metric for the ablation"),
    "delta": ("", "ablated - locked, on the criterion's metric"),
    "threshold": ("", "the criterion's boundary on delta"),
    "verdict": ("", "PASS when the criterion holds, else FAIL"),
    "train_seconds": ("s", "wall-clock training time of the run"),
    "mixture_components": (
        "count",
        "components of the latent mixture a sample set was drawn from (empty: not a mixture)",
    ),
    "category": ("", "task category"),
    "n_test": ("count", "held-out (test) studies of the category"),
    "n_train": ("count", "training studies of the category"),
    **{name: (unit, meaning) for name, (unit, meaning, _) in ABLATION_METRICS.items()},
}

_METRICS = {
    "pearson_r": ("", "Pearson correlation with the held-out map"),
    "ssim": ("", "structural similarity with the held-out map"),
    "chamfer_mm": ("mm", "Chamfer distance to the held-out peaks"),
    "emd_mm": ("mm", "earth mover's (Sinkhorn) distance to the held-out peaks"),
}

#: Column-name patterns of families of columns -> (unit, meaning template over the named groups).
COLUMN_PATTERNS: tuple[tuple[str, tuple[str, str]], ...] = (
    (r"z_(?P<k>\d+)", ("latent sd", "posterior mean of latent unit {k}")),
    (r"topic_(?P<k>\d+)", ("weight", "weight of LDA-50 topic {k} in the abstract (Neurosynth v7)")),
    (
        r"(?P<task>reconstruction|conditional_generation)_(?P<method>.+)_(?P<metric>" + "|".join(_METRICS) + ")",
        ("{unit}", "{task} by {method}: {meaning}"),
    ),
    (r"prediction_(?P<method>.+)", ("", "zero-shot probe's cross-validated prediction from {method} features")),
    (
        r"predicted_(?P<source>.+)",
        ("", "task category a classifier trained on {source} maps predicts for the held-out map"),
    ),
    (r"r_(?P<source>.+)", ("", "Pearson r of the {source} category map with the category's held-out mean map")),
    (
        r"match_(?P<source>.+)",
        ("", "the held-out category map the {source} category map correlates with best"),
    ),
    (r"mean_(?P<k>\d+)", ("latent sd", "the year's mean of latent unit {k}")),
    (r"var_(?P<k>\d+)", ("latent sd squared", "the year's variance of latent unit {k}")),
    (
        r"(?P<ablation_metric>" + "|".join(ABLATION_METRICS) + ")_delta",
        ("", "ablated - locked, on {ablation_metric}"),
    ),
)


def describe_column(table: str, column: str) -> tuple[str, str]:
    """Unit and meaning of a release column.

    Raises
    ------
    KeyError
        Naming the table and the column when it is not described in
        :data:`COLUMNS` or :data:`COLUMN_PATTERNS`.
    """
    if column in COLUMNS:
        return COLUMNS[column]
    for pattern, (unit, meaning) in COLUMN_PATTERNS:
        match = re.fullmatch(pattern, column)
        if match:
            groups = {key: value.replace("_", " ") for key, value in match.groupdict().items()}
            if "metric" in groups:
                groups["unit"], groups["meaning"] = _METRICS[match["metric"]]
            return unit.format(**groups), meaning.format(**groups)
    raise KeyError(f"release table {table!r}: column {column!r} has no entry in sematlas.release.tables.COLUMNS")


def data_dictionary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (table, column): storage type, unit and meaning.

    Parameters
    ----------
    tables : mapping
        Table name -> frame.

    Returns
    -------
    DataFrame
        ``table``, ``column``, ``type``, ``unit``, ``meaning``.

    Raises
    ------
    KeyError
        Listing every (table, column) that :data:`COLUMNS` and :data:`COLUMN_PATTERNS` do not describe.
    """
    rows, undescribed = [], []
    for table, frame in tables.items():
        for column, dtype in frame.dtypes.items():
            try:
                unit, meaning = describe_column(table, str(column))
            except KeyError:
                undescribed.append(f"{table}.{column}")
                continue
            rows.append({"table": table, "column": str(column), "type": str(dtype), "unit": unit, "meaning": meaning})
    if undescribed:
        raise KeyError(f"release columns without an entry in sematlas.release.tables.COLUMNS: {', '.join(undescribed)}")
    return pd.DataFrame(rows, columns=["table", "column", "type", "unit", "meaning"])


def release_tables(processed: str | os.PathLike[str], results: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The curated study table and every table the stages wrote, by release name.

    Parameters
    ----------
    processed, results : path
        The profile's ``data/processed/<profile>`` and ``data/results/<profile>``.

    Returns
    -------
    dict
        ``studies``, then ``<stage folder>_<table>`` for each ``results/**/*.parquet``, sorted.
    """
    tables = {"studies": pd.read_parquet(Path(processed) / "studies.parquet")}
    for source in sorted(Path(results).rglob("*.parquet")):
        tables["_".join(source.relative_to(results).with_suffix("").parts)] = pd.read_parquet(source)
    return tables


def write_csv(frame: pd.DataFrame, target: str | os.PathLike[str]) -> Path:
    """Write a frame as CSV (no index), atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return target


def export_tables(tables: Mapping[str, pd.DataFrame], folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Write every table as ``<name>.csv`` and ``<name>.parquet``, and the data dictionary as both.

    Parameters
    ----------
    tables : mapping
        Table name -> frame (list-valued cells are joined with ``"; "`` in the CSV).
    folder : path

    Returns
    -------
    DataFrame
        The data dictionary (see :func:`data_dictionary`), itself written as ``data_dictionary.*``.
    """
    folder = Path(folder)
    dictionary = data_dictionary(tables)
    for name, frame in {**tables, "data_dictionary": dictionary}.items():
        write_parquet(frame.reset_index(drop=True), folder / f"{name}.parquet")
        flat = frame.apply(lambda col: col.map(_flatten_cell) if col.dtype == object else col)
        write_csv(flat, folder / f"{name}.csv")
    return dictionary


def _flatten_cell(value: Any) -> Any:
    if isinstance(value, list | tuple | np.ndarray):
        return "; ".join(str(v) for v in value)
    return value
