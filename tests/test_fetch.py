"""Fetching through NiMARE from an offline mirror, and SHA-256 verification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sematlas.data.fetch import NEUROSYNTH_V7_SHA256, ChecksumError, fetch_neurosynth_v7, link_mirror, verify_checksums


@pytest.mark.slow
def test_fetch_from_mirror_through_nimare(mirror: Path, tmp_path: Path):
    files, checksums = fetch_neurosynth_v7(tmp_path / "raw", mirror)
    assert checksums == NEUROSYNTH_V7_SHA256
    assert files["coordinates"].parent == tmp_path / "raw" / "neurosynth"
    assert files["features"].name.endswith("LDA50_source-abstract_type-weight_features.npz")
    assert (tmp_path / "raw" / "neurosynth" / "LICENSE.txt").exists()


def _corrupt_mirror(mirror: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / "mirror"
    copy.mkdir()
    for file in mirror.iterdir():
        (copy / file.name).symlink_to(file)
    (copy / name).unlink()
    data = (mirror / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])  # a truncated download
    return copy


def test_truncated_file_fails_naming_it_and_nothing_is_fetched_further(mirror: Path, tmp_path: Path):
    name = "data-neurosynth_version-7_metadata.tsv.gz"
    bad = _corrupt_mirror(mirror, tmp_path, name)
    with pytest.raises(
        ChecksumError, match=rf"{name}: SHA-256 [0-9a-f]{{64}} != expected {NEUROSYNTH_V7_SHA256[name]}"
    ):
        fetch_neurosynth_v7(tmp_path / "raw", bad)
    assert not (tmp_path / "processed").exists()


def test_verify_reports_missing_files(tmp_path: Path):
    with pytest.raises(ChecksumError, match="coordinates.tsv.gz: missing"):
        verify_checksums(tmp_path)


def test_link_mirror_keeps_existing_files(mirror: Path, tmp_path: Path):
    target = tmp_path / "neurosynth"
    target.mkdir()
    existing = target / "data-neurosynth_version-7_vocab-LDA50_keys.tsv"
    existing.write_text("local copy")
    linked = link_mirror(mirror, target)
    assert existing.read_text() == "local copy"
    assert existing.name not in linked and len(linked) == len(NEUROSYNTH_V7_SHA256)  # 5 data files + licence
    shutil.rmtree(target)
