"""Neurosynth v7 through NiMARE, from the network or from an offline mirror, and where each file came from.

NiMARE's :func:`nimare.extract.fetch_neurosynth` skips any file already present
in ``<data_dir>/neurosynth/``, so an offline mirror is used by linking its files
in first: the same NiMARE code path then runs with or without a network. A
mirror named now replaces the links (and copies) an earlier mirror left, so the
files are the named mirror's; a file that came from no mirror (a download, or
one put there by hand) is kept, and the output and ``source.json`` beside the
files say so and that the named mirror was not used for it. ``source.json``
records, for every file, the folder it came from and how.

Every file is verified against the published v7 SHA-256 digests held here, not
against a checksum file that travels with the mirror (a corrupt mirror could
carry a matching corrupt list).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sematlas.core.io import read_json, sha256_file, write_json

logger = logging.getLogger(__name__)

#: SHA-256 of the Neurosynth v7 files (neurosynth-data commit 209c33c, the one NiMARE 0.22 fetches).
NEUROSYNTH_V7_SHA256: dict[str, str] = {
    "data-neurosynth_version-7_coordinates.tsv.gz": "17135be3e08a0ab045896c77217e8463086543a0817d52a6a88c8e32c1161616",
    "data-neurosynth_version-7_metadata.tsv.gz": "8acde7de2a14ee2a12b406e50a8805e83288b0bc78924ddb36879d496dfb757b",
    "data-neurosynth_version-7_vocab-LDA50_keys.tsv": "7d2c872af784eb0bb96e7f2d63ba5c699cd002d3f58baa60353d9450c9431bac",
    "data-neurosynth_version-7_vocab-LDA50_metadata.json": "d803b63c1b9afa4e65503b07c087f16304147cb236c8d82e7d79e4e2339e308f",
    "data-neurosynth_version-7_vocab-LDA50_source-abstract_type-weight_features.npz": "dff7606079404b8496be4baca35c0d261e91d4ac6ff5c5595e1ef519e598a571",
    "data-neurosynth_version-7_vocab-LDA50_vocabulary.txt": "57a5fba4d3ee97cfcbf73a13d0631a1d9709a53c5a1fdf6d173f04ac8bb8f302",
}
LICENSE_FILE = "LICENSE.txt"

#: Beside the files: the mirror named, and for every file the folder it came from and how.
SOURCE_FILE = "source.json"
#: The origin recorded for a file NiMARE downloaded.
NIMARE_DOWNLOAD = "NiMARE download (github.com/neurosynth/neurosynth-data)"
#: How a file got there: linked or copied from a mirror now, downloaded now, or found there.
LINKED, COPIED, DOWNLOADED, FOUND = "symlink", "copy", "download", "already there"


class ChecksumError(RuntimeError):
    """A fetched or mirrored file does not match its published SHA-256."""


@dataclass(frozen=True)
class NeurosynthFiles:
    """What :func:`fetch_neurosynth_v7` verified in ``data/raw/neurosynth``.

    Attributes
    ----------
    paths : dict
        ``coordinates``, ``metadata``, ``features``, ``vocabulary``, ``keys`` and
        ``topics_metadata`` -> path.
    checksums : dict
        File name -> verified SHA-256.
    source : dict
        The content of ``source.json``: ``folder``, ``mirror`` (the one named, or
        None), ``files`` (name -> ``origin`` folder and ``via``, one of
        ``"symlink"``, ``"copy"``, ``"download"``, ``"already there"``) and
        ``mirror_not_used_for`` (names whose origin is not the named mirror).
    """

    paths: dict[str, Path]
    checksums: dict[str, str]
    source: dict[str, Any]


def resolve_mirror(param_mirror: str | None) -> Path | None:
    """The offline mirror folder: ``SEMATLAS_DATA_MIRROR`` if set, else the parameter, else none."""
    chosen = os.environ.get("SEMATLAS_DATA_MIRROR") or param_mirror
    if not chosen:
        return None
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data mirror folder does not exist: {path}")
    return path


def _from_a_mirror(target: Path, previous: Mapping[str, str]) -> bool:
    """Whether a file in the data folder is a mirror's: a link, or a copy an earlier fetch recorded."""
    return target.is_symlink() or previous.get("via") in (LINKED, COPIED)


def _place(source: Path, target: Path) -> str:
    """Link ``target`` to ``source`` (copy where links are impossible), replacing it atomically; return how."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        partial.symlink_to(source)
        how = LINKED
    except OSError:
        shutil.copyfile(source, partial)
        how = COPIED
    os.replace(partial, target)
    return how


def link_mirror(
    mirror: Path, target_dir: Path, previous: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, str]:
    """Link (or copy, where links are impossible) the mirror's v7 files into ``target_dir``.

    A file already there is replaced when it came from a mirror (a link, or a copy
    that ``previous`` records); any other file is kept, as NiMARE would.

    Parameters
    ----------
    previous : mapping, optional
        ``files`` of the last ``source.json``: name -> ``origin`` and ``via``.

    Returns
    -------
    dict
        Name -> ``"symlink"`` or ``"copy"`` (placed from the mirror) or
        ``"already there"`` (kept), for every file the mirror holds.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    previous = previous or {}
    placed = {}
    for name in [*NEUROSYNTH_V7_SHA256, LICENSE_FILE]:
        source, target = mirror / name, target_dir / name
        if not source.is_file():
            continue
        if target.exists() and not _from_a_mirror(target, previous.get(name, {})):
            placed[name] = FOUND
        else:
            placed[name] = _place(source, target)
    return placed


def _found_origin(target: Path, previous: Mapping[str, str]) -> dict[str, str]:
    """Where a file that was already there came from: its link's folder, the last record, or the data folder."""
    if target.is_symlink():
        return {"origin": str(Path(os.readlink(target)).parent), "via": LINKED}
    return dict(previous) if previous else {"origin": str(target.parent), "via": FOUND}


def _sources(
    target_dir: Path,
    mirror: Path | None,
    placed: Mapping[str, str],
    downloaded: set[str],
    previous: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """``source.json``'s content after a fetch."""
    files = {}
    for name in [*NEUROSYNTH_V7_SHA256, LICENSE_FILE]:
        if name in downloaded:
            files[name] = {"origin": NIMARE_DOWNLOAD, "via": DOWNLOADED}
        elif placed.get(name) in (LINKED, COPIED):
            files[name] = {"origin": str(mirror), "via": placed[name]}
        elif (target_dir / name).exists():
            files[name] = _found_origin(target_dir / name, previous.get(name, {}))
    unused = sorted(name for name, record in files.items() if mirror is not None and record["origin"] != str(mirror))
    return {
        "folder": str(target_dir),
        "mirror": None if mirror is None else str(mirror),
        "files": files,
        "mirror_not_used_for": unused,
    }


def _report(source: Mapping[str, Any]) -> None:
    origins = sorted({record["origin"] for record in source["files"].values()})
    logger.info("Neurosynth v7 files in %s come from %s", source["folder"], "; ".join(origins))
    for name in source["mirror_not_used_for"]:
        why = (
            "it came from no mirror and was kept (delete it to take the mirror's)"
            if (Path(source["mirror"]) / name).is_file()
            else "the mirror lacks it"
        )
        logger.warning(
            "the data mirror %s was not used for %s (from %s): %s",
            source["mirror"],
            name,
            source["files"][name]["origin"],
            why,
        )


def verify_checksums(folder: Path, expected: dict[str, str] = NEUROSYNTH_V7_SHA256) -> dict[str, str]:
    """Check every expected file in ``folder``.

    Returns
    -------
    dict
        File name -> SHA-256, for the manifest.

    Raises
    ------
    ChecksumError
        Naming every missing, truncated or corrupt file with its expected and actual digest.
    """
    problems, digests = [], {}
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = sha256_file(path)
        digests[name] = actual
        if actual != digest:
            problems.append(
                f"{path}: SHA-256 {actual} != expected {digest} (truncated or corrupt; delete it and fetch again)"
            )
    if problems:
        raise ChecksumError("Neurosynth v7 files failed verification:\n  " + "\n  ".join(problems))
    return digests


def fetch_neurosynth_v7(raw_dir: Path, mirror: Path | None = None) -> NeurosynthFiles:
    """Fetch Neurosynth v7 (abstract LDA-50 topics) into ``raw_dir/neurosynth``, verify it and say where it came from.

    Writes ``source.json`` beside the files and logs where they came from, with a
    warning naming every file the named mirror was not used for.

    Parameters
    ----------
    raw_dir : Path
        ``data/raw``; NiMARE creates the ``neurosynth`` sub-folder.
    mirror : Path, optional
        Offline mirror whose files are linked in before NiMARE runs (:func:`link_mirror`).

    Raises
    ------
    ChecksumError
        Whatever the files' origin, naming each one that does not match its published digest.
    """
    from nimare.extract import fetch_neurosynth

    target_dir = raw_dir / "neurosynth"
    record = target_dir / SOURCE_FILE
    previous = read_json(record)["files"] if record.is_file() else {}
    placed = link_mirror(mirror, target_dir, previous) if mirror is not None else {}
    absent = {name for name in [*NEUROSYNTH_V7_SHA256, LICENSE_FILE] if not (target_dir / name).exists()}
    with warnings.catch_warnings():
        # NiMARE warns that Neurosynth is a frozen 2018 snapshot: that is exactly what we want.
        warnings.simplefilter("ignore", FutureWarning)
        found = fetch_neurosynth(
            data_dir=str(raw_dir),
            version="7",
            source="abstract",
            vocab="LDA50",
            overwrite=False,
            return_type="files",
        )
    downloaded = {name for name in absent if (target_dir / name).exists()}
    source = _sources(target_dir, mirror, placed, downloaded, previous)
    write_json(source, record)
    _report(source)
    checksums = verify_checksums(target_dir)
    database = found[0]
    topics = database["features"][0]
    files = {
        "coordinates": Path(database["coordinates"]),
        "metadata": Path(database["metadata"]),
        "features": Path(topics["features"]),
        "vocabulary": Path(topics["vocabulary"]),
        "keys": Path(topics["keys"]),
        "topics_metadata": Path(topics["metadata"]),
    }
    return NeurosynthFiles(paths=files, checksums=checksums, source=source)
