"""The set-up files agree with each other and with the README."""

from __future__ import annotations

from pathlib import Path

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
