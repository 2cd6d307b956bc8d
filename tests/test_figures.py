"""The manuscript figures (stage 11) on small results objects: what each panel draws equals its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import BarContainer
from matplotlib.patches import Rectangle
from results_examples import (
    EXAMPLES,
    PARAMS,
    cca,
    clustering,
    conditional_atlas,
    ensemble,
    evaluation,
    forecasting,
    hierarchical,
    pointcloud,
    volumetric,
)

from sematlas.core.grid import Grid
from sematlas.core.io import write_nifti
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.reporting import figures
from sematlas.reporting.figures import CATEGORY_MAP_LABELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bars(ax) -> list[Rectangle]:
    return [patch for container in ax.containers if isinstance(container, BarContainer) for patch in container]


def _bar_groups(ax) -> list[list[float]]:
    """Each bar container's lengths: heights of vertical bars, widths of horizontal ones."""
    groups = []
    for container in ax.containers:
        if isinstance(container, BarContainer):
            horizontal = container.orientation == "horizontal"
            groups.append([p.get_width() if horizontal else p.get_height() for p in container])
    return groups


def _lines_at(ax, value: float, vertical: bool) -> list:
    index = 0 if vertical else 1
    return [line for line in ax.lines if len(line.get_data()[index]) and np.allclose(line.get_data()[index], value)]


def _scatter(ax) -> list[np.ndarray]:
    return [c.get_offsets().data for c in ax.collections if isinstance(c, PathCollection)]


def test_save_figure_writes_png_and_svg(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    written = figures.save_figure(fig, tmp_path / "manuscript", "fig0_test")
    assert [p.name for p in written] == ["fig0_test.png", "fig0_test.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in written[1].read_text()
    assert sorted(p.name for p in (tmp_path / "manuscript").iterdir()) == ["fig0_test.png", "fig0_test.svg"]


def test_write_index_lists_titles_and_sources(tmp_path):
    source = tmp_path / "data" / "results" / "ci" / "cca" / "results.json"
    path = figures.write_index(tmp_path / "figures", {"fig8_cca": [source]}, tmp_path)
    index = json.loads(path.read_text())
    assert index["fig8_cca"] == {
        "title": figures.TITLES["fig8_cca"],
        "png": "fig8_cca.png",
        "svg": "fig8_cca.svg",
        "sources": ["data/results/ci/cca/results.json"],
    }


# ------------------------------------------------------------------------ loading
def test_load_results_names_the_missing_file_and_its_stage(tmp_path):
    paths = ProfilePaths(profile="ci", root=tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        figures.load_results(paths, PARAMS)
    message = str(error.value)
    assert "figure fig1_data needs data/processed/ci/studies.parquet, written by stage 01 curation" in message
    assert "figure fig2_reconstruction needs data/results/ci/cbvae/per_study.parquet, written by stage 02" in message
    assert "figure fig8_cca needs data/results/ci/cca/results.json, written by stage 06 cca" in message
    assert "figure fig10_forecasting needs data/results/ci/forecasting/results.json, written by stage 08" in message
    assert "hvae" not in message  # the H-VAE joins figure 2 only once stage 05 wrote its results
    (tmp_path / "data" / "results" / "ci" / "hvae").mkdir(parents=True)
    assert figures.volumetric_variants(paths, PARAMS) == [*PARAMS.model.variants, "hvae"]
    with pytest.raises(FileNotFoundError, match="needs data/results/ci/hvae/test_results.json, written by stage 05"):
        figures.load_results(paths, PARAMS)


def _write_profile(paths: ProfilePaths) -> dict:
    """Every file the figures read, small; returns the results objects written."""
    studies = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "task_category": ["motor", "pain", "motor"],
            "year": [2000, 2001, 2002],
            "in_subset": True,
            "topic_000": [0.1, 0.2, 0.3],
        }
    )
    paths.processed.mkdir(parents=True)
    studies.to_parquet(paths.processed / "studies.parquet")
    (paths.processed / "manifest.json").write_text(json.dumps({"profile": "ci"}))
    table = pd.DataFrame({"a": [1.0]})
    objects = {v: volumetric(v) for v in PARAMS.model.variants}
    for variant, results in objects.items():
        results.save(results.location(paths))
        table.to_parquet(paths.results / variant / "per_study.parquet")
    for name in (stage for stage in EXAMPLES if stage != "volumetric"):  # every stage's results file
        objects[name] = EXAMPLES[name]()
        objects[name].save(objects[name].location(paths))
    for relative in (
        "evaluation/generative_quality.parquet",
        "evaluation/ablations.parquet",
        "pointcloud/per_study.parquet",
        "forecasting/frechet_by_year.parquet",
        "clustering/clusters.parquet",
        "evaluation/conditional_atlas_categories.parquet",
    ):
        table.to_parquet(paths.results / relative)
    grid = Grid(4)
    for k, method in enumerate(CATEGORY_MAP_LABELS):
        write_nifti(grid.to_nifti(np.full((*grid.shape, 3), float(k))), ConditionalAtlasResults.map_file(paths, method))
    pd.DataFrame({"id": ["1", "3"], "cluster": [0, 1]}).to_parquet(paths.results / "clustering" / "assignments.parquet")
    for centroid in objects["clustering"].centroid_maps:
        (paths.root / centroid).write_bytes(b"")
    (paths.raw / "neurosynth").mkdir(parents=True)
    (paths.raw / "neurosynth" / "data-neurosynth_version-7_vocab-LDA50_keys.tsv").write_text("")
    return objects


def test_load_results_reads_each_file_as_its_results_object_and_lists_it_once(tmp_path):
    paths = ProfilePaths(profile="ci", root=tmp_path)
    written = _write_profile(paths)
    loaded = figures.load_results(paths, PARAMS)
    assert loaded["fig2_reconstruction"]["test_results"] == {v: written[v] for v in PARAMS.model.variants}
    assert loaded["fig3_generation"]["probe"] == written["evaluation"].zero_shot_probe
    assert loaded["fig5_pointcloud"]["results"] == written["pointcloud"]
    assert loaded["fig6_uncertainty"]["results"] == written["ensemble"]
    assert loaded["fig7_hierarchy"]["results"] == written["hierarchical"]
    assert loaded["fig8_cca"]["results"] == written["cca"]
    assert loaded["fig10_forecasting"]["results"] == written["forecasting"]
    assert loaded["fig4_category_maps"]["results"] == written["conditional_atlas"]
    # Each method's saved 4-D image, read back as (D, H, W, n_categories).
    assert {m: (v.shape[-1], float(v.max())) for m, v in loaded["fig4_category_maps"]["maps"].items()} == {
        m: (3, float(k)) for k, m in enumerate(CATEGORY_MAP_LABELS)
    }
    members = loaded["fig9_clusters"]["members"]
    assert members[["id", "cluster", "topic_000"]].to_dict(orient="list") == {
        "id": ["1", "3"],
        "cluster": [0, 1],
        "topic_000": [0.1, 0.3],
    }
    assert loaded["fig9_clusters"]["centroids"] == [tmp_path / p for p in written["clustering"].centroid_maps]
    sources = {name: [str(p.relative_to(tmp_path)) for p in files] for name, files in loaded["sources"].items()}
    assert list(sources) == list(figures.TITLES)
    assert sources["fig1_data"] == ["data/processed/ci/studies.parquet", "data/processed/ci/manifest.json"]
    assert sources["fig3_generation"] == [
        "data/results/ci/evaluation/generative_quality.parquet",
        "data/results/ci/evaluation/evaluation_results.json",
    ]
    assert sources["fig9_clusters"][-2:] == written["clustering"].centroid_maps
    assert len(sources["fig2_reconstruction"]) == 2 * len(PARAMS.model.variants)
    assert sources["fig4_category_maps"] == [
        "data/results/ci/evaluation/conditional_atlas.json",
        "data/results/ci/evaluation/conditional_atlas_categories.parquet",
        *(f"data/results/ci/evaluation/category_maps/{m}.nii.gz" for m in CATEGORY_MAP_LABELS),
    ]


def test_plot_conditional_atlas_draws_the_shown_categories_with_their_r_and_the_medians():
    results = conditional_atlas()
    categories = results.category_level.categories  # emotion, language, motor
    volumes = np.zeros((5, 6, 4, 3))
    for k in range(3):
        volumes[k + 1, 2, 2, k] = 1.0 + k
    maps = {method: volumes for method in CATEGORY_MAP_LABELS}
    table = pd.DataFrame({"category": categories, "r_model": [0.1, 0.2, 0.3], "r_mkda": [0.4, 0.5, 0.6]})
    fig = figures.plot_conditional_atlas(results, table, maps)
    # Of the shown categories only language and motor were measured: two rows of four maps, three slices each.
    assert len(fig.axes) == 2 * 12
    assert [fig.axes[12 * row].get_ylabel() for row in range(2)] == ["language", "motor"]
    assert [ax.get_title() for ax in fig.axes[12:24] if ax.get_title()] == [
        "held-out studies",
        "cbvae (r = 0.30)",
        "study average",
        "NiMARE MKDA (r = 0.60)",
    ]
    assert "cbvae 0.45, study average 0.70, MKDA 0.78" in fig._suptitle.get_text()


# ------------------------------------------------------------------------ figures 1-5
def test_plot_corpus_draws_each_categorys_and_years_share_for_corpus_and_subset():
    categories = ["motor", "language", "other"]
    studies = pd.DataFrame(
        {
            "task_category": ["motor"] * 6 + ["language"] * 4 + ["other"] * 2,
            "year": [2000, 2001, 2002, 2000] * 3,
            "in_subset": [True, False] * 6,
        }
    )
    manifest = {
        "profile": "ci",
        "task_categories": categories,
        "report": {"subset_splits": {"train": 4, "val": 1, "test": 1}},
    }
    fig = figures.plot_corpus(studies, manifest)
    left, right = fig.axes
    corpus, subset = _bar_groups(left)
    assert corpus == pytest.approx([100 * 2 / 12, 100 * 4 / 12, 100 * 6 / 12])  # other, language, motor (reversed)
    assert subset == pytest.approx([100 * 1 / 6, 100 * 2 / 6, 100 * 3 / 6])
    assert [t.get_text() for t in left.get_yticklabels()] == categories[::-1]
    (years,) = _bar_groups(right)
    assert years == pytest.approx([100 * 6 / 12, 100 * 3 / 12, 100 * 3 / 12])
    assert right.lines[0].get_ydata() == pytest.approx([100 * 3 / 6, 0.0, 100 * 3 / 6])
    assert "12 studies" in fig.get_suptitle() and "subset of 6" in fig.get_suptitle()


def _per_study(rng: np.random.Generator, n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            f"reconstruction_{method}_{metric}": rng.uniform(0, 1, n)
            for method in ("model", "pca", "mean_map")
            for metric in ("pearson_r", "ssim")
        }
    )


def test_plot_reconstruction_draws_every_study_of_every_method_and_who_beats_pca():
    rng = np.random.default_rng(0)
    variants = ["baseline", "cbvae"]
    per_study = {v: _per_study(rng) for v in variants}
    reconstruction = {**volumetric().reconstruction.to_dict(), "model_beats_pca_fraction": 0.75}
    results = {"baseline": volumetric("baseline"), "cbvae": volumetric("cbvae", reconstruction=reconstruction)}
    fig = figures.plot_reconstruction(per_study, results)
    top, bottom = fig.axes
    for ax, metric in ((top, "pearson_r"), (bottom, "ssim")):
        assert len(ax.patches) == 3 * len(variants)  # boxes: model, PCA, mean map
        drawn = _scatter(ax)
        expected = [
            per_study[v][f"reconstruction_{m}_{metric}"] for v in variants for m in ("model", "pca", "mean_map")
        ]
        assert len(drawn) == len(expected)
        for points, values in zip(drawn, expected):
            assert points[:, 1] == pytest.approx(values.to_numpy())
    assert [t.get_text() for t in bottom.get_xticklabels()] == variants
    assert [t.get_text() for t in top.texts] == ["beats PCA on\n25% of studies", "beats PCA on\n75% of studies"]
    assert "6 test studies (z = 8)" in fig.get_suptitle()


def test_plot_generation_draws_the_probe_accuracies_against_chance():
    quality = pd.DataFrame(
        {
            "method": ["cbvae", "ppca", "training_maps"],
            "precision": [0.5, 0.2, 0.7],
            "recall": [0.4, 0.9, 0.8],
            "frechet_distance": [3.0, 4.0, 1.0],
            "n": [24, 24, 24],
        }
    )
    probe = evaluation().zero_shot_probe
    fig = figures.plot_generation(quality, probe)
    assert len(fig.axes) == 3
    scatter, frechet, drawn = fig.axes
    assert [tuple(p[0]) for p in _scatter(scatter)] == [(0.4, 0.5), (0.9, 0.2), (0.8, 0.7)]  # (recall, precision)
    assert _bar_groups(frechet) == [[1.0, 3.0, 4.0]]
    features = list(probe.features)
    assert [t.get_text() for t in drawn.get_yticklabels()] == features
    accuracy, neurosynth, new = _bar_groups(drawn)
    assert accuracy == [probe.features[f]["balanced_accuracy"] for f in features]
    assert neurosynth == pytest.approx([probe.features[f]["balanced_accuracy_neurosynth_studies"] for f in features])
    assert np.isnan(new[0]) and new[1:] == [0.5, 0.6]  # a group without analyses draws no bar
    assert len(_lines_at(drawn, probe.chance, vertical=True)) == 1
    first = next(c for c in drawn.containers if isinstance(c, BarContainer))
    colours = [matplotlib.colors.to_hex(p.get_facecolor()[:3]) for p in first]
    assert colours == [matplotlib.colors.to_hex(c) for c in (figures.MODEL, figures.BASELINE, figures.BASELINE)]
    assert "n-back vs flanker: 20 analyses of 10 studies" in drawn.get_title()


def test_plot_pointcloud_draws_each_study_against_its_baseline_and_the_medians():
    results = pointcloud()
    per_study = pd.DataFrame(
        {
            "reconstruction_model_chamfer_mm": [1.0, 2.0, 3.0, 4.0],
            "reconstruction_nearest_training_study_chamfer_mm": [2.0, 2.0, 2.0, 2.0],
            "conditional_generation_model_chamfer_mm": [5.0, 6.0, 7.0, 8.0],
            "conditional_generation_category_pool_chamfer_mm": [8.0, 7.0, 6.0, 5.0],
        }
    )
    fig = figures.plot_pointcloud(results, per_study)
    assert len(fig.axes) == 4
    recon_medians, generation_medians, recon_studies, generation_studies = fig.axes
    # Chamfer, then EMD bars of the methods in alphabetical order: model, retrieval, noise floor / category pool, model
    assert _bar_groups(recon_medians) == [[5.0, 4.0, 0.5], [6.0, 7.0, 1.0]]
    assert [t.get_text() for t in recon_medians.get_yticklabels()] == [
        "model",
        "nearest training study",
        "resample noise floor",
    ]
    assert _bar_groups(generation_medians) == [[7.5, 8.0], [9.5, 9.0]]
    (points,) = _scatter(recon_studies)
    assert points.tolist() == [[2.0, 1.0], [2.0, 2.0], [2.0, 3.0], [2.0, 4.0]]  # (baseline, model) per study
    (points,) = _scatter(generation_studies)
    assert points[:, 0].tolist() == [8.0, 7.0, 6.0, 5.0] and points[:, 1].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert "25%" in recon_studies.get_title() and "50%" in generation_studies.get_title()
    assert "4 held-out studies (30 points each, trained on 10)" in fig.get_suptitle()


def test_plot_uncertainty_draws_ece_and_auroc_of_every_method_against_the_goals():
    results = ensemble()
    left, right = figures.plot_uncertainty(results).axes
    before, after = _bar_groups(left)
    assert before == [0.2, 0.25] and after == [0.1, 0.16]
    assert [t.get_text() for t in left.get_xticklabels()] == ["snapshot\n(T = 0.80)", "mc dropout\n(T = 0.80)"]
    assert _bar_groups(right) == [
        [0.7, 0.9, 0.8],
        pytest.approx([0.3, 0.1, 0.2]),
        [0.6, 0.95, 0.75],
        pytest.approx([0.4, 0.05, 0.25]),
    ]  # per method: disagreement, then predictive NLL, one bar per OOD kind
    assert [t.get_text() for t in right.get_xticklabels()] == ["uniform", "white matter", "nimare synthetic"]
    assert len(_lines_at(left, 0.15, vertical=False)) == 1
    assert len(_lines_at(right, 0.85, vertical=False)) == 1 and len(_lines_at(right, 0.5, vertical=False)) == 1
    assert right.get_title() == "OOD detection (8 maps per kind)"


# ------------------------------------------------------------------------ figures 6-9
def test_plot_gate_draws_each_criterion_against_its_threshold():
    results = hierarchical()
    fig = figures.plot_gate(results)
    gate = [ax for ax in fig.axes if ax.get_title().endswith(("PASS", "FAIL"))]
    assert [ax.get_title() for ax in gate] == ["kl top active: FAIL", "reconstruction: PASS", "top level probe: PASS"]
    for ax, criterion in zip(gate, results.gate.criteria.values()):
        assert _bar_groups(ax) == [[criterion["value"]]]
        assert len(_lines_at(ax, criterion["threshold"], vertical=True)) == 1
        assert criterion["rule"] in ax.get_xlabel().replace("\n", " ")
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert heatmaps[0].images[0].get_array().tolist() == results.hierarchy.top_lower_abs_correlation
    assert "FAIL (2 of 3 criteria; top 2 + lower 3 units, 24 test studies)" in fig.get_suptitle()


def test_plot_cca_draws_each_correlation_and_its_null():
    results = cca()
    (ax,) = figures.plot_cca(results).axes
    assert _bar_groups(ax) == [[0.8, 0.4]]
    (null,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert [segment[0, 1] for segment in null.get_segments()] == [0.6, 0.5]
    assert [t.get_text() for t in ax.texts] == ["p=0.010\np_FWE=0.010", "p=0.400\np_FWE=0.400"]
    assert "cbvae (8 units) vs point-cloud (4 units)" in ax.get_title() and "100 shuffled" in ax.get_title()


def test_plot_clusters_draws_each_clusters_size_and_the_noise():
    summary = clustering()
    clusters = pd.DataFrame({"cluster": [0, 1], "name": ["C0: motor", "C1: pain"], "size": [5, 7]})
    lift = pd.DataFrame({"motor cortex": [2.0, 0.5], "pain": [0.5, 3.0]}, index=[0, 1])
    shares = pd.DataFrame({"motor": [1.0, 0.0], "pain": [0.0, 1.0]}, index=[0, 1])
    fig = figures.plot_clusters(clusters, summary, lift, shares)
    sizes = fig.axes[-1]
    assert _bar_groups(sizes) == [[5, 7, 28]]  # 70% of 40 studies are noise
    assert [t.get_text() for t in sizes.get_yticklabels()] == ["C0: motor", "C1: pain", "noise (unclustered)"]
    assert "2 clusters, 70% noise; bootstrap ARI 0.50 ± 0.10" in sizes.get_title()
    undefined = clustering(ari_mean=None, ari_sd=None)
    assert "bootstrap ARI undefined" in figures.plot_clusters(clusters, undefined, lift, shares).axes[-1].get_title()


def test_plot_forecasting_draws_each_methods_distance_per_year_and_notes_where_neurosynth_stops():
    table = pd.DataFrame(
        {
            "year": [2017, 2017, 2018, 2018],
            "n": [9, 9, 6, 6],
            "method": ["gru", "persistence"] * 2,
            "frechet": [0.3, 0.2, 0.4, 0.3],
            "mean_term": [0.1, 0.1, 0.2, 0.1],
        }
    )
    fig = figures.plot_forecasting(table, forecasting())
    frechet, mean_term = fig.axes
    assert [line.get_ydata().tolist() for line in frechet.lines] == [[0.3, 0.4], [0.2, 0.3]]
    assert [line.get_ydata().tolist() for line in mean_term.lines] == [[0.1, 0.2], [0.1, 0.1]]
    (note,) = [t.get_text() for t in fig.texts if "stops in 2018" in t.get_text()]
    assert note.startswith("Mean over held-out years: gru 0.35, persistence 0.25, linear_trend 0.3.")
    assert "after 2016" in fig.get_suptitle()
