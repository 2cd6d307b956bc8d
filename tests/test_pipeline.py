"""The stage registry, content-hash freshness, the runner (papermill, failures) and atomic writes."""

from __future__ import annotations

import ast
import dataclasses
import os
import time
from pathlib import Path

import pytest

from sematlas.core.io import atomic_path, write_json
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline import registry
from sematlas.pipeline import stages as pipeline
from sematlas.pipeline.freshness import inputs as stage_inputs
from sematlas.pipeline.freshness import library_files, plan, why_stale, write_stamp
from sematlas.pipeline.freshness import outputs as registry_outputs
from sematlas.pipeline.registry import STAGES, Stage, UnknownStage, find_stage, writer, writer_of
from sematlas.pipeline.summary import record_wall_time, stage_times

ROOT = Path(__file__).resolve().parents[1]

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
folder = Path("data", "results", profile, "{name}")
folder.mkdir(parents=True, exist_ok=True)
(folder / "out.txt").write_text(profile + "{extra}")
{fail}
"""


def _notebook(name: str, extra: str = "", fail: str = "") -> str:
    return NOTEBOOK.format(name=name, extra=extra, fail=fail)


def _edit(path: Path) -> None:
    """Change a file's content (its modification time says nothing to the runner)."""
    path.write_text(path.read_text() + "\n# edited\n")


def _touch_everything(root: Path) -> None:
    """New modification times, same content: what a copy or a fresh clone of a finished tree looks like."""
    future = time.time() + 1000
    for file in root.rglob("*"):
        os.utime(file, (future, future), follow_symlinks=False)


# ---- the runner on two trivial stages ------------------------------------------------------------


@pytest.fixture
def tiny(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with two trivial stages, the second reading the first; either can be edited to fail."""
    (project / "notebooks").mkdir()
    (project / "notebooks" / "01_first.py").write_text(_notebook("first"))
    (project / "notebooks" / "02_second.py").write_text(_notebook("second"))
    (project / "lib" / "sematlas" / "core").mkdir()
    (project / "lib" / "sematlas" / "core" / "module.py").write_text("x = 1\n")
    stages = (
        Stage("01", "first", library=("core",), writes=("results/first",)),
        Stage("02", "second", library=("core",), reads=("01",), writes=("results/second",)),
    )
    monkeypatch.setattr(registry, "STAGES", stages)
    return project


@pytest.mark.slow
def test_runs_then_skips_fresh_stages_then_reruns_what_changed(tiny: Path):
    timings = pipeline.run("ci", root=tiny)
    assert list(timings) == ["01_first", "02_second"]
    paths = ProfilePaths.for_profile("ci", tiny)
    assert {stem: entry["wall_seconds"] for stem, entry in stage_times(paths).items()} == {
        stem: round(seconds, 1) for stem, seconds in timings.items()
    }
    # papermill injected the profile and ran in the root
    assert (tiny / "data" / "results" / "ci" / "first" / "out.txt").read_text() == "ci"
    executed = ProfilePaths.for_profile("ci", tiny).executed
    assert (executed / "01_first.ipynb").is_file() and (executed / ".02_second.done").is_file()
    assert pipeline.run("ci", root=tiny) == {}
    _edit(tiny / "params" / "ci.yaml")
    assert list(pipeline.run("ci", root=tiny)) == ["01_first", "02_second"]
    _edit(tiny / "notebooks" / "02_second.py")
    assert list(pipeline.run("ci", root=tiny)) == ["02_second"]
    second = stage_times(paths)["02_second"]
    assert list(pipeline.run("ci", root=tiny, only="1", force=True)) == ["01_first"]
    assert stage_times(paths)["02_second"] == second  # a run of one stage keeps the others' times
    # The forced rerun of 01 wrote the same bytes: 02's input did not change.
    assert pipeline.run("ci", root=tiny, start="second") == {}
    (tiny / "notebooks" / "01_first.py").write_text(_notebook("first", extra=" again"))
    assert list(pipeline.run("ci", root=tiny)) == ["01_first", "02_second"]
    _touch_everything(tiny)
    assert pipeline.run("ci", root=tiny) == {}


@pytest.mark.slow
def test_failure_names_stage_and_executed_notebook_and_leaves_no_stamp(tiny: Path):
    (tiny / "notebooks" / "02_second.py").write_text(_notebook("second", fail="raise RuntimeError('boom')"))
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


def test_unknown_stage_is_an_exception_and_an_exit_code_only_on_the_command_line(capsys):
    with pytest.raises(UnknownStage, match="unknown stage 'training'; stages: 01_curation, 02_train_volumetric"):
        find_stage("training")
    assert issubclass(UnknownStage, ValueError)
    assert pipeline.main(["run", "ci", "--only", "training"]) == 2
    assert "[sematlas] ERROR: unknown stage 'training'" in capsys.readouterr().err


# ---- freshness of the real registry on a stand-in project ----------------------------------------


def _sample_output(declaration: str) -> str:
    """A file inside what ``declaration`` names (wildcards filled in)."""
    return declaration.replace("*", "x") + ("" if "." in declaration.rsplit("/", 1)[-1] else "/file.json")


@pytest.fixture
def finished(project: Path, monkeypatch: pytest.MonkeyPatch) -> ProfilePaths:
    """A stand-in project with every stage of the registry run once: notebooks, library code, outputs, stamps."""
    monkeypatch.delenv("SEMATLAS_DATA_MIRROR", raising=False)
    package = project / "lib" / "sematlas"
    (package / "__init__.py").write_text('"""sematlas."""\n')
    for unit in {unit for stage in STAGES for unit in stage.library} | {"widgets"}:
        module = package.joinpath(*unit.split("."))
        if "." in unit:
            module.parent.mkdir(parents=True, exist_ok=True)
            module.with_suffix(".py").write_text(f"# {unit}\n")
        else:
            module.mkdir(parents=True, exist_ok=True)
            (module / "module.py").write_text(f"# {unit}\n")
    paths = ProfilePaths.for_profile("ci", project)
    folders = registry.output_folders(paths)
    paths.executed.mkdir(parents=True)
    for stage in STAGES:
        stage.notebook(project).parent.mkdir(exist_ok=True)
        stage.notebook(project).write_text(f"# {stage.stem}\n")
        stage.executed(paths).write_text("{}")
        for declaration in stage.writes:
            kind, _, rest = _sample_output(declaration).partition("/")
            output = folders[kind] / rest
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(f"written by {stage.stem}\n")
        write_stamp(stage, paths, stage_inputs(stage, paths))
    return paths


def test_a_finished_tree_is_fresh_and_a_widget_edit_leaves_it_so(finished: ProfilePaths):
    assert plan(finished, STAGES) == {}
    _edit(finished.root / "lib" / "sematlas" / "widgets" / "module.py")
    assert plan(finished, STAGES) == {}


def test_editing_data_makes_curation_and_everything_downstream_stale(finished: ProfilePaths):
    _edit(finished.root / "lib" / "sematlas" / "data" / "module.py")
    reruns = plan(finished, STAGES)
    assert list(reruns) == [stage.stem for stage in STAGES]
    assert reruns["01_curation"] == "lib/sematlas/data/module.py changed"


def test_new_modification_times_with_the_same_content_leave_everything_fresh(finished: ProfilePaths):
    _touch_everything(finished.root)
    assert plan(finished, STAGES) == {}


def test_recorded_wall_times_leave_every_stage_fresh_and_belong_to_no_stage(finished: ProfilePaths):
    for seconds, stage in enumerate(STAGES):
        record_wall_time(finished, stage.stem, 10.0 + seconds)
    assert plan(finished, STAGES) == {}
    record_wall_time(finished, "02_train_volumetric", 1234.5)  # a longer record, another size
    assert plan(finished, STAGES) == {}
    assert len(stage_times(finished)) == len(STAGES)
    assert not any("stage_times" in name for stage in STAGES for name in registry_outputs(stage, finished))


def test_a_stage_whose_upstream_reran_with_different_outputs_is_stale(finished: ProfilePaths):
    cca = find_stage("cca")
    write_stamp(cca, finished, stage_inputs(cca, finished))  # a rerun that wrote the same bytes
    assert plan(finished, STAGES) == {}
    (finished.results / "cca" / "file.json").write_text("another result\n")
    write_stamp(cca, finished, stage_inputs(cca, finished))
    assert plan(finished, STAGES) == {"10_release": "stage 06_cca changed", "11_figures": "stage 06_cca changed"}


def test_a_missing_output_or_stamp_makes_the_stage_and_its_readers_stale(finished: ProfilePaths):
    (finished.results / "clustering" / "file.json").unlink()
    assert plan(finished, STAGES) == {
        "07_clustering": "its output data/results/ci/clustering/file.json is missing or was rewritten",
        "08_forecasting": "it reads 07_clustering, which reruns",
        "10_release": "it reads 07_clustering, which reruns",
        "11_figures": "it reads 07_clustering, which reruns",
    }
    find_stage("release").stamp(finished).write_text("")  # an empty stamp, as the mtime runner left them
    assert why_stale(find_stage("release"), finished) == "no record of a finished run"


def test_the_data_mirror_and_the_ablation_files_are_inputs_of_the_stages_that_read_them(
    finished: ProfilePaths, monkeypatch: pytest.MonkeyPatch
):
    _edit(next((finished.root / "params" / "ablations").glob("*.yaml")))
    assert list(plan(finished, STAGES)) == ["09_evaluation", "10_release", "11_figures"]
    monkeypatch.setenv("SEMATLAS_DATA_MIRROR", "/elsewhere")
    assert plan(finished, STAGES)["01_curation"] == "$SEMATLAS_DATA_MIRROR changed"


def test_a_declared_library_unit_that_does_not_exist_is_named(finished: ProfilePaths):
    stage = dataclasses.replace(find_stage("01"), library=("core", "curation"))
    with pytest.raises(FileNotFoundError, match="stage 01_curation declares library code 'curation'"):
        library_files(stage, finished.root)


# ---- the table itself ----------------------------------------------------------------------------


def test_stages_read_only_earlier_stages_and_write_what_they_declare():
    assert [stage.number for stage in STAGES] == [f"{n:02d}" for n in range(1, 12)]
    for stage in STAGES:
        assert all(find_stage(number).number < stage.number for number in stage.reads), stage.stem
        assert stage.notebook(ROOT).is_file(), stage.stem
        for declaration in stage.writes:
            assert writer(_sample_output(declaration)) == stage, declaration


@pytest.mark.parametrize(
    ("output", "number"),
    [
        ("raw/neurosynth/source.json", "01"),
        ("processed/manifest.json", "01"),
        ("processed/pointcloud.h5", "03"),
        ("results/cbvae/test_results.json", "02"),
        ("models/some_new_variant/checkpoints/best.ckpt", "02"),
        ("models/ensemble/snapshot/snapshots/snapshot_01.ckpt", "04"),
        ("results/hierarchical/results.json", "05"),
        ("results/clustering", "07"),
        ("models/ablations/concat_conditioning/train.log", "09"),
        ("figures/cca_correlations.png", "06"),
        ("figures/manuscript/fig1_data.png", "11"),
        ("release/README.md", "10"),
    ],
)
def test_writer_names_the_stage_that_writes_a_path(output: str, number: str):
    assert writer(output).number == number


def test_writer_of_takes_paths_inside_a_profile_and_refuses_others(tmp_path: Path):
    paths = ProfilePaths("ci", tmp_path)
    assert writer_of(paths.results / "cca" / "results.json", paths).name == "cca"
    assert writer_of(paths.raw / "neurosynth", paths).name == "curation"
    with pytest.raises(UnknownStage, match="no stage writes 'figures/notes.txt'"):
        writer("figures/notes.txt")
    with pytest.raises(UnknownStage, match="in none of the output folders of profile 'ci'"):
        writer_of(tmp_path / "elsewhere.json", paths)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The sematlas modules a file imports at run time (``TYPE_CHECKING`` blocks left out), with their packages."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    named = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sematlas"):
            named |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names if alias.name.startswith("sematlas")}
    # Importing a.b.c runs a and a.b first.
    return {prefix for name in named for prefix in _prefixes(name) if prefix in modules}


def _library_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the library (a package by its ``__init__.py``)."""
    return {
        ".".join(p.relative_to(ROOT / "lib").with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "lib" / "sematlas").rglob("*.py")
    }


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_each_stage_declares_exactly_the_library_code_its_notebook_runs():
    """Declared library = the files the notebook's imports reach, so freshness neither misses nor overreaches."""
    package = ROOT / "lib" / "sematlas"
    modules = _library_modules()
    problems = []
    for stage in STAGES:
        reached, todo = set(), list(_imports(stage.notebook(ROOT), modules))
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo += _imports(modules[module], modules)
        files = {modules[module] for module in reached}
        declared = set(library_files(stage, ROOT))
        undeclared = sorted(str(f.relative_to(package)) for f in files - declared)
        if undeclared:
            problems.append(f"stage {stage.stem} runs {undeclared} but does not declare them")
        for unit in stage.library:
            own = set(library_files(dataclasses.replace(stage, library=(unit,)), ROOT)) - set(package.glob("*.py"))
            if not own & files:
                problems.append(f"stage {stage.stem} declares '{unit}', which its notebook's imports never reach")
    assert not problems, "\n".join(problems)


def test_the_registry_imports_only_core_so_reporting_and_widgets_can_ask_it():
    imported = _imports(ROOT / "lib" / "sematlas" / "pipeline" / "registry.py", _library_modules())
    assert imported == {"sematlas", "sematlas.core", "sematlas.core.paths"}


# ---- atomic writes ---------------------------------------------------------------------------------


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
    write_json({"a": 1}, tmp_path / "a.json")
    (tmp_path / "plain.json").write_text("{}")
    assert os.stat(tmp_path / "a.json").st_mode == os.stat(tmp_path / "plain.json").st_mode
