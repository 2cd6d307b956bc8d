"""Fetching through NiMARE from an offline mirror, where each file came from, and SHA-256 verification."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from sematlas.core.io import read_json
from sematlas.data.fetch import (
    LICENSE_FILE,
    NEUROSYNTH_V7_SHA256,
    SOURCE_FILE,
    ChecksumError,
    fetch_neurosynth_v7,
    link_mirror,
    verify_checksums,
)

NAMES = [*NEUROSYNTH_V7_SHA256, LICENSE_FILE]
KEYS = "data-neurosynth_version-7_vocab-LDA50_keys.tsv"


def _mirror_of(mirror: Path, folder: Path) -> Path:
    """Another mirror folder whose files are links to the verified mirror's (nothing is copied)."""
    folder.mkdir()
    for name in NAMES:
        (folder / name).symlink_to(mirror / name)
    return folder


def _fake_mirror(folder: Path, text: str) -> Path:
    """A mirror of small made-up files (for linking only: they fail verification)."""
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_text(f"{text} {name}")
    return folder


@pytest.mark.slow
def test_fetch_from_mirror_through_nimare_records_the_mirror(mirror: Path, tmp_path: Path):
    fetched = fetch_neurosynth_v7(tmp_path / "raw", mirror)
    folder = tmp_path / "raw" / "neurosynth"
    assert fetched.checksums == NEUROSYNTH_V7_SHA256
    assert fetched.paths["coordinates"].parent == folder
    assert fetched.paths["features"].name.endswith("LDA50_source-abstract_type-weight_features.npz")
    assert (folder / LICENSE_FILE).exists()
    assert fetched.source == read_json(folder / SOURCE_FILE)
    assert fetched.source["mirror"] == str(mirror) and fetched.source["mirror_not_used_for"] == []
    assert fetched.source["files"] == {name: {"origin": str(mirror), "via": "symlink"} for name in NAMES}


def test_a_second_mirror_replaces_the_first_ones_links(mirror: Path, tmp_path: Path, caplog):
    first, second = _mirror_of(mirror, tmp_path / "first"), _mirror_of(mirror, tmp_path / "second")
    fetch_neurosynth_v7(tmp_path / "raw", first)
    fetched = fetch_neurosynth_v7(tmp_path / "raw", second)
    folder = tmp_path / "raw" / "neurosynth"
    assert {name: os.readlink(folder / name) for name in NAMES} == {name: str(second / name) for name in NAMES}
    assert fetched.checksums == NEUROSYNTH_V7_SHA256
    source = read_json(folder / SOURCE_FILE)
    assert source["mirror"] == str(second) and source["mirror_not_used_for"] == []
    assert {record["origin"] for record in source["files"].values()} == {str(second)}
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    # No mirror named: the links stay, and the record says which folder they lead to.
    assert fetch_neurosynth_v7(tmp_path / "raw").source["files"][KEYS] == {"origin": str(second), "via": "symlink"}
    # A mirror that lacks a file leaves the earlier one's link, and says so.
    third = _mirror_of(mirror, tmp_path / "third")
    (third / KEYS).unlink()
    assert fetch_neurosynth_v7(tmp_path / "raw", third).source["mirror_not_used_for"] == [KEYS]
    assert os.readlink(folder / KEYS) == str(second / KEYS) and os.readlink(folder / LICENSE_FILE) == str(
        third / LICENSE_FILE
    )
    assert f"was not used for {KEYS} (from {second}): the mirror lacks it" in caplog.text


def test_a_file_from_no_mirror_is_kept_reported_and_still_verified(mirror: Path, tmp_path: Path, caplog):
    folder = tmp_path / "raw" / "neurosynth"
    folder.mkdir(parents=True)
    shutil.copyfile(mirror / KEYS, folder / KEYS)  # downloaded earlier, or put there by hand
    named = _mirror_of(mirror, tmp_path / "named")
    fetched = fetch_neurosynth_v7(tmp_path / "raw", named)
    assert not (folder / KEYS).is_symlink() and fetched.checksums == NEUROSYNTH_V7_SHA256
    assert fetched.source["files"][KEYS] == {"origin": str(folder), "via": "already there"}
    assert fetched.source["mirror_not_used_for"] == [KEYS]
    assert read_json(folder / SOURCE_FILE)["mirror_not_used_for"] == [KEYS]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"the data mirror {named} was not used for {KEYS} (from {folder}): "
        "it came from no mirror and was kept (delete it to take the mirror's)"
    ]
    # A kept file is verified like a linked one, though the mirror holds a good copy.
    (folder / KEYS).write_text("a truncated download")
    with pytest.raises(ChecksumError, match=rf"{KEYS}: SHA-256 [0-9a-f]{{64}} != expected"):
        fetch_neurosynth_v7(tmp_path / "raw", named)


def test_link_mirror_replaces_copies_an_earlier_mirror_left_and_keeps_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first, second = _fake_mirror(tmp_path / "first", "first"), _fake_mirror(tmp_path / "second", "second")
    target = tmp_path / "neurosynth"
    with monkeypatch.context() as patch:
        patch.setattr(Path, "symlink_to", lambda *_: (_ for _ in ()).throw(OSError("no links here")))
        assert link_mirror(first, target) == {name: "copy" for name in NAMES}
    assert (target / KEYS).read_text() == f"first {KEYS}" and not (target / KEYS).is_symlink()
    (target / LICENSE_FILE).write_text("a licence put here by hand")
    previous = {name: {"origin": str(first), "via": "copy"} for name in NEUROSYNTH_V7_SHA256}
    placed = link_mirror(second, target, previous)
    assert placed == {**{name: "symlink" for name in NEUROSYNTH_V7_SHA256}, LICENSE_FILE: "already there"}
    assert (target / KEYS).read_text() == f"second {KEYS}"
    assert (target / LICENSE_FILE).read_text() == "a licence put here by hand"
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # no partial file left behind


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
