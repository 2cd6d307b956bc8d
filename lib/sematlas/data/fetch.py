"""Neurosynth v7 through NiMARE, from the network or from an offline mirror.

NiMARE's :func:`nimare.extract.fetch_neurosynth` skips any file already present
in ``<data_dir>/neurosynth/``, so an offline mirror is used by linking its files
in first: the same NiMARE code path then runs with or without a network.
Every file is verified against the published v7 SHA-256 digests held here, not
against a checksum file that travels with the mirror (a corrupt mirror could
carry a matching corrupt list).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from sematlas.core.io import sha256_file

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


class ChecksumError(RuntimeError):
    """A fetched or mirrored file does not match its published SHA-256."""


def resolve_mirror(param_mirror: str | None) -> Path | None:
    """The offline mirror folder: ``SEMATLAS_DATA_MIRROR`` if set, else the parameter, else none."""
    chosen = os.environ.get("SEMATLAS_DATA_MIRROR") or param_mirror
    if not chosen:
        return None
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data mirror folder does not exist: {path}")
    return path


def link_mirror(mirror: Path, target_dir: Path) -> list[str]:
    """Link (or copy, where links are impossible) the mirror's v7 files into ``target_dir``.

    Files already in ``target_dir`` are left alone, as NiMARE would. Returns the
    names linked.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in [*NEUROSYNTH_V7_SHA256, LICENSE_FILE]:
        source, target = mirror / name, target_dir / name
        if not source.is_file() or target.exists():
            continue
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copyfile(source, target)
        linked.append(name)
    return linked


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


def fetch_neurosynth_v7(raw_dir: Path, mirror: Path | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetch Neurosynth v7 (abstract LDA-50 topics) into ``raw_dir/neurosynth`` and verify it.

    Parameters
    ----------
    raw_dir : Path
        ``data/raw``; NiMARE creates the ``neurosynth`` sub-folder.
    mirror : Path, optional
        Offline mirror whose files are linked in before NiMARE runs.

    Returns
    -------
    files : dict
        ``coordinates``, ``metadata``, ``features``, ``vocabulary``, ``keys`` and
        ``topics_metadata`` paths.
    checksums : dict
        File name -> verified SHA-256.
    """
    from nimare.extract import fetch_neurosynth

    target_dir = raw_dir / "neurosynth"
    if mirror is not None:
        link_mirror(mirror, target_dir)
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
    return files, checksums
