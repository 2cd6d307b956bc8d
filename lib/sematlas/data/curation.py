"""Curation of Neurosynth v7 into the tables the models train on.

The steps, in the order the curation notebook runs them (:func:`curate` runs them all):

1. :func:`sematlas.data.reading.read_neurosynth` — read and validate the raw files; convert with NiMARE.
2. :func:`deduplicate` — directional deduplication of peaks, tables and studies.
3. :func:`validate_coordinates` — drop peaks off the MNI grid or far from the brain.
4. :func:`drop_sparse_studies` — drop studies left with too few peaks.
5. :func:`assign_task_categories`, then :mod:`sematlas.data.splits` — the study table, its strata and its splits.

Every function is pure (DataFrames in, DataFrames out); bad input raises
:class:`~sematlas.data.reading.DataError` naming the file, column or study, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from sematlas.core.grid import Grid
from sematlas.core.metadata import SPACES
from sematlas.core.params import Params
from sematlas.data.reading import DataError, read_neurosynth
from sematlas.data.splits import quantile_bins, stratified_split, stratified_subset


# --------------------------------------------------------------------- deduplication
def _peak_signature(peaks: pd.DataFrame, by: list[str]) -> pd.Series:
    """One string per group: its sorted unique peaks, comparable across groups."""
    ordered = peaks.drop_duplicates(by + ["x", "y", "z"]).sort_values(by + ["x", "y", "z"])
    text = (
        ordered["x"].map("{:g}".format) + "," + ordered["y"].map("{:g}".format) + "," + ordered["z"].map("{:g}".format)
    )
    return text.groupby([ordered[column] for column in by], sort=False).agg(";".join)


def deduplicate(peaks: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, dict[str, int]]:
    """Directional deduplication.

    Only exact repetition is removed, and always in one direction (a later copy
    is dropped in favour of the first): overlapping but distinct contrasts stay.

    1. exact repeated peaks within a table are dropped;
    2. a table whose peak set repeats an earlier table of the same study is dropped;
    3. studies whose whole peak set equals another study's are *flagged* (kept),
       so the splits can keep them together.

    Parameters
    ----------
    peaks : DataFrame
        ``id``, ``table_id``, ``x``, ``y``, ``z``.

    Returns
    -------
    peaks : DataFrame
        Deduplicated peaks.
    duplicate_group : Series
        Indexed by study id: the smallest id of the group of studies with an
        identical peak set, or ``<NA>`` for a study that has no twin.
    report : dict
        Counts of every step.
    """
    report = {"peaks_in": len(peaks), "tables_in": int(peaks.groupby(["id", "table_id"]).ngroups)}
    repeated = peaks.duplicated(["id", "table_id", "x", "y", "z"])
    peaks = peaks.loc[~repeated]
    report["repeated_peaks_dropped"] = int(repeated.sum())

    table_signature = _peak_signature(peaks, ["id", "table_id"]).rename("signature").reset_index()
    table_signature["table_order"] = pd.to_numeric(table_signature["table_id"], errors="coerce")
    table_signature = table_signature.sort_values(["id", "table_order", "table_id"])
    repeated_table = table_signature.duplicated(["id", "signature"])
    drop = table_signature.loc[repeated_table, ["id", "table_id"]]
    report["repeated_tables_dropped"] = int(repeated_table.sum())
    if len(drop):
        key = pd.MultiIndex.from_frame(peaks[["id", "table_id"]])
        peaks = peaks.loc[~key.isin(pd.MultiIndex.from_frame(drop))]

    study_signature = _peak_signature(peaks, ["id"])
    group_first = study_signature.groupby(study_signature).transform(lambda ids: min(ids.index))
    twins = study_signature.groupby(study_signature).transform("size") > 1
    duplicate_group = group_first.where(twins).astype("string")
    duplicate_group.index.name = "id"
    report["studies_flagged_duplicate"] = int(twins.sum())
    report["duplicate_groups"] = int(duplicate_group.dropna().nunique())
    report["peaks_out"] = len(peaks)
    return peaks.reset_index(drop=True), duplicate_group.rename("duplicate_group"), report


# ----------------------------------------------------------------------- validation
def distance_to_mask_mm(grid: Grid) -> np.ndarray:
    """Euclidean distance (mm) of every voxel centre to the nearest brain voxel, shape ``(D, H, W)``."""
    return ndimage.distance_transform_edt(~grid.mask(), sampling=grid.voxel_size)


def validate_coordinates(peaks: pd.DataFrame, grid: Grid, max_distance_mm: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop peaks off the MNI grid or farther than ``max_distance_mm`` from the brain.

    Coordinates are validated, never transformed: Neurosynth already mapped
    Talairach peaks to MNI.

    Returns
    -------
    kept : DataFrame
        The valid peaks.
    dropped : DataFrame
        The dropped peaks with a ``reason`` (``outside_grid`` or ``far_from_brain``)
        and their ``distance_mm`` (NaN off the grid): the drop log.
    """
    ijk = grid.mm_to_voxel(peaks[["x", "y", "z"]].to_numpy())
    inside = grid.contains(ijk)
    distance = np.full(len(peaks), np.nan)
    distance[inside] = distance_to_mask_mm(grid)[tuple(ijk[inside].T)]
    far = inside & (distance > max_distance_mm)
    reason = np.where(~inside, "outside_grid", np.where(far, "far_from_brain", ""))
    keep = reason == ""
    dropped = peaks.loc[~keep].assign(reason=reason[~keep], distance_mm=distance[~keep])
    return peaks.loc[keep].reset_index(drop=True), dropped.reset_index(drop=True)


def drop_sparse_studies(peaks: pd.DataFrame, min_peaks: int) -> tuple[pd.DataFrame, list[str]]:
    """Drop every study with fewer than ``min_peaks`` peaks; return the kept peaks and dropped ids."""
    counts = peaks.groupby("id").size()
    sparse = sorted(counts.index[counts < min_peaks])
    return peaks.loc[~peaks["id"].isin(sparse)].reset_index(drop=True), sparse


def count_by_space(peaks: pd.DataFrame, space: pd.Series) -> dict[str, dict[str, int]]:
    """Studies and peaks per space label (``MNI``/``TAL``/``UNKNOWN``) of a peak table.

    ``space`` is indexed by study id.
    """
    labels = peaks["id"].map(space).fillna("UNKNOWN")
    return {
        label: {"studies": int(peaks.loc[labels == label, "id"].nunique()), "peaks": int((labels == label).sum())}
        for label in SPACES
    }


# --------------------------------------------------------------------- study table
def assign_task_categories(topics: pd.DataFrame, mapping: Mapping[str, Sequence[int]], min_weight: float) -> pd.Series:
    """Task category of each study from its LDA topic weights.

    A category scores the summed weight of its topics; a study takes its best
    category, or ``other`` when no category reaches ``min_weight``.

    Parameters
    ----------
    topics : DataFrame, shape (n_studies, n_topics)
        Topic weights, columns in vocabulary order.
    mapping : mapping
        Category name -> topic indices (from params).
    min_weight : float

    Returns
    -------
    Series of str, indexed like ``topics``.
    """
    n_topics = topics.shape[1]
    for name, indices in mapping.items():
        bad = [i for i in indices if not 0 <= int(i) < n_topics]
        if bad:
            raise DataError(f"task category {name!r} names topic(s) {bad}, but there are {n_topics} topics")
    scores = pd.DataFrame({name: topics.iloc[:, list(indices)].sum(axis=1) for name, indices in mapping.items()})
    best = scores.idxmax(axis=1)
    return best.where(scores.max(axis=1) >= min_weight, "other").rename("task_category")


# ---------------------------------------------------------------------- the whole
@dataclass
class Curation:
    """Everything curation produces; :func:`curate` fills it, the notebook shows it.

    Attributes
    ----------
    studies : DataFrame
        One row per kept study (see :func:`curate`).
    peaks : DataFrame
        Kept peaks: ``id``, ``table_id``, ``x``, ``y``, ``z`` (MNI mm).
    dropped_peaks : DataFrame
        The drop log of coordinate validation and of sparse studies.
    steps : list of dict
        Studies and peaks (overall and per space label) after every step.
    report : dict
        Deduplication counts, bin edges, split and subset sizes, sample-size matches.
    """

    studies: pd.DataFrame
    peaks: pd.DataFrame
    dropped_peaks: pd.DataFrame
    steps: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def _step(name: str, peaks: pd.DataFrame, space: pd.Series) -> dict[str, Any]:
    return {
        "step": name,
        "studies": int(peaks["id"].nunique()),
        "peaks": len(peaks),
        "by_space": count_by_space(peaks, space),
    }


def curate(files: Mapping[str, Path], params: Params, sample_sizes: pd.DataFrame | None = None) -> Curation:
    """Run every curation step on raw Neurosynth files.

    Parameters
    ----------
    files : mapping
        Paths as returned by :func:`sematlas.data.fetch.fetch_neurosynth_v7`.
    params : mapping
        The validated profile parameters (``seed`` and ``curation``).
    sample_sizes : DataFrame, optional
        ``id``, ``sample_size``, ``sample_size_source`` from
        :func:`sematlas.data.samplesize.match_sample_sizes`; missing studies get NaN.

    Returns
    -------
    Curation
        ``studies`` has: ``id``, ``title``, ``journal``, ``year``, ``space``, ``doi``,
        ``n_peaks``, ``n_tables``, ``topic_*``, ``task_category``, ``sample_size``,
        ``sample_size_source``, ``duplicate_group``, ``year_bin``, ``peak_count_bin``,
        ``split``, ``in_subset``, ``subset_split``.
    """
    config = params["curation"]
    seed = int(params["seed"])
    peaks, studies = read_neurosynth(files)
    space = studies.set_index("id")["space"]
    steps = [_step("read", peaks, space)]

    peaks, duplicate_group, dedup_report = deduplicate(peaks)
    steps.append(_step("deduplicated", peaks, space))

    grid = Grid(int(config["validation_voxel_size"]))
    peaks, dropped = validate_coordinates(peaks, grid, float(config["max_distance_to_mask_mm"]))
    steps.append(_step("coordinates_validated", peaks, space))

    before = peaks
    peaks, sparse_ids = drop_sparse_studies(peaks, int(config["min_peaks"]))
    sparse_peaks = before.loc[before["id"].isin(sparse_ids)].assign(reason="study_below_min_peaks", distance_mm=np.nan)
    dropped = pd.concat([dropped, sparse_peaks], ignore_index=True).assign(space=lambda d: d["id"].map(space))
    steps.append(_step("min_peaks", peaks, space))

    kept = studies.loc[studies["id"].isin(peaks["id"].unique())].set_index("id")
    kept["n_peaks"] = peaks.groupby("id").size()
    kept["n_tables"] = peaks.groupby("id")["table_id"].nunique()
    topic_columns = [column for column in kept.columns if column.startswith("topic_")]
    if topic_columns:
        kept["task_category"] = assign_task_categories(
            kept[topic_columns], config["task_categories"], float(config["task_min_weight"])
        )
    else:
        kept["task_category"] = "other"
    if sample_sizes is not None:
        matched = sample_sizes.set_index("id")
        kept["sample_size"] = matched["sample_size"].reindex(kept.index).astype(float)
        kept["sample_size_source"] = matched["sample_size_source"].reindex(kept.index).astype("string")
    else:
        kept["sample_size"] = np.nan
        kept["sample_size_source"] = pd.Series(pd.NA, index=kept.index, dtype="string")
    # A twin dropped by validation leaves a group of one: such a study is no longer a duplicate.
    group = duplicate_group.reindex(kept.index)
    group = group.where(group.map(group.value_counts()) > 1)
    kept["duplicate_group"] = group.astype("string")

    kept["year_bin"], year_edges = quantile_bins(kept["year"], int(config["year_bins"]))
    kept["peak_count_bin"], peak_edges = quantile_bins(kept["n_peaks"], int(config["peak_count_bins"]))
    strata = kept["year_bin"].astype(str) + "x" + kept["peak_count_bin"].astype(str)
    fractions = config["split_fractions"]
    kept["split"] = stratified_split(strata, fractions, seed, kept["duplicate_group"])
    subset = stratified_subset(strata, int(config["subset_size"]), seed + 1, kept["duplicate_group"])
    kept["in_subset"] = kept.index.isin(subset)
    kept["subset_split"] = pd.Series(pd.NA, index=kept.index, dtype="string")
    kept.loc[subset, "subset_split"] = stratified_split(
        strata.loc[subset], fractions, seed + 2, kept.loc[subset, "duplicate_group"]
    )

    report = {
        "deduplication": dedup_report,
        "coordinate_drops": {reason: int(n) for reason, n in dropped["reason"].value_counts().items()},
        "studies_below_min_peaks": len(sparse_ids),
        "year_bin_edges": year_edges.tolist(),
        "peak_count_bin_edges": peak_edges.tolist(),
        "splits": {name: int(n) for name, n in kept["split"].value_counts().items()},
        "subset_size": int(kept["in_subset"].sum()),
        "subset_splits": {name: int(n) for name, n in kept["subset_split"].value_counts().items()},
        "task_categories": {name: int(n) for name, n in kept["task_category"].value_counts().items()},
        "sample_size_matched": int(kept["sample_size"].notna().sum()),
    }
    columns = (
        ["title", "journal", "year", "space"]
        + (["doi"] if "doi" in kept else [])
        + [
            "n_peaks",
            "n_tables",
            *topic_columns,
            "task_category",
            "sample_size",
            "sample_size_source",
            "duplicate_group",
            "year_bin",
            "peak_count_bin",
            "split",
            "in_subset",
            "subset_split",
        ]
    )
    studies_out = kept.loc[:, columns].reset_index()
    peaks_out = peaks.loc[peaks["id"].isin(studies_out["id"])].reset_index(drop=True)
    return Curation(studies=studies_out, peaks=peaks_out, dropped_peaks=dropped, steps=steps, report=report)


def subset_name(size: int) -> str:
    """Name of the development subset: ``neurosynth_subset_1k`` for 1,000 studies."""
    return f"neurosynth_subset_{size // 1000}k" if size % 1000 == 0 else f"neurosynth_subset_{size}"


def write_outputs(
    curation: Curation,
    folder: Path,
    params: Params,
    checksums: Mapping[str, str],
    versions: Mapping[str, str],
) -> dict[str, Any]:
    """Write the curated tables and their manifest into ``folder``, each file atomically.

    The manifest is written last: its presence means every table before it is complete.

    Returns
    -------
    dict
        The manifest: counts, parameters, input and output checksums, package versions.
    """
    from sematlas.core.io import sha256_file, write_json, write_parquet
    from sematlas.core.metadata import task_categories

    folder = Path(folder)
    outputs = {
        "studies.parquet": curation.studies,
        "peaks.parquet": curation.peaks,
        "dropped_peaks.parquet": curation.dropped_peaks,
    }
    for name, frame in outputs.items():
        write_parquet(frame, folder / name)
    manifest = {
        "profile": params["profile"],
        "subset": subset_name(int(params["curation"]["subset_size"])),
        "n_studies": len(curation.studies),
        "n_peaks": len(curation.peaks),
        "steps": curation.steps,
        "report": curation.report,
        "task_categories": task_categories(params),
        "parameters": params.to_dict(),
        "inputs_sha256": dict(checksums),
        "outputs_sha256": {name: sha256_file(folder / name) for name in outputs},
        "package_versions": dict(versions),
    }
    write_json(manifest, folder / "manifest.json")
    return manifest
