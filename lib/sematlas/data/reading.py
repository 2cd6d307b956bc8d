"""Reading and validating the raw Neurosynth v7 files: the first step of curation.

Bad input raises :class:`DataError` naming the file, column or study, before
anything is written.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

COORDINATE_COLUMNS = ("id", "table_id", "x", "y", "z")
METADATA_COLUMNS = ("id", "space", "title", "year", "journal")


class DataError(ValueError):
    """Raw data that cannot be curated: unreadable, missing columns, bad values."""


def _read_table(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", dtype={"id": str, "table_id": str}, keep_default_na=True)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(
            f"{path}: the {what} file cannot be read ({type(exc).__name__}: {exc}); it is truncated or corrupt"
        ) from exc


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})")


def read_coordinates(path: Path) -> pd.DataFrame:
    """Read a Neurosynth coordinates table.

    Returns
    -------
    DataFrame
        Columns ``id`` (str), ``table_id`` (str), ``x``, ``y``, ``z`` (float, MNI mm).

    Raises
    ------
    DataError
        Unreadable file, a missing column, non-numeric or NaN coordinates.
    """
    frame = _read_table(Path(path), "coordinates")
    _require_columns(frame, COORDINATE_COLUMNS, Path(path))
    frame = frame.loc[:, list(COORDINATE_COLUMNS)].copy()
    for axis in "xyz":
        values = pd.to_numeric(frame[axis], errors="coerce")
        bad = values.isna()
        if bad.any():
            studies = ", ".join(frame.loc[bad, "id"].astype(str).unique()[:5])
            raise DataError(
                f"{path}: {int(bad.sum())} peak(s) with a missing or non-numeric '{axis}' "
                f"coordinate (studies {studies})"
            )
        frame[axis] = values.astype(float)
    return frame


def read_metadata(path: Path) -> pd.DataFrame:
    """Read a Neurosynth metadata table (one row per study).

    Raises
    ------
    DataError
        Unreadable file, a missing column, a duplicated id, a year that is not a whole number.
    """
    frame = _read_table(Path(path), "metadata")
    _require_columns(frame, METADATA_COLUMNS, Path(path))
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        raise DataError(f"{path}: duplicated study id(s) {', '.join(frame.loc[duplicated, 'id'].unique()[:5])}")
    year = pd.to_numeric(frame["year"], errors="coerce")
    bad = year.isna() | (year != year.round())
    if bad.any():
        examples = ", ".join(f"{i}: {v!r}" for i, v in zip(frame.loc[bad, "id"][:5], frame.loc[bad, "year"][:5]))
        raise DataError(f"{path}: 'year' is not a whole number for {int(bad.sum())} study(ies) ({examples})")
    frame["year"] = year.astype(int)
    frame["space"] = frame["space"].fillna("UNKNOWN").astype(str)
    return frame


def read_neurosynth(files: Mapping[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, validate and convert Neurosynth files into a peaks and a study table.

    The study table (metadata and LDA topic weights, keyed by the Neurosynth id)
    comes from NiMARE's :func:`nimare.io.convert_neurosynth_to_dict`, which aligns
    the topic matrix with the ids. Peaks are read from the coordinates file with
    their ``table_id`` (NiMARE merges a study's tables into one contrast, and
    deduplication needs them). NiMARE's Dataset/Studyset conversions are not used:
    they re-apply the Talairach-to-MNI transform to studies labelled TAL, whose
    coordinates Neurosynth already converted (checked: shifts of several mm).

    Parameters
    ----------
    files : mapping
        ``coordinates`` and ``metadata`` paths; optionally ``features`` and
        ``vocabulary`` (topic weights).

    Returns
    -------
    peaks : DataFrame
        ``id``, ``table_id``, ``x``, ``y``, ``z``.
    studies : DataFrame
        ``id``, ``title``, ``journal``, ``year``, ``space``, ``doi`` and ``topic_00`` ...
        one column per topic, in the vocabulary's order.

    Raises
    ------
    DataError
        Any problem of :func:`read_coordinates` / :func:`read_metadata`, a study
        without peaks, or peaks of a study absent from the metadata.
    """
    from nimare.io import convert_neurosynth_to_dict

    peaks = read_coordinates(files["coordinates"])
    metadata = read_metadata(files["metadata"])
    with_peaks = set(peaks["id"])
    empty = [study for study in metadata["id"] if study not in with_peaks]
    if empty:
        raise DataError(
            f"{files['metadata']}: {len(empty)} study(ies) have no peaks in "
            f"{Path(files['coordinates']).name}: {', '.join(empty[:5])}"
        )
    orphans = with_peaks.difference(metadata["id"])
    if orphans:
        raise DataError(
            f"{files['coordinates']}: peaks of {len(orphans)} study(ies) absent from the metadata: "
            f"{', '.join(sorted(orphans)[:5])}"
        )

    annotations = None
    if "features" in files:
        annotations = {"features": str(files["features"]), "vocabulary": str(files["vocabulary"])}
    converted = convert_neurosynth_to_dict(
        str(files["coordinates"]), str(files["metadata"]), annotations_files=annotations
    )
    studies = metadata.set_index("id").loc[list(converted)].reset_index()
    columns = ["id", "title", "journal", "year", "space"] + (["doi"] if "doi" in studies else [])
    studies = studies.loc[:, columns]
    if annotations is not None:
        labels = pd.DataFrame.from_dict(
            {sid: study["contrasts"]["1"]["labels"] for sid, study in converted.items()}, orient="index"
        )
        labels.columns = [f"topic_{i:02d}" for i in range(labels.shape[1])]
        studies = studies.join(labels, on="id")
    return peaks, studies.reset_index(drop=True)
