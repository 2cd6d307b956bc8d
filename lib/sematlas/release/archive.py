"""The release folder as a whole (stage 10): its files, ``SHA256SUMS``, ``README.md`` and a reproducible archive.

``SHA256SUMS`` is in ``sha256sum -c`` format; the ``.tar.gz`` beside the folder has
sorted members and no times or owners, so the same files give the same bytes,
ready to upload to Zenodo or NeuroVault (the upload needs the network and is
documented, not automated).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

from sematlas.core.io import atomic_path, sha256_file


def copy_tree_files(source: str | os.PathLike[str], target: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Copy the files of ``source`` matching ``pattern`` (e.g. ``*.nii.gz``) to ``target``, keeping sub-folders."""
    source, target = Path(source), Path(target)
    copied = []
    for path in sorted(source.rglob(pattern)):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copy2(path, destination)))
    return copied


def release_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``folder`` except ``SHA256SUMS``, as sorted relative paths."""
    folder = Path(folder)
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS")


def write_checksums(folder: str | os.PathLike[str]) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum -c`` format) over every file of the folder.

    Returns
    -------
    Path
    """
    folder = Path(folder)
    lines = [f"{sha256_file(folder / rel)}  {rel.as_posix()}\n" for rel in release_files(folder)]
    target = folder / "SHA256SUMS"
    with atomic_path(target) as tmp:
        tmp.write_text("".join(lines))
    return target


def verify_checksums(folder: str | os.PathLike[str]) -> list[str]:
    """Files of ``SHA256SUMS`` that are missing or whose content changed (empty when all match)."""
    folder = Path(folder)
    bad = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(rel)
    return bad


def write_release_readme(folder: str | os.PathLike[str], descriptions: Mapping[str, str], header: str) -> Path:
    """Write ``README.md``: the header, then every file with its size and what it is.

    Parameters
    ----------
    folder : path
    descriptions : mapping
        Path prefix (a file or a folder, relative, POSIX) -> description; a file takes
        the description of its longest matching prefix.
    header : str
        Markdown above the file table (provenance, how to cite, how to verify).

    Raises
    ------
    KeyError
        A file that no description covers, by name.
    """
    folder = Path(folder)
    rows = []
    for rel in release_files(folder):
        if rel.name == "README.md" and rel.parent == Path("."):
            continue
        posix = rel.as_posix()
        matches = [p for p in descriptions if posix == p or posix.startswith(p.rstrip("/") + "/")]
        if not matches:
            raise KeyError(f"release file {posix!r} has no description")
        size = (folder / rel).stat().st_size
        rows.append(f"| `{posix}` | {size:,} | {descriptions[max(matches, key=len)]} |")
    text = header.rstrip() + "\n\n| file | bytes | what it is |\n|---|---:|---|\n" + "\n".join(rows) + "\n"
    target = folder / "README.md"
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def archive(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """A reproducible ``.tar.gz`` of the folder: sorted members, fixed times and owners.

    The same release files give the same archive bytes, so its SHA-256 identifies the release.

    Returns
    -------
    Path
    """
    folder, target = Path(folder), Path(target)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel in [*release_files(folder), Path("SHA256SUMS")]:
            info = tar.gettarinfo(str(folder / rel), arcname=f"{folder.name}/{rel.as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(folder / rel, "rb") as handle:
                tar.addfile(info, handle)
    # No file name and no time in the gzip header either: only the content shapes the bytes.
    with atomic_path(target) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            compressed.write(buffer.getvalue())
    return target
