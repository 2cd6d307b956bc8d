"""The manuscript figures (stage 11) on small hand-made results: panels, bars, lines, files, errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.patches import Rectangle

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.reporting import figures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bars(ax) -> list[Rectangle]:
    return [patch for container in ax.containers if isinstance(container, BarContainer) for patch in container]


def _lines_at(ax, value: float, vertical: bool) -> list:
    index = 0 if vertical else 1
    return [line for line in ax.lines if np.allclose(line.get_data()[index], value)]


def test_save_figure_writes_png_and_svg(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    written = figures.save_figure(fig, tmp_path / "manuscript", "fig0_test")
    assert [p.name for p in written] == ["fig0_test.png", "fig0_test.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in written[1].read_text()
    assert sorted(p.name for p in (tmp_path / "manuscript").iterdir()) == ["fig0_test.png", "fig0_test.svg"]


def test_load_results_names_the_missing_file_and_its_stage(tmp_path):
    params = load_params("ci", ROOT)
    paths = ProfilePaths(profile="ci", root=tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        figures.load_results(paths, params)
    message = str(error.value)
    assert "figure fig1_data needs data/processed/ci/studies.parquet, written by stage 01 curation" in message
    assert "figure fig2_reconstruction needs data/results/ci/cbvae/per_study.parquet, written by stage 02" in message
    assert "figure fig7_cca needs data/results/ci/cca/results.json, written by stage 06 cca" in message
    assert "figure fig9_forecasting needs data/results/ci/forecasting/results.json, written by stage 08" in message
    assert "hvae" not in message  # the H-VAE joins figure 2 only once stage 05 wrote its results
    (tmp_path / "data" / "results" / "ci" / "hvae").mkdir(parents=True)
    assert "hvae" in figures.volumetric_variants(paths, params)


def test_write_index_lists_titles_and_sources(tmp_path):
    source = tmp_path / "data" / "results" / "ci" / "cca" / "results.json"
    path = figures.write_index(tmp_path / "figures", {"fig7_cca": [source]}, tmp_path)
    index = pd.read_json(path, typ="series")
    assert index["fig7_cca"]["sources"] == ["data/results/ci/cca/results.json"]
    assert index["fig7_cca"]["title"] == figures.TITLES["fig7_cca"]
    assert index["fig7_cca"]["png"] == "fig7_cca.png"


def test_plot_corpus_has_a_bar_per_category_for_corpus_and_subset():
    categories = ["motor", "language", "other"]
    studies = pd.DataFrame(
        {
            "task_category": categories * 4,
            "year": [2000, 2001, 2002] * 4,
            "in_subset": [True, False, True] * 4,
        }
    )
    manifest = {
        "profile": "ci",
        "task_categories": categories,
        "report": {"subset_splits": {"train": 4, "val": 2, "test": 2}},
    }
    fig = figures.plot_corpus(studies, manifest)
    left, right = fig.axes
    assert len(_bars(left)) == 2 * len(categories)
    assert [t.get_text() for t in left.get_yticklabels()] == categories[::-1]
    assert len(_bars(right)) == 3  # one bar per year
    assert "12 studies" in fig.get_suptitle() and "subset of 8" in fig.get_suptitle()


def _per_study(rng: np.random.Generator, n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            f"reconstruction_{method}_{metric}": rng.uniform(0, 1, n)
            for method in ("model", "pca", "mean_map")
            for metric in ("pearson_r", "ssim")
        }
    )


def test_plot_reconstruction_has_three_boxes_per_variant_and_says_who_beats_pca():
    rng = np.random.default_rng(0)
    variants = ["baseline", "cbvae"]
    results = {v: {"n_studies": 6, "z_dim": 8, "reconstruction": {"model_beats_pca_fraction": 0.25}} for v in variants}
    fig = figures.plot_reconstruction({v: _per_study(rng) for v in variants}, results)
    top, bottom = fig.axes
    for ax in (top, bottom):
        assert len(ax.patches) == 3 * len(variants)  # boxes: model, PCA, mean map
    assert [t.get_text() for t in bottom.get_xticklabels()] == variants
    assert sum("25%" in t.get_text() for t in top.texts) == len(variants)
    assert "6 test studies" in fig.get_suptitle()


def _probe(features: list[str]) -> dict:
    return {
        "chance": 0.5,
        "task": "n-back vs flanker",
        "n_analyses": 20,
        "n_studies": 10,
        "n_in_neurosynth": 12,
        "features": {
            f: {
                "balanced_accuracy": 0.6,
                "fold_sd": 0.05,
                "balanced_accuracy_neurosynth_studies": 0.55,
                "balanced_accuracy_new_studies": None,
            }
            for f in features
        },
    }


def test_plot_generation_adds_the_probe_with_a_chance_line():
    quality = pd.DataFrame(
        {
            "method": ["cbvae", "ppca", "training_maps"],
            "precision": [0.5, 0.2, 0.7],
            "recall": [0.4, 0.9, 0.8],
            "frechet_distance": [3.0, 4.0, 1.0],
            "n": [24, 24, 24],
        }
    )
    features = ["cbvae", "pca", "raw_voxels"]
    fig = figures.plot_generation(quality, _probe(features))
    assert len(fig.axes) == 3
    probe = fig.axes[2]
    assert len(_bars(probe)) == 3 * len(features)  # all analyses, Neurosynth studies, new studies
    assert len(_lines_at(probe, 0.5, vertical=True)) == 1
    assert [t.get_text() for t in probe.get_yticklabels()] == features
    colours = {matplotlib.colors.to_hex(p.get_facecolor()[:3]) for p in _bars(probe)}
    assert colours == {matplotlib.colors.to_hex(figures.MODEL), matplotlib.colors.to_hex(figures.BASELINE)}


def test_plot_pointcloud_adds_per_study_panels():
    summary = {"chamfer_mm_mean": 5.0, "chamfer_mm_median": 5.0, "emd_mm_mean": 6.0, "emd_mm_median": 6.0}
    results = {
        "n_test": 4,
        "n_points": 30,
        "n_train": 10,
        "reconstruction": {
            "model": summary,
            "nearest_training_study": summary,
            "resample_noise_floor": summary,
            "model_beats_nearest_training_fraction": 0.25,
        },
        "conditional_generation": {
            "model": summary,
            "category_pool": summary,
            "model_beats_category_pool_fraction": 0.5,
        },
    }
    columns = [
        "reconstruction_model_chamfer_mm",
        "reconstruction_nearest_training_study_chamfer_mm",
        "conditional_generation_model_chamfer_mm",
        "conditional_generation_category_pool_chamfer_mm",
    ]
    per_study = pd.DataFrame({c: [1.0, 2.0, 3.0, 4.0] for c in columns})
    fig = figures.plot_pointcloud(results, per_study)
    assert len(fig.axes) == 4
    assert "25%" in fig.axes[2].get_title() and "50%" in fig.axes[3].get_title()
    assert "4 held-out studies" in fig.get_suptitle()


def test_plot_uncertainty_draws_goals():
    methods = {
        m: {"ece_test_before": 0.2, "ece_test_after": 0.1, "temperature": 0.8, "ood_auroc": {"uniform": 0.7, "wm": 0.9}}
        for m in ("snapshot", "mc_dropout")
    }
    results = {
        "methods": methods,
        "goals": {"ece_below": 0.15, "ood_auroc_above": 0.85},
        "n_test": 8,
        "n_ood_per_kind": 8,
    }
    left, right = figures.plot_uncertainty(results).axes
    assert len(_bars(left)) == 2 * 2 and len(_bars(right)) == 2 * 2
    assert len(_lines_at(left, 0.15, vertical=False)) == 1
    assert len(_lines_at(right, 0.85, vertical=False)) == 1 and len(_lines_at(right, 0.5, vertical=False)) == 1


def test_plot_gate_has_a_panel_per_criterion_with_its_threshold():
    criteria = {
        "kl_top_active": {"value": 0.2, "threshold": 0.5, "pass": False, "rule": "kl_top > min"},
        "reconstruction": {"value": 0.3, "threshold": 0.25, "pass": True, "rule": "r >= cbvae r - margin"},
    }
    results = {
        "gate": {"criteria": criteria, "passed": 1, "result": "FAIL"},
        "hierarchy": {
            "top_lower_abs_correlation": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
            "category_profile": {"motor": {"top_00": 0.1, "top_01": -0.2}, "pain": {"top_00": 0.3, "top_01": 0.0}},
        },
        "kl_per_level": {"n_studies": 24},
        "top_dim": 2,
        "lower_dim": 3,
    }
    fig = figures.plot_gate(results)
    gate = [ax for ax in fig.axes if ax.get_title().endswith(("PASS", "FAIL"))]
    assert [ax.get_title() for ax in gate] == ["kl top active: FAIL", "reconstruction: PASS"]
    for ax, criterion in zip(gate, criteria.values()):
        assert len(_lines_at(ax, criterion["threshold"], vertical=True)) == 1
    assert "FAIL (1 of 2 criteria" in fig.get_suptitle()


def test_plot_cca_has_a_bar_and_a_null_line_per_component():
    results = {
        "components": [
            {"component": 1, "r": 0.8, "null_q95": 0.6, "p": 0.01, "p_fwe": 0.01},
            {"component": 2, "r": 0.4, "null_q95": 0.5, "p": 0.4, "p_fwe": 0.4},
        ],
        "variant": "cbvae",
        "dims": {"volumetric": 8, "pointcloud": 4},
        "n_studies": 24,
        "split": "test",
        "n_permutations": 100,
    }
    (ax,) = figures.plot_cca(results).axes
    assert len(_bars(ax)) == 2
    assert len(ax.collections[0].get_segments()) == 2
    assert sum(t.get_text().startswith("p=") for t in ax.texts) == 2


def test_plot_clusters_has_a_bar_per_cluster_and_one_for_noise():
    clusters = pd.DataFrame({"cluster": [0, 1], "name": ["C0: motor", "C1: pain"], "size": [5, 7]})
    summary = {
        "n_studies": 40,
        "noise_fraction": 0.7,
        "variant": "cbvae",
        "params": {"top_topics": 1},
        "ari_mean": 0.5,
        "ari_sd": 0.1,
    }
    lift = pd.DataFrame({"motor cortex": [2.0, 0.5], "pain": [0.5, 3.0]}, index=[0, 1])
    shares = pd.DataFrame({"motor": [1.0, 0.0], "pain": [0.0, 1.0]}, index=[0, 1])
    fig = figures.plot_clusters(clusters, summary, lift, shares)
    sizes = fig.axes[-1]
    assert len(_bars(sizes)) == len(clusters) + 1
    assert [t.get_text() for t in sizes.get_yticklabels()] == ["C0: motor", "C1: pain", "noise (unclustered)"]
    assert "70% noise" in sizes.get_title()


def test_plot_forecasting_notes_where_neurosynth_stops():
    table = pd.DataFrame(
        {
            "year": [2017, 2017, 2018, 2018],
            "n": [9, 9, 6, 6],
            "method": ["gru", "persistence"] * 2,
            "frechet": [0.3, 0.2, 0.4, 0.3],
            "mean_term": [0.1, 0.1, 0.2, 0.1],
        }
    )
    results = {
        "cutoff_year": 2016,
        "variant": "cbvae",
        "frechet_mean": {"gru": 0.35, "persistence": 0.25},
        "note": "Neurosynth v7 stops in 2018.",
    }
    fig = figures.plot_forecasting(table, results)
    assert len(fig.axes) == 2
    assert any("stops in 2018" in t.get_text() for t in fig.texts)
    assert "after 2016" in fig.get_suptitle()
