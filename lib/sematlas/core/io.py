"""Atomic writes and checksums.

Every file a stage writes goes through :func:`atomic_path`: it is written to a
temporary name in the same folder and renamed into place only when complete, so
a killed run never leaves a half-written file that a later stage would trust.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import nibabel as nib


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: The mode a plain ``open()`` gives a new file: mkstemp's temporary files are private (0600).
_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``target`` atomically on success.

    On an exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, target: str | os.PathLike[str]) -> Path:
    """Write a DataFrame to Parquet atomically (pyarrow, index kept only if named)."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=frame.index.name is not None)
    return Path(target)


def write_json(payload: Any, target: str | os.PathLike[str]) -> Path:
    """Write JSON atomically, pretty-printed with sorted keys for readable diffs."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(target)


def write_nifti(image: nib.Nifti1Image, target: str | os.PathLike[str]) -> Path:
    """Write a NIfTI image as ``.nii.gz`` atomically, gzip header without a date (same image, same bytes)."""
    with atomic_path(target) as tmp:
        # nibabel picks the format from the file name, and the temporary name has none.
        tmp.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
    return Path(target)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    # numpy/torch arrays and scalars: tolist() gives nested lists, or a plain number for a 0-d value.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    # Typed parameter sections and results objects know their plain form.
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions(
    names: tuple[str, ...] = (
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "torch",
        "lightning",
        "nimare",
        "nilearn",
        "nibabel",
        "numba",
        "scikit-learn",
        "papermill",
        "jupytext",
    ),
) -> dict[str, str]:
    """Installed versions of the packages that shape the results."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
