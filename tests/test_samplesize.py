"""Behaviour of the sparse sample-size lookup from NiMARE's NeuroStore studyset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sematlas.data import samplesize
from sematlas.data.samplesize import (
    MNI_BOUNDS_MM,
    SAMPLE_SIZE_SOURCE,
    load_neurostore_peaks,
    load_neurostore_sample_sizes,
    match_sample_sizes,
    normalise_title,
)

METADATA_NAME = "data-neurosynth_version-7_metadata.tsv.gz"


def _neurosynth_metadata_path() -> Path:
    mirror = Path(os.environ.get("SEMATLAS_DATA_MIRROR") or "/work/shared/data/neurosynth")
    return mirror / METADATA_NAME


@pytest.fixture(scope="module")
def neurostore() -> pd.DataFrame:
    return load_neurostore_sample_sizes()


@pytest.fixture(scope="module")
def neurosynth() -> pd.DataFrame:
    path = _neurosynth_metadata_path()
    if not path.is_file():
        pytest.skip(f"Neurosynth v7 metadata mirror not found at {path} (set SEMATLAS_DATA_MIRROR)")
    return pd.read_csv(path, sep="\t", dtype={"id": str})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Working Memory IN the N-Back", "working memory in the n back"),
        ("Error-related negativity: an fMRI study.", "error related negativity an fmri study"),
        ("Élan vital — naïve Müller réponse", "elan vital naive muller reponse"),
        ("  spaced \t out\n title  ", "spaced out title"),
        ("Ageing &amp; memory", "ageing memory"),
        ("Cortex &eacute;tude", "cortex etude"),
        ("The <i>in vivo</i> response<sup>1</sup>", "the in vivo response 1"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_normalise_title(raw, expected):
    assert normalise_title(raw) == expected


def test_titles_differing_in_case_and_punctuation_share_a_key():
    assert normalise_title("The N-back task.") == normalise_title("the n back TASK")


def test_doi_key_matches_the_neurostore_slug_form():
    assert samplesize.doi_key("10.1016/j.neuron.2005.06.008") == "10-1016-j-neuron-2005-06-008"
    assert samplesize.doi_key("https://doi.org/10.1093/CERCOR/bhj116") == "10-1093-cercor-bhj116"
    assert samplesize.doi_key(None) == ""


def test_studyset_folder_is_found_inside_nimare():
    folder = samplesize.neurostore_studyset_dir()
    assert folder.name == samplesize.STUDYSET_NAME
    assert folder.parent.parent.name == "nimare"
    assert (folder / "studies.parquet").is_file()


def test_neurostore_table_has_one_row_per_study_with_sane_counts(neurostore):
    assert len(neurostore) == 320
    assert neurostore["neurostore_study_id"].is_unique
    assert (neurostore["normalised_title"] != "").all()
    sizes = neurostore["sample_size"]
    assert sizes.dtype == np.float64
    assert (sizes.dropna() > 0).all()
    # 314 of 320 studies have an annotated count in the 2026-07 release.
    assert sizes.notna().sum() >= 300
    assert sizes.max() < 10_000
    assert neurostore["sample_size_basis"].notna().sum() == sizes.notna().sum()
    # PMIDs come from slugs, which 153 studies have.
    assert neurostore["pmid"].dropna().str.fullmatch(r"\d+").all()
    assert 140 <= neurostore["pmid"].notna().sum() <= 170


def test_neurosynth_v7_match(neurosynth):
    result = match_sample_sizes(neurosynth)
    matched = result["sample_size_source"].notna()
    n_matched = int(matched.sum())
    n_studies = int(result["neurostore_study_id"].nunique())
    print(
        f"\nNeurosynth v7: {n_matched} of {len(result)} studies got a sample size "
        f"({n_matched / len(result):.2%}), from {n_studies} of 320 NeuroStore studies; "
        f"methods: {result['match_method'].value_counts().to_dict()}"
    )
    assert result.index.equals(neurosynth.index)
    assert result["id"].equals(neurosynth["id"])
    # Observed 203 (204 studies matched, one of them without a count).
    assert 198 <= n_matched <= 208
    assert 199 <= n_studies <= 209
    assert (result.loc[matched, "sample_size"] > 0).all()
    assert (result.loc[matched, "sample_size_source"] == SAMPLE_SIZE_SOURCE).all()
    assert result.loc[~matched, "sample_size"].isna().all()
    # A NeuroStore study lends its count to at most one Neurosynth study.
    assert result["neurostore_study_id"].dropna().is_unique


def test_pmid_tier_agrees_with_titles_on_neurosynth(neurosynth):
    by_title = match_sample_sizes(neurosynth)
    by_pmid = match_sample_sizes(neurosynth, id_is_pmid=True)
    assert (by_pmid["match_method"] == "pmid").sum() > 50
    pd.testing.assert_series_equal(by_title["neurostore_study_id"], by_pmid["neurostore_study_id"])


def test_titles_differing_only_by_case_and_punctuation_match(neurostore):
    known = neurostore.dropna(subset=["sample_size"]).iloc[0]
    mangled = "  " + known["title"].upper().replace(" ", " -- ") + "!!."
    studies = pd.DataFrame(
        {"id": ["a", "b"], "title": [mangled, "A paper NeuroStore has never heard of"]},
        index=[10, 20],
    )
    result = match_sample_sizes(studies)
    assert list(result.index) == [10, 20]
    assert result.loc[10, "sample_size"] == known["sample_size"]
    assert result.loc[10, "sample_size_source"] == SAMPLE_SIZE_SOURCE
    assert result.loc[10, "neurostore_study_id"] == known["neurostore_study_id"]
    assert np.isnan(result.loc[20, "sample_size"])
    assert pd.isna(result.loc[20, "sample_size_source"])


def test_doi_matches_when_the_title_does_not(neurostore):
    known = neurostore.dropna(subset=["doi_key", "sample_size"]).iloc[0]
    # Rebuild a dotted DOI whose slug is the NeuroStore key.
    doi = known["doi_key"].replace("-", ".", 1).replace("-", "/", 1)
    studies = pd.DataFrame({"id": [1], "title": ["retitled"], "doi": [doi]})
    result = match_sample_sizes(studies)
    assert result.loc[0, "match_method"] == "doi"
    assert result.loc[0, "sample_size"] == known["sample_size"]


def test_a_title_shared_by_two_input_rows_is_not_guessed(neurostore):
    known = neurostore.dropna(subset=["sample_size"]).iloc[0]
    studies = pd.DataFrame({"id": [1, 2], "title": [known["title"], known["title"]]})
    result = match_sample_sizes(studies)
    assert result["sample_size"].isna().all()


@pytest.mark.parametrize("missing", ["id", "title"])
def test_missing_column_is_named(missing):
    studies = pd.DataFrame({"id": [1], "title": ["x"]}).drop(columns=missing)
    with pytest.raises(ValueError, match=f"'{missing}'"):
        match_sample_sizes(studies)


@pytest.mark.slow
def test_peaks_are_in_mni_bounds_with_study_counts(neurostore):
    peaks = load_neurostore_peaks()
    expected = [
        "neurostore_study_id",
        "analysis_id",
        "analysis_name",
        "comparison_task",
        "x",
        "y",
        "z",
        "space",
        "sample_size",
    ]
    assert list(peaks.columns) == expected
    assert 9_000 < len(peaks) <= 9_492
    assert peaks["neurostore_study_id"].nunique() == 320
    assert set(peaks["comparison_task"]) == {"n-back", "flanker"}
    assert set(peaks["space"]) <= {"MNI", "TAL", "OTHER", "UNKNOWN"}
    for axis, (low, high) in MNI_BOUNDS_MM.items():
        assert peaks[axis].between(low, high).all(), axis
    assert not peaks.duplicated(["analysis_id", "x", "y", "z"]).any()
    sizes = neurostore.set_index("neurostore_study_id")["sample_size"]
    np.testing.assert_array_equal(peaks["sample_size"].to_numpy(), peaks["neurostore_study_id"].map(sizes).to_numpy())
    # Talairach peaks are converted with NiMARE's tal2mni, MNI peaks untouched.
    from nimare.utils import tal2mni

    raw = pd.read_parquet(samplesize.neurostore_studyset_dir() / "coordinates.parquet")
    for space in ("TAL", "MNI"):
        row = raw[raw["space"] == space].iloc[0]
        xyz = row[["x", "y", "z"]].to_numpy(dtype=float)[None, :]
        expected_xyz = tal2mni(xyz)[0] if space == "TAL" else xyz[0]
        same = peaks[peaks["analysis_id"] == row["id"]][["x", "y", "z"]].to_numpy()
        assert np.isclose(same, expected_xyz).all(axis=1).any(), space
