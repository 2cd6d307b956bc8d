"""The manuscript: every number comes from a stage's results file; the pandoc fallback renders it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from results_examples import EXAMPLES, PARAMS, cca, clustering, evaluation, volumetric

from sematlas.core.paths import ProfilePaths
from sematlas.core.results import ResultsError
from sematlas.pipeline.registry import STAGES
from sematlas.reporting.manuscript import (
    VARIABLES,
    ablation_table,
    collect_variables,
    expand_includes,
    render,
    to_pandoc_markdown,
    used_variables,
    write_variables,
)

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "manuscript" / "index.qmd"

#: Digits the prose may contain because they are names, not results: the checksum, the template space, "3D".
NAMES_WITH_DIGITS = ("SHA-256", "MNI152", "3D")


def prose(text: str) -> str:
    """The text a reader sees, minus what carries no typed number: shortcodes, citations, labels, paths, code."""
    text = re.sub(r"\{\{<.*?>\}\}", "", text)
    text = re.sub(r"\[@[^\]]+\]|@(fig|tbl)-[\w-]+|\{#[^}]+\}|\]\([^)]+\)|`[^`]*`", "", text)
    for name in NAMES_WITH_DIGITS:
        text = text.replace(name, "")
    return text


MANIFEST = {
    "profile": "ci",
    "n_studies": 13867,
    "n_peaks": 452396,
    "parameters": {"render": {"voxel_size": 4}, "data": {"neurosynth_version": "7"}},
    "report": {
        "deduplication": {"peaks_in": 507891, "studies_flagged_duplicate": 83},
        "splits": {"train": 9709, "val": 2080, "test": 2078},
        "subset_size": 160,
        "subset_splits": {"train": 112, "test": 24},
        "sample_size_matched": 195,
        "year_bin_edges": [1997.0, 2005.0, 2018.0],
    },
}


def _write_manifest(paths: ProfilePaths) -> None:
    paths.processed.mkdir(parents=True)
    (paths.processed / "manifest.json").write_text(json.dumps(MANIFEST))


def test_every_number_in_the_manuscript_is_a_variable_a_stage_writes() -> None:
    text = INDEX.read_text()
    names = used_variables(text)
    assert names, "the manuscript quotes no results"
    assert sorted(set(names) - set(VARIABLES)) == []
    typed = sorted({m.group() for m in re.finditer(r"[^\s]*\d[^\s]*", prose(text))})
    assert typed == [], f"numbers typed into index.qmd instead of read from results: {typed}"
    # Every file a variable reads is an output the stage registry knows the writer of.
    paths = ProfilePaths("ci", ROOT)
    writers = {variable.source.writer(paths).number for variable in VARIABLES.values()}
    assert writers <= {stage.number for stage in STAGES} and "02" in writers


def test_every_variable_reads_its_results_object(tmp_path: Path) -> None:
    paths = ProfilePaths("ci", tmp_path)
    _write_manifest(paths)
    for variant in PARAMS.model.variants:
        results = volumetric(variant)
        results.save(results.location(paths))
    for name in (stage for stage in EXAMPLES if stage != "volumetric"):  # every stage's results file
        results = EXAMPLES[name]()
        results.save(results.location(paths))
    values = collect_variables(paths)
    assert [name for name, value in values.items() if value.startswith("[stage")] == []
    assert (
        values["cbvae_recon_r"] == "0.410" and values["pca_recon_r"] == "0.520" and values["cbvae_beats_pca"] == "25%"
    )
    assert values["year_balanced_accuracy"] == "0.130" and values["cbvae_epochs"] == "2"
    assert values["points_floor_chamfer"] == "1.5"  # the noise floor's mean, not its median
    assert values["ece_mc_after"] == "0.160" and values["ood_white_matter"] == "0.90" and values["ood_goal"] == "0.85"
    assert (
        values["hvae_gate"] == "FAIL" and values["hvae_recon_threshold"] == "0.250" and values["hvae_probe"] == "0.200"
    )
    assert values["cca_r2"] == "0.400" and values["cluster_noise"] == "70%" and values["frechet_trend"] == "0.30"
    assert (
        values["prd_cbvae_recall"] == "0.40"
        and values["prd_mixture_recall"] == "0.50"
        and values["probe_raw"] == "0.70"
        and values["ablation_locked_r"] == "0.465"
    )


def test_variables_come_from_results_files_and_missing_stages_say_so(tmp_path: Path) -> None:
    paths = ProfilePaths("ci", tmp_path)
    _write_manifest(paths)
    one_component = cca(components=cca().components[:1])
    one_component.save(one_component.location(paths))
    with pytest.raises(KeyError, match=r"'cca_r2': .*cca/results\.json has no such value"):
        collect_variables(paths)
    cca(n_permutations=1000).save(one_component.location(paths))
    undefined = clustering(ari_mean=None)
    undefined.save(undefined.location(paths))
    values = collect_variables(paths)
    assert values["n_studies"] == "13,867" and values["voxel_size"] == "4"
    assert values["last_year"] == "2018" and values["neurosynth_version"] == "7"
    assert values["cca_r1"] == "0.800" and values["cca_permutations"] == "1,000" and values["cluster_ari"] == "n/a"
    assert values["cbvae_recon_r"] == "[stage 02 not run]" and values["hvae_gate"] == "[stage 05 not run]"
    written = yaml.safe_load(write_variables(paths, tmp_path).read_text())
    assert written == values
    (paths.results / "clustering" / "results.json").write_text(json.dumps({**undefined.to_dict(), "colour": 1}))
    with pytest.raises(ResultsError, match=r"clustering/results\.json: unknown key 'colour'"):
        collect_variables(paths)


def test_quarto_syntax_becomes_pandoc_markdown() -> None:
    text = "---\ntitle: T\nauthor:\n  - name: A\n---\nr = {{< var r >}} (@fig-a, @tbl-b).\n\n![c](f.png){#fig-a}\n"
    text += "\n: t {#tbl-b}\n\nmail me@fig-a.org\n"
    out = to_pandoc_markdown(text, {"r": "0.5"})
    assert "r = 0.5 ([Figure 1](#fig-a), [Table 1](#tbl-b))." in out
    assert "me@fig-a.org" in out and "author:\n- A\n" in out
    with pytest.raises(KeyError, match="unknown variable"):
        to_pandoc_markdown("{{< var nope >}}", {})
    with pytest.raises(KeyError, match="undefined label @fig-missing"):
        to_pandoc_markdown("see @fig-missing", {})


def test_pandoc_fallback_renders_the_manuscript(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "manuscript", tmp_path / "manuscript", ignore=shutil.ignore_patterns("_output", "figures"))
    shutil.copytree(ROOT / "params", tmp_path / "params")
    paths = ProfilePaths("ci", tmp_path)
    clusters = clustering(n_clusters=7, noise_fraction=0.25, ari_mean=0.81, ari_sd=0.05, n_studies=1000)
    clusters.save(clusters.location(paths))
    (paths.figures / "manuscript").mkdir(parents=True)
    (paths.figures / "manuscript" / "fig9_clusters.png").write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
        )
    )
    html = render("ci", root=tmp_path, use_quarto=False).read_text()
    assert "HDBSCAN finds 7 clusters among 1,000 studies" in html.replace("\n", " ")
    assert "[stage 02 not run]" in html  # a stage that has not run is visible, not silently blank
    assert 'href="#fig-clusters">Figure 9</a>' in html
    assert "data:image/png;base64" in html  # the figure is embedded: one self-contained file
    assert "Yarkoni" in html and "Lakshminarayanan" in html  # the bibliography is resolved
    assert "{{&lt;" not in html and "{{<" not in html  # every shortcode, the table's include too, was replaced


def test_ablation_table_is_generated_from_stage_09_and_included(tmp_path: Path) -> None:
    paths = ProfilePaths("ci", tmp_path)
    assert ablation_table(paths).startswith("[stage 09 not run]")
    results = evaluation()
    results.save(results.location(paths))
    table = ablation_table(paths)
    assert "| `z_dim_16` | `model.z_dim: 32 -> 16` | reconstruction\\_r falls by more than 0.01 |" in table
    assert "| 0.465 | 0.401 | **PASS** | 62% |" in table
    assert table.index("z_dim_16") < table.index("beta_1")  # the protocol's order, not the JSON file's
    assert table.rstrip().endswith("{#tbl-ablations}")
    (tmp_path / "_t.md").write_text(table)
    expanded = expand_includes("before\n\n{{< include _t.md >}}\n\nafter", tmp_path)
    assert expanded == f"before\n\n{table}\n\nafter"
    assert "[Table 1](#tbl-ablations)" in to_pandoc_markdown(expanded + "\nsee @tbl-ablations", {})
