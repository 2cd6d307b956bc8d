"""The ``sematlas`` command line (``generate``, ``studies``), run as the user runs it: in a subprocess.

The atlas is a tiny untrained cbvae (``tiny_models.tiny_atlas``) whose encoder knows
three topics' key words, saved as stage 02 saves its main model in a scratch project;
the studies are the NiMARE sample curated by stage 01 (``processed``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_atlas

from sematlas.cli.studies import parse_years
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.training.ensemble import main_checkpoint

ROOT = Path(__file__).resolve().parents[1]
#: Key words of the tiny atlas's three topics (its categories lean on topics 0, 1, 2 in turn).
TOPIC_KEYS = [["emotional", "amygdala", "fear"], ["pain", "painful", "noxious"], ["memory", "working", "load"]]


def _command() -> list[str]:
    """The installed console script (``[project.scripts]`` of lib/pyproject.toml), beside this Python."""
    script = Path(sys.executable).with_name("sematlas")
    if not script.is_file():
        pytest.fail(f"the sematlas console script is not installed beside {sys.executable}: pip install -e lib")
    return [str(script)]


def sematlas(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sematlas ARGS`` with ``root`` as the project root."""
    env = {**os.environ, "SEMATLAS_ROOT": str(root)}
    return subprocess.run([*_command(), *args], capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def project(processed, tmp_path_factory) -> Path:
    """A scratch project: the real parameters, the ``ci`` studies table and a ``ci`` main-model checkpoint."""
    root = tmp_path_factory.mktemp("cli_project")
    shutil.copytree(ROOT / "params", root / "params")
    (root / "lib" / "sematlas").mkdir(parents=True)
    paths = ProfilePaths("ci", root)
    paths.processed.mkdir(parents=True)
    shutil.copy(processed / "studies.parquet", paths.processed / "studies.parquet")
    atlas = tiny_atlas("cbvae", seed=0)
    atlas.encoder.topic_keys = TOPIC_KEYS
    checkpoint = main_checkpoint(paths)
    checkpoint.parent.mkdir(parents=True)
    payload = {**atlas.payload, "profile": "ci", "metadata_encoder": atlas.encoder.to_dict()}
    state = {
        "sematlas": payload,
        "hyper_parameters": atlas.hparams,
        "state_dict": {f"model.{name}": tensor for name, tensor in atlas.network.state_dict().items()},
    }
    torch.save(state, checkpoint)
    return root


@pytest.fixture(scope="module")
def atlas(project) -> AtlasModel:
    return AtlasModel.load(main_checkpoint(ProfilePaths("ci", project)))


def test_generate_writes_the_atlas_map_of_the_request_and_its_spread(project, atlas, tmp_path):
    out, sd = tmp_path / "wm.nii.gz", tmp_path / "wm_sd.nii.gz"
    args = ["working", "memory", "--year", "2005", "--sample-size", "24", "--peaks", "12"]
    result = sematlas(project, "generate", *args, "--profile", "ci", "-o", str(out), "--sd", str(sd), "--samples", "3")
    assert result.returncode == 0, result.stderr
    request = {"text": "working memory", "year": 2005, "sample_size": 24, "n_peaks": 12}
    expected = atlas.to_nifti(atlas.generate(request, n_samples=3, seed=0)[0])  # the mean of the same 3 samples
    image = nib.load(out)
    np.testing.assert_allclose(np.asarray(image.dataobj), np.asarray(expected.dataobj), rtol=1e-6, atol=1e-7)
    assert int(image.header["sform_code"]) == 4 and int(image.header["qform_code"]) == 4
    np.testing.assert_allclose(image.affine, atlas.grid.affine)
    spread = np.asarray(nib.load(sd).dataobj)
    expected_sd = atlas.to_nifti(atlas.generate_spread(request, 3, seed=0)[1][0])
    np.testing.assert_allclose(spread, np.asarray(expected_sd.dataobj), rtol=1e-5, atol=1e-6)
    assert spread.shape == atlas.grid.shape and (spread >= 0).all() and spread.max() > 0
    # The printout: the checkpoint, both files and the topic the text raised, with its key words.
    lines = result.stdout.splitlines()
    assert str(main_checkpoint(ProfilePaths("ci", project))) in lines[0]
    assert str(out) in result.stdout and str(sd) in result.stdout
    assert "nearest task category: working_memory" in result.stdout
    topic_lines = lines[lines.index(next(line for line in lines if line.startswith("topic profile"))) + 1 :]
    assert topic_lines[0].split()[0] == "topic_02" and topic_lines[0].endswith("memory working load")
    assert all(not line.split()[0] == "topic_00" for line in topic_lines)  # not raised by the text


def test_generate_by_task_and_topics_match_their_requests(project, atlas, tmp_path):
    for option, value, request in (
        ("--task", "pain", {"task": "pain"}),
        ("--topics", "0=1,topic_01=0.5", {"topics": {0: 1.0, "topic_01": 0.5}}),
    ):
        out = tmp_path / f"{option.strip('-')}.nii.gz"
        result = sematlas(project, "generate", option, value, "--profile", "ci", "-o", str(out))
        assert result.returncode == 0, result.stderr
        expected = atlas.to_nifti(atlas.generate(request)[0])
        np.testing.assert_allclose(np.asarray(nib.load(out).dataobj), np.asarray(expected.dataobj), atol=1e-7)
        assert "--sd" not in result.stdout and "sd map" not in result.stdout


def test_studies_prints_exactly_the_rows_of_a_category_and_years(project, processed, tmp_path):
    table = pd.read_parquet(processed / "studies.parquet")
    task = "pain"
    # The sample's studies are of 1997 and 1998: the range A:B of the last year alone.
    first = last = int(table["year"].max())
    expected = table[(table["task_category"] == task) & table["year"].between(first, last)]
    assert 0 < len(expected) < (table["task_category"] == task).sum()  # the years filter something out
    csv = tmp_path / "pain.csv"
    result = sematlas(
        project,
        "studies",
        "--profile",
        "ci",
        "--task",
        task,
        "--year",
        f"{first}:{last}",
        "--limit",
        "0",
        "--csv",
        str(csv),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{len(expected)} of {len(table)} studies (task {task}, years {first}-{last})")
    header, rows = lines[1], lines[2 : 2 + len(expected)]
    assert header.split()[:3] == ["id", "year", "task_category"]
    assert sorted(row.split()[0] for row in rows) == sorted(expected["id"].astype(str))
    assert all(row.split()[2] == task and first <= int(row.split()[1]) <= last for row in rows)
    written = pd.read_csv(csv, dtype={"id": str})
    assert sorted(written["id"]) == sorted(expected["id"].astype(str))
    assert written["year"].is_monotonic_increasing


def test_studies_limit_shows_the_first_rows_and_says_so(project, processed):
    table = pd.read_parquet(processed / "studies.parquet")
    result = sematlas(project, "studies", "--profile", "ci", "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{len(table)} of {len(table)} studies; showing the first 3 (--limit 0 for all)"
    assert len(lines) == 2 + 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["working", "--task", "pain"], "give exactly one of QUERY words, --task or --topics; got QUERY and --task"),
        ([], "give exactly one of QUERY words, --task or --topics; got none"),
        (["wrking"], "unknown word 'wrking' (not a key word of any topic); closest key words: working"),
        (["--task", "pian"], "unknown task category 'pian'; allowed: emotion, pain, working_memory, other"),
        (["--topics", "0:1"], "--topics '0:1': '0:1' is not TOPIC=WEIGHT"),
        (["--topics", "0=lots"], "--topics '0=lots': the weight of '0' is not a number"),
        (["--topics", "7=1"], "topic index 7 is outside 0..2"),
        (["pain", "--year", "1990"], "year 1990 is outside the years the atlas was trained on"),
        (["pain", "--samples", "1"], "--samples must be 0 (the prior mean) or 2 or more, got 1"),
        (["pain", "--profile", "nope"], "unknown profile 'nope'; choose one of ci, quick, cpu-full, gpu"),
        (["pain", "--profile", "gpu"], "train it with ./run_all.sh gpu --only 02 (or python -m sematlas.pipeline"),
        (["pain", "--checkpoint", "absent.ckpt"], "--checkpoint absent.ckpt: no such file"),
        (["pain", "--checkpoint", "params/common.yaml"], "is not a readable sematlas checkpoint"),
    ],
)
def test_generate_bad_inputs_exit_2_with_one_line_and_write_nothing(project, tmp_path, args, message):
    out = tmp_path / "map.nii.gz"
    args = [str(project / a) if a == "params/common.yaml" else a for a in args]
    profile = [] if "--profile" in args else ["--profile", "ci"]
    result = sematlas(project, "generate", *args, *profile, "-o", str(out), "--sd", str(tmp_path / "sd.nii.gz"))
    assert result.returncode == 2
    assert result.stderr.startswith("sematlas: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_a_missing_output_folder(project, tmp_path):
    out = tmp_path / "absent" / "map.nii.gz"
    result = sematlas(project, "generate", "pain", "--profile", "ci", "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == f"sematlas: error: -o {out}: the folder {out.parent} does not exist (create it first)\n"
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--year", "2015:2010"], "--year '2015:2010': the first year 2015 is after the last 2010"),
        (["--year", "10-15"], "--year '10-15': give a year or an inclusive range FIRST:LAST"),
        (["--task", "pian"], "unknown task category 'pian' (did you mean 'pain'?); known: emotion, other, pain"),
        (["--profile", "gpu"], "stage 01 writes it: ./run_all.sh gpu --only 01"),
        (["--csv", "absent/rows.csv"], "does not exist (create it first)"),
    ],
)
def test_studies_bad_inputs_exit_2_with_one_line(project, tmp_path, args, message):
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    profile = [] if "--profile" in args else ["--profile", "ci"]
    result = sematlas(project, "studies", *args, *profile)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("sematlas: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_help_names_the_commands_and_shows_examples(project):
    top = sematlas(project, "--help")
    assert top.returncode == 0 and "generate" in top.stdout and "studies" in top.stdout
    for command in ("generate", "studies"):
        result = sematlas(project, command, "--help")
        assert result.returncode == 0 and f"usage: sematlas {command}" in result.stdout
        assert f"example:\n  sematlas {command} " in result.stdout


@pytest.mark.parametrize(
    ("text", "years"),
    [
        (None, (None, None)),
        ("2010:2015", (2010, 2015)),
        ("2012", (2012, 2012)),
        ("2010:", (2010, None)),
        (":2005", (None, 2005)),
    ],
)
def test_parse_years_reads_inclusive_ranges(text, years):
    assert parse_years(text) == years
