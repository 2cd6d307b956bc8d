"""The stage runner: freshness, failure messages, atomic writes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sematlas.core.io import atomic_path, write_json
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline import stages as pipeline

NOTEBOOK = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "quick"

# %%
from pathlib import Path
Path("out_" + profile + ".txt").write_text(profile)
{fail}
"""


@pytest.fixture
def tiny(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with two trivial stages; the second can be made to fail."""
    (project / "notebooks").mkdir()
    (project / "notebooks" / "01_first.py").write_text(NOTEBOOK.format(fail=""))
    (project / "notebooks" / "02_second.py").write_text(NOTEBOOK.format(fail=""))
    (project / "lib" / "sematlas" / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(pipeline, "STAGES", (pipeline.Stage("01", "first"), pipeline.Stage("02", "second")))
    return project


def _edit(path: Path) -> None:
    """Make ``path`` newer than everything else in its project (mtime resolution is coarse)."""
    root = path
    while not (root / "params").is_dir():
        root = root.parent
    past = time.time() - 100
    for file in root.rglob("*"):
        os.utime(file, (past, past))
    os.utime(path, None)


@pytest.mark.slow
def test_runs_then_skips_fresh_stages_then_reruns_stale_ones(tiny: Path):
    timings = pipeline.run("ci", root=tiny)
    assert list(timings) == ["01_first", "02_second"]
    assert (tiny / "out_ci.txt").read_text() == "ci"  # papermill injected the profile and ran in the root
    executed = ProfilePaths.for_profile("ci", tiny).executed
    assert (executed / "01_first.ipynb").is_file() and (executed / ".02_second.done").is_file()
    assert pipeline.run("ci", root=tiny) == {}
    _edit(tiny / "params" / "ci.yaml")
    assert list(pipeline.run("ci", root=tiny)) == ["01_first", "02_second"]
    _edit(tiny / "notebooks" / "02_second.py")
    assert list(pipeline.run("ci", root=tiny)) == ["02_second"]
    assert list(pipeline.run("ci", root=tiny, only="1", force=True)) == ["01_first"]
    # The forced rerun of 01 is newer than 02's stamp: 02 is stale now.
    assert list(pipeline.run("ci", root=tiny, start="second")) == ["02_second"]


@pytest.mark.slow
def test_failure_names_stage_and_executed_notebook_and_leaves_no_stamp(tiny: Path):
    (tiny / "notebooks" / "02_second.py").write_text(NOTEBOOK.format(fail="raise RuntimeError('boom')"))
    with pytest.raises(
        pipeline.StageFailed, match=r"stage 02_second failed on profile 'ci' \(RuntimeError: boom\)"
    ) as error:
        pipeline.run("ci", root=tiny)
    executed = ProfilePaths.for_profile("ci", tiny).executed
    assert str(executed / "02_second.ipynb") in str(error.value)
    assert (executed / "02_second.ipynb").is_file() and not (executed / ".02_second.done").exists()
    assert (executed / ".01_first.done").exists()


def test_bad_parameters_stop_before_any_stage(tiny: Path):
    (tiny / "params" / "ci.yaml").write_text("curation:\n  min_peak: 2\n")
    with pytest.raises(ValueError, match="unknown parameter 'curation.min_peak'"):
        pipeline.run("ci", root=tiny)
    assert not (tiny / "notebooks" / "executed").exists()


def test_unknown_stage_is_reported():
    with pytest.raises(SystemExit, match="unknown stage 'training'"):
        pipeline.find_stage("training")


def test_atomic_write_leaves_target_untouched_on_failure(tmp_path: Path):
    target = write_json({"complete": True}, tmp_path / "result.json")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"complete": fal')
        raise RuntimeError("killed mid-write")
    assert target.read_text().strip().endswith("}") and '"complete": true' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_json_writes_numpy_and_torch_values(tmp_path: Path):
    import numpy as np
    import torch

    from sematlas.core.io import read_json

    payload = {
        "array": np.arange(3),
        "scalar": np.float32(0.5),
        "tensor": torch.tensor([[1.0, 2.0]]),
        "zero_d": torch.tensor(3),
        "path": tmp_path,
    }
    assert read_json(write_json(payload, tmp_path / "values.json")) == {
        "array": [0, 1, 2],
        "scalar": 0.5,
        "tensor": [[1.0, 2.0]],
        "zero_d": 3,
        "path": str(tmp_path),
    }


def test_atomic_write_gives_the_file_the_usual_mode(tmp_path: Path):
    import os

    write_json({"a": 1}, tmp_path / "a.json")
    (tmp_path / "plain.json").write_text("{}")
    assert os.stat(tmp_path / "a.json").st_mode == os.stat(tmp_path / "plain.json").st_mode
