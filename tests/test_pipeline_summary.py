"""The summary ``./run_all.sh`` ends with: headline results with their files, and the recorded stage wall times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from results_examples import conditional_atlas, evaluation, map_metrics, paired, pointcloud, volumetric

import sematlas.core.io
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline import stages as pipeline
from sematlas.pipeline.registry import STAGES
from sematlas.pipeline.summary import record_wall_time, stage_times, stage_times_path, summary


@pytest.fixture
def results(project: Path) -> ProfilePaths:
    """A profile whose stages 02 (baseline and cbvae only), 03 and 09 wrote results: no tcvae_sbd, no hvae."""
    paths = ProfilePaths.for_profile("ci", project)
    cbvae = volumetric(
        "cbvae",
        n_studies=24,
        reconstruction={
            "model": map_metrics(0.465),
            "pca": map_metrics(0.402),
            "mean_map": map_metrics(0.118),
            "model_beats_pca_fraction": 0.75,
            "vs_pca": paired(0.063, n=24),
            "vs_mean_map": paired(0.347, n=24),
        },
    )
    for result in (volumetric("baseline", n_studies=24), cbvae, pointcloud(), evaluation()):
        result.save(result.location(paths))
    return paths


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def _section(text: str, title: str) -> str:
    return next(block for block in text.split("\n\n") if block.startswith(title))


def test_the_summary_gives_each_model_against_its_baselines_with_its_file(results: ProfilePaths):
    text = summary("ci", results.root)
    reconstruction = _section(text, "reconstruction of 24 held-out maps")
    assert _line(reconstruction, "cbvae").split() == [
        "cbvae", "0.465", "0.402", "+0.063", "[+0.043,", "+0.083]", "0.118", "75%",
        "data/results/ci/cbvae/test_results.json"
    ]  # fmt: skip
    assert _line(reconstruction, "baseline").split()[1:8] == [
        "0.410", "0.520", "-0.110", "[-0.130,", "-0.090]", "0.120", "25%"
    ]  # fmt: skip
    generation = _section(text, "maps from metadata alone")
    assert _line(generation, "variant").split() == [
        "variant", "model", "ridge", "model", "-", "ridge", "[95%", "CI]", "MLP", "model", "-", "MLP", "[95%", "CI]",
        "mean", "map", "file"
    ]  # fmt: skip
    assert _line(generation, "cbvae").split() == [
        "cbvae", "0.190", "0.210", "-0.020", "[-0.040,", "+0.000]", "0.200", "-0.010", "[-0.030,", "+0.010]", "0.120",
        "data/results/ci/cbvae/test_results.json"
    ]  # fmt: skip
    atlas = _section(text, "category maps against the held-out category maps")
    assert "missing: data/results/ci/evaluation/conditional_atlas.json" in atlas
    assert _line(_section(text, "point-cloud model"), "pointcloud").split() == [
        "pointcloud", "5.0", "4.0", "8.0", "7.5", "data/results/ci/pointcloud/test_results.json"
    ]  # fmt: skip
    samples = _section(text, "samples against held-out maps")
    assert "from data/results/ci/evaluation/evaluation_results.json" in samples
    assert _line(samples, "ppca").split() == ["ppca", "4.00", "0.20", "0.90"]


def test_a_missing_or_unreadable_file_is_said_in_its_row(results: ProfilePaths):
    (results.results / "hvae").mkdir()
    (results.results / "hvae" / "test_results.json").write_text('{"variant": "hvae"}')
    (results.results / "evaluation" / "evaluation_results.json").unlink()
    text = summary("ci", results.root)
    assert _line(text, "tcvae_sbd") == (
        "  tcvae_sbd  missing: data/results/ci/tcvae_sbd/test_results.json"
        " (stage 02_train_volumetric has not written it)"
    )
    hvae = _line(text, "hvae")
    assert hvae.startswith("  hvae       unreadable: data/results/ci/hvae/test_results.json (")
    samples = _section(text, "samples against held-out maps")
    assert "missing: data/results/ci/evaluation/evaluation_results.json (stage 09_evaluation" in samples


def test_wall_times_merge_stage_by_stage_and_the_summary_lists_every_stage(results: ProfilePaths):
    record_wall_time(results, "01_curation", 21.74)
    record_wall_time(results, "07_clustering", 65.0)
    record_wall_time(results, "01_curation", 12.0)  # a rerun replaces its stage's entry only
    times = stage_times(results)
    assert {stem: entry["wall_seconds"] for stem, entry in times.items()} == {
        "01_curation": 12.0,
        "07_clustering": 65.0,
    }
    text = _section(summary("ci", results.root), "wall time per stage, from notebooks/executed/ci/stage_times.json")
    assert _line(text, "01_curation").split()[:2] == ["01_curation", "0:12"]
    assert _line(text, "07_clustering").split()[1] == "1:05"
    assert _line(text, "02_train_volumetric").split()[1:] == ["-", "no", "run", "recorded"]
    assert _line(text, "total").split() == ["total", "of", "2", "1:17"]
    for stage in STAGES:
        record_wall_time(results, stage.stem, 1800.0)
    assert _line(_section(summary("ci", results.root), "wall time"), "total").split() == ["total", "5:30:00"]


def test_a_failed_write_leaves_the_earlier_record_whole(results: ProfilePaths, monkeypatch: pytest.MonkeyPatch):
    record_wall_time(results, "01_curation", 21.7)
    before = stage_times_path(results).read_text()

    def fail(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(sematlas.core.io.json, "dumps", fail)
    with pytest.raises(OSError, match="disk full"):
        record_wall_time(results, "02_train_volumetric", 95.0)
    monkeypatch.undo()
    assert stage_times_path(results).read_text() == before
    assert [p.name for p in stage_times_path(results).parent.iterdir()] == ["stage_times.json"]
    stage_times_path(results).write_text('{"01_curation": ')  # cut short by a crash of an older runner
    assert stage_times(results) == {}
    record_wall_time(results, "02_train_volumetric", 95.0)
    assert list(json.loads(stage_times_path(results).read_text())) == ["02_train_volumetric"]


def test_the_summary_command_prints_it(
    results: ProfilePaths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("SEMATLAS_ROOT", str(results.root))
    assert pipeline.main(["summary", "ci"]) == 0
    assert capsys.readouterr().out == summary("ci", results.root) + "\n"


def test_the_summary_gives_the_category_maps_against_mkda(results: ProfilePaths):
    atlas = conditional_atlas()
    atlas.save(atlas.location(results))
    section = _section(summary("ci", results.root), "category maps against the held-out category maps")
    assert "3 categories, from data/results/ci/evaluation/conditional_atlas.json" in section
    assert _line(section, "NiMARE MKDA").split() == ["NiMARE", "MKDA", "0.780", "100%"]
    assert _line(section, "between-category r").split()[-3:] == ["0.950", "/", "0.500"]
    assert _line(section, "CAS balanced accuracy").split()[-5:] == ["0.300", "/", "0.400", "/", "0.600"]
