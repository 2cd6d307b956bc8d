"""Sparse sample sizes for Neurosynth v7 from NiMARE's bundled NeuroStore studyset.

Neurosynth v7 records no participant counts. NiMARE 0.22 ships one real
NeuroStore studyset, ``nback_vs_flanker_studyset_2026-07`` (320 studies, 906
analyses of n-back and flanker tasks), whose automatic annotations carry the
number of participants per group. Matching its studies to Neurosynth lends a
count to roughly 1.4 % of Neurosynth, enough to probe (not to train) how a
model's maps depend on sample size.

Where the information lives in the studyset
-------------------------------------------
* Titles: ``studies.parquet`` column ``name``.
* Identifiers: ``metadata.parquet`` column ``slug`` (153 of 320 studies, those
  NeuroStore ingested from Semantic Scholar/PubMed) reads
  ``"<pmid>-<doi with every non-alphanumeric run replaced by '-'>[-pmc<id>]"``,
  e.g. ``16039570-10-1016-j-neuron-2005-06-008``. The PMID is recoverable
  exactly; the DOI only in that slugified form, so DOIs are compared through
  :func:`doi_key`, which slugifies both sides the same way.
* Participant counts: ``annotations.parquet`` columns
  ``ParticipantDemographicsExtractor.groups[i].count`` with the companion flag
  ``...groups[i].imaging_sample`` ("yes"/"no"). These annotations are study
  level: every analysis of a study carries identical values. Four analyses
  also have hand-curated metadata fields (``sample_sizes``, ``subjects``,
  ``n_subjects``), used only as a fallback (see
  :func:`load_neurostore_sample_sizes`).
"""

from __future__ import annotations

import html
import importlib.util
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

__all__ = [
    "SAMPLE_SIZE_SOURCE",
    "STUDYSET_NAME",
    "MNI_BOUNDS_MM",
    "normalise_title",
    "doi_key",
    "neurostore_studyset_dir",
    "load_neurostore_sample_sizes",
    "match_sample_sizes",
    "load_neurostore_peaks",
]

#: Folder of the studyset inside ``nimare/resources``.
STUDYSET_NAME = "nback_vs_flanker_studyset_2026-07"
#: Provenance tag written to ``sample_size_source`` for every matched count.
SAMPLE_SIZE_SOURCE = "neurostore:nback_vs_flanker_2026-07"

#: Bounding box (mm) of NiMARE's MNI152 2 mm template grid (91 x 109 x 91
#: voxels from (-90, -126, -72)), the grid :mod:`sematlas.core.grid` renders into.
MNI_BOUNDS_MM: dict[str, tuple[float, float]] = {
    "x": (-90.0, 90.0),
    "y": (-126.0, 90.0),
    "z": (-72.0, 108.0),
}

_DEMOGRAPHICS = "ParticipantDemographicsExtractor.groups"
_GROUP_FIELD = re.compile(r"^" + re.escape(_DEMOGRAPHICS) + r"\[(\d+)\]\.(count|imaging_sample)$")
# Hand-curated per-analysis metadata fields that hold a participant count.
_METADATA_COUNT_FIELDS = ("sample_sizes", "subjects", "n_subjects")
# Analyses whose peaks mostly fall outside the template box are not in mm
# template space at all (one analysis in this studyset lists voxel indices).
_MAX_OUT_OF_BOUNDS_FRACTION = 0.5

_TAG = re.compile(r"<[^>]+>")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SLUG = re.compile(r"^(?P<pmid>\d+)-(?P<doi>.+?)(?:-pmc\d+)?$")


def normalise_title(title: str | None) -> str:
    """Reduce a paper title to a key that survives formatting differences.

    Parameters
    ----------
    title : str or None
        A title as stored by Neurosynth or NeuroStore. ``None`` and NaN are
        accepted because both databases have rows without titles.

    Returns
    -------
    str
        Lower-case ASCII words separated by single spaces: HTML entities are
        decoded and tags dropped (NeuroStore titles come from publisher
        markup), accents are stripped via NFKD, and every run of
        non-alphanumeric characters (punctuation, dashes, trailing periods,
        whitespace) becomes one space. Missing titles give ``""``, which
        :func:`match_sample_sizes` never matches.

    Examples
    --------
    >>> normalise_title("  The N-Back Task: <i>fMRI</i> &amp; Ageing. ")
    'the n back task fmri ageing'
    """
    if title is None or (isinstance(title, float) and np.isnan(title)) or title is pd.NA:
        return ""
    text = html.unescape(str(title))
    # Replace tags by a space, not nothing, so "<sup>1</sup>word" stays two tokens.
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _NON_ALNUM.sub(" ", text.lower())
    return text.strip()


def _compact(normalised: str) -> str:
    # Space-free key for the second title tier: NeuroStore titles scraped from
    # PDFs lose spaces ("inZNF804A", "then-back") or split words at odd
    # apostrophes ("Alzheimer\u05f3s"), which the spaced key cannot absorb.
    return normalised.replace(" ", "")


def doi_key(doi: str | None) -> str:
    """Slugify a DOI the way NeuroStore slugs do, so the two can be compared.

    Parameters
    ----------
    doi : str or None
        A DOI such as ``"10.1016/j.neuron.2005.06.008"`` (a ``doi.org`` URL or
        ``doi:`` prefix is tolerated).

    Returns
    -------
    str
        Lower-case DOI with every non-alphanumeric run replaced by ``-``
        (``"10-1016-j-neuron-2005-06-008"``); ``""`` when missing.
    """
    if doi is None or (isinstance(doi, float) and np.isnan(doi)) or doi is pd.NA:
        return ""
    text = str(doi).strip().lower()
    text = re.sub(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", "", text)
    return _NON_ALNUM.sub("-", text).strip("-")


def _pmid_key(value: object) -> str:
    # PMIDs arrive as int, float (after a NaN forced the column to float) or
    # str; compare canonical digit strings so 12345, 12345.0 and "12345" agree.
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(int(value))
    return str(value).strip()


def neurostore_studyset_dir() -> Path:
    """Locate NiMARE's bundled NeuroStore n-back vs flanker studyset.

    Returns
    -------
    pathlib.Path
        The studyset folder inside the installed ``nimare`` package.

    Raises
    ------
    FileNotFoundError
        If the installed NiMARE does not ship the studyset (it arrived with
        NiMARE 0.22).
    """
    # Ask the import system where nimare lives rather than hard-coding a venv
    # path. find_spec locates the package without executing it: importing
    # nimare costs seconds and the sample sizes need only its data files.
    spec = importlib.util.find_spec("nimare")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("NiMARE is not installed; it ships the NeuroStore studyset.")
    package = Path(next(iter(spec.submodule_search_locations)))
    folder = package / "resources" / STUDYSET_NAME
    if not (folder / "studies.parquet").is_file():
        raise FileNotFoundError(
            f"NiMARE's NeuroStore studyset {STUDYSET_NAME!r} not found at {folder}; it ships with nimare>=0.22."
        )
    return folder


def _resolve(path: str | Path | None) -> Path:
    return neurostore_studyset_dir() if path is None else Path(path)


def _max_metadata_count(value: object) -> float:
    # Curated fields hold a scalar, a numeric string, or a list like "[16]";
    # several numbers are per-group sizes, so the largest is the safe floor.
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (list, tuple, np.ndarray)):
        numbers = [float(v) for v in value]
    else:
        numbers = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", str(value))]
    return max(numbers) if numbers else np.nan


@lru_cache(maxsize=4)
def _sample_size_table(folder: str) -> pd.DataFrame:
    root = Path(folder)
    studies = pd.read_parquet(root / "studies.parquet", columns=["study_id", "name"])

    # Read only the demographic columns: the annotation table has ~930 columns.
    all_columns = pq.read_schema(root / "annotations.parquet").names
    group_columns = [c for c in all_columns if _GROUP_FIELD.match(c)]
    annotations = pd.read_parquet(root / "annotations.parquet", columns=["id", "study_id", *group_columns])
    groups = sorted({int(match.group(1)) for c in group_columns if (match := _GROUP_FIELD.match(c))})
    missing = pd.Series(np.nan, index=annotations.index)
    counts = pd.DataFrame(
        {g: pd.to_numeric(annotations.get(f"{_DEMOGRAPHICS}[{g}].count", missing), errors="coerce") for g in groups},
        index=annotations.index,
    )
    imaging = pd.DataFrame(
        {g: annotations.get(f"{_DEMOGRAPHICS}[{g}].imaging_sample", missing) for g in groups},
        index=annotations.index,
    )
    # Sum the groups that were scanned: a study's sample is the union of its
    # groups (patients + controls), and behavioural-only groups ("no", 26 of
    # 1,572 groups here) never entered the maps. A missing flag (none in this
    # release) counts as scanned: the group is reported in an imaging paper.
    is_scanned = imaging.apply(lambda col: col.astype("string").str.lower().ne("no"))
    scanned = counts.where(is_scanned.fillna(True).astype(bool))
    per_analysis = scanned.clip(lower=0).sum(axis=1, min_count=1)

    metadata = pd.read_parquet(root / "metadata.parquet", columns=["study_id", "slug", *_METADATA_COUNT_FIELDS])
    curated = metadata[list(_METADATA_COUNT_FIELDS)].map(_max_metadata_count).max(axis=1)

    per_study = pd.DataFrame(
        {
            "annotation": per_analysis.groupby(annotations["study_id"]).max(),
            "metadata": curated.groupby(metadata["study_id"]).max(),
        }
    )
    table = studies.rename(columns={"study_id": "neurostore_study_id", "name": "title"})
    table = table.join(per_study, on="neurostore_study_id")
    # Annotations first: they count every scanned group, whereas the curated
    # fields are per-analysis and may cover one group only (e.g. "[16]" for a
    # study of 16 children and 16 adults, annotated as 32).
    # A zero count is an extraction failure, not a study without participants.
    annotated = table["annotation"].where(table["annotation"] > 0)
    curated_count = table["metadata"].where(table["metadata"] > 0)
    table["sample_size"] = annotated.fillna(curated_count).astype(float)
    table["sample_size_basis"] = pd.Series(pd.NA, index=table.index, dtype="string")
    table.loc[annotated.notna(), "sample_size_basis"] = "annotations:" + _DEMOGRAPHICS
    table.loc[annotated.isna() & curated_count.notna(), "sample_size_basis"] = "metadata"

    slugs = metadata.dropna(subset=["slug"]).drop_duplicates("study_id").set_index("study_id")["slug"]
    parsed = slugs.str.extract(_SLUG)
    table["pmid"] = table["neurostore_study_id"].map(parsed["pmid"]).astype("string")
    table["doi_key"] = table["neurostore_study_id"].map(parsed["doi"]).astype("string")
    table["normalised_title"] = table["title"].map(normalise_title)
    columns = [
        "neurostore_study_id",
        "title",
        "normalised_title",
        "sample_size",
        "sample_size_basis",
        "pmid",
        "doi_key",
    ]
    return table[columns].sort_values("neurostore_study_id", ignore_index=True)


def load_neurostore_sample_sizes(path: str | Path | None = None) -> pd.DataFrame:
    """Read one participant count per study of the NeuroStore studyset.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        Studyset folder; defaults to :func:`neurostore_studyset_dir`.

    Returns
    -------
    pandas.DataFrame
        One row per study (320 for the bundled studyset), sorted by
        ``neurostore_study_id``, with columns

        ``neurostore_study_id``, ``title``, ``normalised_title``
            identity of the study;
        ``sample_size`` : float
            Participants scanned, NaN where unknown (6 of 320 studies). Per
            analysis it is the sum of ``ParticipantDemographicsExtractor``
            group counts, leaving out groups flagged ``imaging_sample == "no"``;
            per study it is the maximum over analyses (the annotations are
            study level, so all analyses agree in this release, but the
            maximum is the study's full sample if they ever do not). Where a
            study has no annotated groups, the largest hand-curated metadata
            count (``sample_sizes``/``subjects``/``n_subjects``) is used.
            Caveat: nested groups (e.g. "older adults" plus its "young-old"
            and "old-old" halves) are summed too, which overstates a few
            studies with more than two groups.
        ``sample_size_basis`` : string
            ``"annotations:ParticipantDemographicsExtractor.groups"`` or
            ``"metadata"``; NA when ``sample_size`` is NaN.
        ``pmid`` : string
            PubMed ID parsed from the NeuroStore slug, NA for 167 studies.
        ``doi_key`` : string
            The DOI in slugified form (see :func:`doi_key`), NA likewise.
    """
    folder = _resolve(path).resolve()
    return _sample_size_table(str(folder)).copy()


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing required column(s) {missing}; it has {list(frame.columns)}")


def _lookup(reference: pd.DataFrame, key: str) -> pd.DataFrame:
    """Map each non-empty key to one NeuroStore study, deterministically.

    Several NeuroStore studies sharing a key (none do in the bundled release)
    resolve to the largest known count, ties and unknown counts broken by the
    smallest study id: the largest is the full sample when others are subsets,
    the same rule as across a study's analyses.
    """
    ref = reference[reference[key].fillna("") != ""]
    ref = ref.sort_values(["sample_size", "neurostore_study_id"], ascending=[False, True], na_position="last")
    return ref.drop_duplicates(key).set_index(key)[["neurostore_study_id", "sample_size"]]


def match_sample_sizes(
    studies: pd.DataFrame,
    *,
    id_is_pmid: bool = False,
    path: str | Path | None = None,
) -> pd.DataFrame:
    """Lend NeuroStore participant counts to a study table, by identity.

    Parameters
    ----------
    studies : pandas.DataFrame
        Needs ``id`` and ``title``; ``doi`` and ``pmid`` are used when present
        (Neurosynth's metadata table has ``id``, ``doi`` and ``title``).
    id_is_pmid : bool, default False
        Treat ``id`` as a PubMed ID (true of Neurosynth). Off by default so
        that arbitrary integer ids cannot collide with PMIDs by accident.
    path : str or pathlib.Path, optional
        NeuroStore studyset folder; defaults to the one NiMARE ships.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``studies``, with columns ``id``; ``sample_size`` (float,
        NaN when unmatched or when the matched study has no count);
        ``sample_size_source`` (string, ``SAMPLE_SIZE_SOURCE`` exactly where
        ``sample_size`` is known, else NA); ``neurostore_study_id`` (string,
        the matched study, NA if none); and ``match_method`` (string:
        ``"pmid"``, ``"title"``, ``"title_compact"`` or ``"doi"``).

    Raises
    ------
    ValueError
        If ``id`` or ``title`` is missing; the message names the column.

    Notes
    -----
    Tiers, first hit wins:

    1. PMID (``pmid`` column, or ``id`` with ``id_is_pmid=True``): an exact
       identifier, but the studyset has PMIDs for only 153 of 320 studies.
    2. Exact :func:`normalise_title`.
    3. The same key with spaces removed (PDF-extracted NeuroStore titles drop
       spaces: "inZNF804A", "then-back").
    4. DOI, compared via :func:`doi_key`. Last, because Neurosynth v7 DOIs are
       noisy (118 rows share a DOI with another row, and two studies whose
       PMIDs agree have different DOIs), while the title is the row's own text.

    Ambiguity is never guessed at: a title or DOI key carried by more than one
    input row (Neurosynth has two different papers titled "Spectral and
    temporal processing in human auditory cortex") is not used for matching
    at that tier; several NeuroStore studies sharing a key resolve as in
    :func:`_lookup` (largest count, then smallest study id).
    """
    _require(studies, ("id", "title"), "studies")
    reference = load_neurostore_sample_sizes(path)
    reference["compact_title"] = reference["normalised_title"].map(_compact)

    keys = pd.DataFrame(index=studies.index)
    keys["title"] = studies["title"].map(normalise_title)
    keys["title_compact"] = keys["title"].map(_compact)
    keys["doi"] = studies["doi"].map(doi_key) if "doi" in studies.columns else ""
    if "pmid" in studies.columns:
        pmid_source = studies["pmid"]
    elif id_is_pmid:
        pmid_source = studies["id"]
    else:
        pmid_source = pd.Series(pd.NA, index=studies.index)
    keys["pmid"] = pmid_source.map(_pmid_key)

    tiers = (
        ("pmid", "pmid", False),
        ("title", "normalised_title", True),
        ("title_compact", "compact_title", True),
        ("doi", "doi_key", True),
    )
    matched_id = pd.Series(pd.NA, index=studies.index, dtype="string")
    method = pd.Series(pd.NA, index=studies.index, dtype="string")
    for tier, ref_column, unique_only in tiers:
        lookup = _lookup(reference, ref_column)
        key = keys[tier]
        usable = (key != "") & matched_id.isna()
        if unique_only:
            # A key shared by several input rows cannot say which one it is.
            usable &= ~key.duplicated(keep=False)
        hit = usable & key.isin(lookup.index)
        matched_id[hit] = key[hit].map(lookup["neurostore_study_id"]).astype("string")
        method[hit] = tier

    sizes = matched_id.map(reference.set_index("neurostore_study_id")["sample_size"])
    sizes = pd.to_numeric(sizes, errors="coerce").astype(float)
    source = pd.Series(pd.NA, index=studies.index, dtype="string")
    source[sizes.notna()] = SAMPLE_SIZE_SOURCE
    return pd.DataFrame(
        {
            "id": studies["id"],
            "sample_size": sizes,
            "sample_size_source": source,
            "neurostore_study_id": matched_id,
            "match_method": method,
        },
        index=studies.index,
    )


def load_neurostore_peaks(
    path: str | Path | None = None,
    *,
    drop_out_of_bounds: bool = True,
) -> pd.DataFrame:
    """Read the studyset's peaks in MNI millimetres, one row per peak.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        Studyset folder; defaults to :func:`neurostore_studyset_dir`.
    drop_out_of_bounds : bool, default True
        Remove peaks outside :data:`MNI_BOUNDS_MM`, and whole analyses where
        more than half of the peaks are outside (their tables are not in mm:
        analysis ``5d6uZERUkro6-3ETTdQNH7CoK`` lists voxel indices up to 144).

    Returns
    -------
    pandas.DataFrame
        Columns ``neurostore_study_id``, ``analysis_id``, ``analysis_name``,
        ``comparison_task`` (``"n-back"`` or ``"flanker"``, the task the
        studyset was selected on), ``x``, ``y``, ``z`` (float, MNI mm),
        ``space`` (the space as reported) and ``sample_size`` (the study's
        count from :func:`load_neurostore_sample_sizes`).

    Notes
    -----
    Reported spaces in this release: MNI 7,819 peaks, TAL 1,159, OTHER 347,
    UNKNOWN 167. TAL peaks are converted with :func:`nimare.utils.tal2mni`
    (Lancaster's icbm_other transform). OTHER and UNKNOWN are kept unconverted,
    i.e. treated as MNI, the NeuroStore default and the space of most modern
    studies; filter on ``space`` to exclude them. Exact duplicate peaks within
    an analysis (83 in this release) are dropped: for rendering they carry no
    extra information and would double-weight one location.
    """
    from nimare.utils import tal2mni

    folder = _resolve(path)
    coords = pd.read_parquet(folder / "coordinates.parquet", columns=["id", "study_id", "x", "y", "z", "space"])
    analyses = pd.read_parquet(folder / "analyses.parquet", columns=["id", "name"])
    tasks = pd.read_parquet(folder / "metadata.parquet", columns=["id", "comparison_task"])

    peaks = coords.rename(columns={"id": "analysis_id", "study_id": "neurostore_study_id"})
    peaks[["x", "y", "z"]] = peaks[["x", "y", "z"]].astype(float)
    peaks["space"] = peaks["space"].astype("string").str.upper()
    tal = (peaks["space"] == "TAL").to_numpy()
    if tal.any():
        peaks.loc[tal, ["x", "y", "z"]] = tal2mni(peaks.loc[tal, ["x", "y", "z"]].to_numpy())

    if drop_out_of_bounds:
        inside = np.ones(len(peaks), dtype=bool)
        for axis, (low, high) in MNI_BOUNDS_MM.items():
            inside &= peaks[axis].between(low, high).to_numpy()
        outside_fraction = pd.Series(~inside, index=peaks.index).groupby(peaks["analysis_id"]).transform("mean")
        peaks = peaks[inside & (outside_fraction <= _MAX_OUT_OF_BOUNDS_FRACTION).to_numpy()]

    peaks = peaks.drop_duplicates(["analysis_id", "x", "y", "z"])
    peaks["analysis_name"] = peaks["analysis_id"].map(analyses.set_index("id")["name"])
    peaks["comparison_task"] = peaks["analysis_id"].map(tasks.drop_duplicates("id").set_index("id")["comparison_task"])
    sizes = load_neurostore_sample_sizes(folder).set_index("neurostore_study_id")["sample_size"]
    peaks["sample_size"] = peaks["neurostore_study_id"].map(sizes).astype(float)
    columns = [
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
    return peaks[columns].reset_index(drop=True)
