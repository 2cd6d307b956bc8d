"""The set-up files agree with each other and with the README."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_requirements_are_pinned_and_torch_is_the_cpu_wheel():
    requirements = _requirements()
    assert all("==" in line for line in requirements), [r for r in requirements if "==" not in r]
    assert "torch==2.13.0" in requirements


def test_environment_yml_describes_the_same_environment():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert set(pip_section) == _requirements()
    assert "python=3.11" in environment["dependencies"]


def test_readme_shows_the_two_commands_and_indexes_every_figure_notebook():
    readme = (ROOT / "README.md").read_text()
    assert "./run_all.sh\n" in readme and "./run_all.sh test" in readme
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        assert notebook.name in readme, f"{notebook.name} is missing from the README"


def test_every_notebook_is_paired_and_has_one_parameters_cell():
    import jupytext

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        notebook = jupytext.read(path)
        assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent", path.name
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: {len(tagged)} parameters cells"
        assert "profile" in tagged[0].source


def test_every_saved_figure_is_in_the_readme_figure_index():
    import re

    readme = (ROOT / "README.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        for name in re.findall(r'paths\.figures / f?"([^"]+\.png)"', path.read_text()):
            # f-string names are indexed with the placeholder spelled <name>: volumetric_traversal_<variant>.png
            indexed = re.sub(r"\{(\w+)\}", r"<\1>", name)
            assert indexed in readme, f"{indexed} (saved by {path.name}) is not in the README figure index"


def test_citation_and_zenodo_metadata_agree_with_the_package():
    import json
    import tomllib

    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    zenodo = json.loads((ROOT / ".zenodo.json").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["authors"] and citation["title"]
    assert str(citation["version"]) == zenodo["version"] == project["version"]
    assert citation["license"] == zenodo["license"] == project["license"]["text"]
    # Neurosynth must be credited wherever the compendium is cited.
    assert any(ref.get("doi") == "10.1038/nmeth.1635" for ref in citation["references"])
    assert any(ref["identifier"] == "10.1038/nmeth.1635" for ref in zenodo["related_identifiers"])


@pytest.mark.slow
def test_the_library_builds_a_wheel(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy: an in-place build would leave build/ and *.egg-info in the checkout.
    source = shutil.copytree(
        ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
        + ["--wheel-dir", str(wheels), str(source)],
        check=True,
    )
    assert not (ROOT / "lib" / "build").exists()
    wheel = next(wheels.glob("sematlas-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sematlas/__init__.py" in names and "sematlas/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)


def test_paired_notebooks_agree_with_their_py_source():
    """Every paired .ipynb holds the same cells as its py:percent twin (``jupytext --sync`` keeps them so)."""
    import jupytext

    for script in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        paired = script.with_suffix(".ipynb")
        if not paired.is_file():
            continue  # created by ./run_all.sh; nothing to disagree with yet
        expected = [(c.cell_type, c.source) for c in jupytext.read(script).cells]
        actual = [(c.cell_type, c.source) for c in jupytext.read(paired).cells]
        assert actual == expected, f"{paired.name} differs from {script.name}: run jupytext --sync"


def test_pre_commit_runs_ruff_the_sync_check_and_output_stripping():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "jupytext-sync", "strip-notebook-outputs"} <= hooks
