"""Curation: deduplication, coordinate validation, strata and splits, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sematlas.core.grid import Grid
from sematlas.data.curation import (
    assign_task_categories,
    curate,
    deduplicate,
    distance_to_mask_mm,
    drop_sparse_studies,
    validate_coordinates,
    write_outputs,
)
from sematlas.data.reading import DataError, read_neurosynth
from sematlas.data.splits import quantile_bins, stratified_split, stratified_subset


def _peaks(rows):
    return pd.DataFrame(rows, columns=["id", "table_id", "x", "y", "z"]).astype({"x": float, "y": float, "z": float})


def test_deduplication_on_a_constructed_case():
    peaks = _peaks(
        [
            ("A", "1", 0, 0, 0),
            ("A", "1", 0, 0, 0),
            ("A", "1", 10, 10, 10),  # a repeated peak within a table
            ("A", "2", 10, 10, 10),
            ("A", "2", 0, 0, 0),  # table 2 repeats table 1 exactly
            ("A", "3", 0, 0, 0),
            ("A", "3", 20, 20, 20),  # overlaps table 1, distinct: kept
            ("B", "7", 20, 20, 20),
            ("B", "7", 10, 10, 10),
            ("B", "8", 0, 0, 0),  # B's peak set equals A's
            ("C", "9", 0, 0, 0),
        ]
    )
    kept, group, report = deduplicate(peaks)
    assert report["repeated_peaks_dropped"] == 1
    assert report["repeated_tables_dropped"] == 1
    assert sorted(kept.loc[kept["id"] == "A", "table_id"].unique()) == ["1", "3"]
    assert report["studies_flagged_duplicate"] == 2 and report["duplicate_groups"] == 1
    assert group["A"] == "A" and group["B"] == "A" and pd.isna(group["C"])
    assert report["peaks_out"] == len(kept) == 8  # A: 2 + 2, B: 3, C: 1


def test_validation_drops_off_grid_and_far_peaks_and_logs_them():
    grid = Grid(2)
    distance = distance_to_mask_mm(grid)
    far_voxel = np.unravel_index(np.argmax(distance), distance.shape)
    far_mm = grid.affine[:3, :3] @ np.array(far_voxel) + grid.affine[:3, 3]
    peaks = _peaks([("A", "1", 0, 0, 0), ("A", "1", 200, 0, 0), ("A", "1", *far_mm), ("A", "1", 40, -20, 50)])
    kept, dropped = validate_coordinates(peaks, grid, max_distance_mm=10.0)
    assert kept[["x", "y", "z"]].values.tolist() == [[0, 0, 0], [40, -20, 50]]
    assert dropped["reason"].tolist() == ["outside_grid", "far_from_brain"]
    assert np.isnan(dropped["distance_mm"].iloc[0]) and dropped["distance_mm"].iloc[1] > 10.0


def test_sparse_studies_are_dropped():
    peaks = _peaks([("A", "1", 0, 0, 0), ("A", "1", 2, 0, 0), ("B", "1", 0, 0, 0)])
    kept, dropped = drop_sparse_studies(peaks, min_peaks=2)
    assert dropped == ["B"] and set(kept["id"]) == {"A"}


def test_task_categories_follow_the_topic_mapping():
    topics = pd.DataFrame([[0.5, 0.1, 0.0], [0.0, 0.2, 0.3], [0.01, 0.0, 0.02]], columns=["t0", "t1", "t2"])
    categories = assign_task_categories(topics, {"memory": [0], "pain": [1, 2]}, min_weight=0.05)
    assert categories.tolist() == ["memory", "pain", "other"]
    with pytest.raises(DataError, match=r"task category 'pain' names topic\(s\) \[7\], but there are 3 topics"):
        assign_task_categories(topics, {"pain": [7]}, min_weight=0.05)


def test_quantile_bins_keep_equal_values_together():
    years = pd.Series([2000] * 50 + [2010] * 30 + list(range(2011, 2019)) * 5)
    bins, edges = quantile_bins(years, 10)
    assert bins[years == 2000].nunique() == 1 and bins[years == 2010].nunique() == 1
    assert bins.max() == len(edges) - 2


def _strata(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    index = pd.Index([f"s{i}" for i in range(n)], name="id")
    return pd.Series(rng.integers(0, 10, n).astype(str), index=index)


def test_split_is_stratified_seeded_and_keeps_groups_together():
    strata = _strata()
    groups = pd.Series(pd.NA, index=strata.index, dtype="string")
    groups.iloc[[3, 500, 1700]] = "s3"
    split = stratified_split(strata, (0.7, 0.15, 0.15), seed=1, groups=groups)
    shares = split.value_counts(normalize=True)
    assert abs(shares["train"] - 0.70) < 0.01 and abs(shares["val"] - 0.15) < 0.01
    per_stratum = pd.crosstab(strata, split, normalize="index")
    assert (per_stratum["train"] - 0.70).abs().max() < 0.02
    assert split.iloc[[3, 500, 1700]].nunique() == 1
    assert split.equals(stratified_split(strata, (0.7, 0.15, 0.15), seed=1, groups=groups))
    assert not split.equals(stratified_split(strata, (0.7, 0.15, 0.15), seed=2, groups=groups))


def test_subset_is_proportional_to_the_strata():
    strata = _strata()
    chosen = stratified_subset(strata, 1000, seed=3)
    assert len(chosen) == 1000
    full, sub = strata.value_counts(normalize=True), strata[chosen].value_counts(normalize=True)
    assert (full - sub).abs().max() < 0.005


def test_curate_the_nimare_sample_end_to_end(nimare_sample, sample_params, tmp_path):
    curation = curate(nimare_sample, sample_params)
    studies = curation.studies
    assert curation.steps[0]["studies"] == 20
    assert len(studies) == curation.steps[-1]["studies"] >= 18 and studies["id"].is_unique
    assert set(studies["split"]) <= {"train", "val", "test"} and studies["in_subset"].sum() == 10
    assert studies.loc[studies["in_subset"], "subset_split"].notna().all()
    assert studies.loc[~studies["in_subset"], "subset_split"].isna().all()
    assert (studies["n_peaks"] == curation.peaks.groupby("id").size().reindex(studies["id"]).to_numpy()).all()
    assert curation.steps[0]["peaks"] >= curation.steps[-1]["peaks"] == len(curation.peaks)
    assert studies["sample_size"].isna().all()
    manifest = write_outputs(curation, tmp_path, sample_params, {"x": "0"}, {"numpy": "1"})
    assert manifest["n_studies"] == len(studies) and (tmp_path / "manifest.json").is_file()
    assert pd.read_parquet(tmp_path / "studies.parquet").equals(studies)
    assert not list(tmp_path.glob("*.partial"))


# ------------------------------------------------------------------ bad input: clear errors
def _copy_sample(nimare_sample, tmp_path, coordinates=None, metadata=None) -> dict[str, Path]:
    coords = pd.read_csv(nimare_sample["coordinates"], sep="\t", dtype=str)
    meta = pd.read_csv(nimare_sample["metadata"], sep="\t", dtype=str)
    coords = coordinates(coords) if coordinates else coords
    meta = metadata(meta) if metadata else meta
    files = {"coordinates": tmp_path / "coordinates.tsv.gz", "metadata": tmp_path / "metadata.tsv.gz"}
    coords.to_csv(files["coordinates"], sep="\t", index=False)
    meta.to_csv(files["metadata"], sep="\t", index=False)
    return files


def test_truncated_gzip(nimare_sample, tmp_path):
    files = _copy_sample(nimare_sample, tmp_path)
    data = files["coordinates"].read_bytes()
    files["coordinates"].write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=r"coordinates\.tsv\.gz: the coordinates file cannot be read .* truncated or corrupt"
    ):
        read_neurosynth(files)


def test_missing_column(nimare_sample, tmp_path):
    files = _copy_sample(nimare_sample, tmp_path, coordinates=lambda c: c.drop(columns="z"))
    with pytest.raises(DataError, match=r"coordinates\.tsv\.gz: missing column\(s\) z"):
        read_neurosynth(files)


def test_nan_coordinates(nimare_sample, tmp_path):
    def blank(coords):
        coords.loc[4, "y"] = None
        return coords

    files = _copy_sample(nimare_sample, tmp_path, coordinates=blank)
    with pytest.raises(DataError, match=r"1 peak\(s\) with a missing or non-numeric 'y' coordinate"):
        read_neurosynth(files)


def test_year_that_is_not_a_number(nimare_sample, tmp_path):
    def bad_year(meta):
        meta.loc[2, "year"] = "in press"
        return meta

    files = _copy_sample(nimare_sample, tmp_path, metadata=bad_year)
    with pytest.raises(DataError, match=r"'year' is not a whole number for 1 study\(ies\) \(\d+: 'in press'\)"):
        read_neurosynth(files)


def test_empty_study(nimare_sample, tmp_path):
    def add_empty(meta):
        extra = meta.iloc[[0]].assign(id="99999999")
        return pd.concat([meta, extra])

    files = _copy_sample(nimare_sample, tmp_path, metadata=add_empty)
    with pytest.raises(DataError, match=r"1 study\(ies\) have no peaks .*: 99999999"):
        read_neurosynth(files)


def test_corrupt_gzip_header(tmp_path, nimare_sample):
    files = _copy_sample(nimare_sample, tmp_path)
    files["metadata"].write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="the metadata file cannot be read"):
        read_neurosynth(files)
