"""The stage figures in :mod:`sematlas.reporting`: what each one draws, read back from its artists."""

from __future__ import annotations

import base64
import gc
import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from sematlas.analysis.cca import LatentCCA
from sematlas.analysis.forecasting.baselines import linear_trend_forecast, persistence_forecast
from sematlas.analysis.forecasting.series import yearly_series
from sematlas.core.grid import Grid
from sematlas.evaluation.uncertainty import CALIBRATION_LEVELS, ood_auroc
from sematlas.reporting.cca import plot_canonical_correlations, plot_decoded_maps
from sematlas.reporting.clustering import plot_centroid_maps, plot_cluster_profiles, plot_embedding
from sematlas.reporting.forecasting import plot_frechet, plot_trajectories, plot_zeitgeist
from sematlas.reporting.hierarchy import plot_hierarchy
from sematlas.reporting.pointcloud import plot_glass_brain_points, plot_metric_comparison, view_points_3d
from sematlas.reporting.uncertainty import plot_ood_histograms, plot_reliability


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def frozen_heap():
    """Keep the objects alive now out of the garbage collector's reach (see :mod:`sematlas.reporting.cca`).

    nilearn forces a full collection for every image it reads, which costs about half a second
    in a process holding torch; glass-brain tests would spend most of their time there.
    """
    gc.freeze()
    yield
    gc.unfreeze()


def texts(fig: Figure) -> list[str]:
    """Every string drawn anywhere in the figure (titles, labels, annotations, nilearn's titles)."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def blob_images(grid: Grid, centres_mm: list[tuple[float, float, float]], scale: float = 1.0) -> list:
    """One NIfTI image per centre: a Gaussian blob of peak ``scale`` inside the brain, zero outside."""
    ijk = np.stack(np.indices(grid.shape), axis=-1).astype(float)
    images = []
    for centre in centres_mm:
        voxel = grid.mm_to_voxel(np.array([centre]))[0]
        volume = scale * np.exp(-((ijk - voxel) ** 2).sum(-1) / 8.0) * grid.mask()
        images.append(grid.to_nifti(volume.astype(np.float32)))
    return images


# ------------------------------------------------------------------------ forecasting (stage 08)
def linear_drift(slope: tuple[float, float] = (0.05, -0.03)):
    """Four studies a year, 1997-2018, whose yearly mean moves on a straight line in 2-D."""
    offsets = np.array([[0.3, -0.1], [-0.2, 0.25], [0.1, 0.05], [-0.2, -0.2]])
    offsets = offsets - offsets.mean(0)
    years = np.repeat(np.arange(1997, 2019), 4)
    centres = np.array([0.2, -0.1]) + np.outer(years - 1997, slope)
    return yearly_series(centres + np.tile(offsets, (22, 1)), years, min_studies=2)


def test_trajectories_draw_observed_means_and_each_forecast_on_the_principal_components():
    series = linear_drift()
    held_out = list(range(2015, 2019))
    forecasts = {
        "persistence": persistence_forecast(series, 2014, held_out),
        "linear_trend": linear_trend_forecast(series, 2014, range(1997, 2019)),
    }
    fig = plot_trajectories(series, forecasts, cutoff=2014)
    assert len(fig.axes) == 2  # a 2-D latent has two principal components
    for k, ax in enumerate(fig.axes):
        assert ax.get_ylabel() == f"PC{k + 1} of the yearly mean latent"
        lines = {line.get_label(): line for line in ax.lines}
        observed = ax.containers[0].lines[0]  # the error bar's data line
        np.testing.assert_array_equal(observed.get_xdata(), np.arange(1997, 2019))
        projected = dict(zip(observed.get_xdata(), observed.get_ydata()))
        # Persistence repeats the cutoff year; the trend of an exact linear drift lands on the observed means.
        np.testing.assert_array_equal(lines["persistence"].get_xdata(), held_out)
        np.testing.assert_allclose(lines["persistence"].get_ydata(), projected[2014], atol=1e-12)
        np.testing.assert_array_equal(lines["linear_trend"].get_xdata(), held_out)
        np.testing.assert_allclose(lines["linear_trend"].get_ydata(), [projected[y] for y in held_out], atol=1e-9)
        # Only the trend has in-sample years: one dotted line through them.
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(dotted) == 1 and list(dotted[0].get_xdata()) == list(range(1997, 2015))
    # The first component carries the drift: its observed values span far more than the second's.
    spans = [np.ptp(ax.containers[0].lines[0].get_ydata()) for ax in fig.axes]
    assert spans[0] > 10 * spans[1]
    assert sorted(legend_labels(fig.axes[0])) == ["linear_trend", "observed", "persistence"]


def test_frechet_draws_each_methods_distance_and_mean_term_per_year():
    table = pd.DataFrame(
        {
            "year": [2015, 2015, 2016, 2016],
            "n": [40, 40, 12, 12],
            "method": ["gru", "persistence", "gru", "persistence"],
            "frechet": [1.5, 2.5, 1.8, 3.1],
            "mean_term": [0.5, 1.0, 0.6, 1.4],
        }
    )
    fig = plot_frechet(table)
    assert len(fig.axes) == 2
    for ax, column in zip(fig.axes, ("frechet", "mean_term")):
        lines = {line.get_label(): line for line in ax.lines}
        for method in ("gru", "persistence"):
            part = table[table["method"] == method]
            np.testing.assert_array_equal(lines[method].get_xdata(), part["year"])
            np.testing.assert_array_equal(lines[method].get_ydata(), part[column])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["2015\nn=40", "2016\nn=12"]
        assert ax.get_xlabel() == "held-out year"
    assert legend_labels(fig.axes[0]) == ["gru", "persistence"]


def test_zeitgeist_stacks_cluster_shares_draws_topics_and_one_brain_per_year_and_field(frozen_heap):
    years = [2000, 2001, 2002]
    clusters = pd.DataFrame({"C0: pain": [0.5, 0.4, 0.2], "C1: memory": [0.3, 0.5, 0.7], "noise": [0.2, 0.1, 0.1]})
    clusters.index = years
    topics = pd.DataFrame({"01 pain": [0.1, 0.2, 0.3], "07 memory": [0.3, 0.2, 0.2]}, index=years)
    grid = Grid(4)
    means = blob_images(grid, [(30.0, -20.0, 40.0), (30.0, -20.0, 40.0)])
    sds = blob_images(grid, [(-30.0, 10.0, 20.0), (-30.0, 10.0, 20.0)], scale=0.2)
    fig = plot_zeitgeist(clusters, topics, {2005: (means[0], sds[0]), 2015: (means[1], sds[1])}, "pain")
    stack, lines = fig.axes[:2]
    # A stacked area: one band per cluster, the top edge of the last band is 1 every year.
    assert len(stack.collections) == 3 and legend_labels(stack) == list(clusters.columns)
    top = stack.collections[-1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(1.0) and stack.get_ylim() == (0.0, 1.0)
    assert legend_labels(lines) == list(topics.columns)
    for line, name in zip(lines.lines, topics.columns):
        np.testing.assert_array_equal(line.get_xdata(), years)
        np.testing.assert_array_equal(line.get_ydata(), topics[name])
    drawn = texts(fig)
    assert {"2005 mean", "2005 sd", "2015 mean", "2015 sd"} <= set(drawn)
    assert any("predicted 'pain' map by year" in text for text in drawn)


# ------------------------------------------------------------------------ clustering (stage 07)
def test_embedding_colours_each_cluster_and_counts_its_members():
    labels = np.array([0, 0, 1, -1, 1, 1])
    embedding = np.arange(12, dtype=float).reshape(6, 2)
    fig = plot_embedding(embedding, labels, ["pain", "memory"])
    (ax,) = fig.axes
    noise, first, second = ax.collections
    np.testing.assert_array_equal(noise.get_offsets(), embedding[[3]])
    np.testing.assert_array_equal(first.get_offsets(), embedding[[0, 1]])
    np.testing.assert_array_equal(second.get_offsets(), embedding[[2, 4, 5]])
    assert legend_labels(ax) == ["noise (1)", "pain (2)", "memory (3)"]
    assert ax.get_title() == "t-SNE of the latents"

    fig = plot_embedding(embedding, np.full(6, -1))
    assert fig.axes[0].get_title() == "t-SNE of the latents: HDBSCAN found no cluster"
    assert legend_labels(fig.axes[0]) == ["noise (6)"]


def test_cluster_profiles_show_the_log_lift_of_each_clusters_top_topics_and_the_task_shares():
    lift = pd.DataFrame(
        {"pain heat": [4.0, 0.5], "memory load": [0.25, 2.0], "motor hand": [1.0, 1.5], "noise words": [1.0, 0.9]}
    )
    shares = pd.DataFrame({"pain": [0.75, 0.0], "working_memory": [0.25, 1.0]})
    fig = plot_cluster_profiles(lift, shares, ["C0", "C1"], top_topics=2)
    left, right = fig.axes[:2]  # then their colour bars
    shown = ["pain heat", "motor hand", "memory load"]  # C0's top two, then C1's new one
    np.testing.assert_allclose(left.images[0].get_array(), np.log2(lift[shown].to_numpy()))
    assert [t.get_text() for t in left.get_xticklabels()] == shown
    assert [t.get_text() for t in left.get_yticklabels()] == ["C0", "C1"]
    assert left.images[0].get_clim() == (-2.0, 2.0)  # symmetric about 0 at the largest |log2 lift|
    np.testing.assert_array_equal(right.images[0].get_array(), shares.to_numpy())
    assert [t.get_text() for t in right.get_xticklabels()] == ["pain", "working memory"]


def test_cluster_figures_without_a_cluster_say_so():
    fig = plot_cluster_profiles(pd.DataFrame(), pd.DataFrame(), [])
    assert texts(fig) == ["no cluster: no topic or task profile"] and not fig.axes[0].axison
    fig = plot_centroid_maps([], [])
    assert texts(fig) == ["no cluster: no centroid map"] and not fig.axes[0].axison


def test_centroid_maps_draw_one_titled_glass_brain_row_per_cluster(frozen_heap):
    grid = Grid(4)
    images = blob_images(grid, [(30.0, -20.0, 40.0), (-30.0, 10.0, 20.0)])
    fig = plot_centroid_maps(images, ["C0: pain", "C1: memory"])
    rows = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    assert len(rows) == 2
    assert {"C0: pain", "C1: memory"} <= set(texts(fig))


# ------------------------------------------------------------------------ uncertainty (stage 04)
def test_reliability_diagram_draws_each_curve_against_its_levels_with_its_ece():
    calibrated = CALIBRATION_LEVELS.copy()
    overconfident = CALIBRATION_LEVELS * 0.5
    fig = plot_reliability({"snapshot": calibrated, "mc_dropout": overconfident})
    (ax,) = fig.axes
    diagonal, first, second = ax.lines
    assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata())
    np.testing.assert_array_equal(first.get_xdata(), CALIBRATION_LEVELS)
    np.testing.assert_array_equal(second.get_ydata(), overconfident)
    ece = float(np.mean(CALIBRATION_LEVELS * 0.5))
    assert legend_labels(ax) == ["calibrated", "snapshot (ECE 0.000)", f"mc_dropout (ECE {ece:.3f})"]


def test_ood_histograms_have_one_panel_per_score_and_kind_holding_every_map():
    rng = np.random.default_rng(0)
    scores = {
        "snapshot": {
            "disagreement": {
                "test": rng.uniform(1, 2, 30),
                "uniform": rng.uniform(2, 4, 20),
                "white_matter": rng.uniform(1, 3, 25),
            },
            "predictive_nll": {
                "test": rng.normal(0, 1, 30),
                "uniform": rng.normal(2, 1, 20),
                "white_matter": rng.normal(1, 1, 25),
            },
        }
    }
    fig = plot_ood_histograms(scores)
    assert len(fig.axes) == 2 * 2  # (method, score) rows by OOD kinds
    for ax, (name, kind) in zip(
        fig.axes,
        [
            ("disagreement", "uniform"),
            ("disagreement", "white_matter"),
            ("predictive_nll", "uniform"),
            ("predictive_nll", "white_matter"),
        ],
    ):
        values = scores["snapshot"][name]
        test_bars, kind_bars = ax.containers
        assert sum(p.get_height() for p in test_bars) == len(values["test"])
        assert sum(p.get_height() for p in kind_bars) == len(values[kind])
        auroc = ood_auroc(values["test"], values[kind])
        label = name.replace("_", " ")
        assert ax.get_title() == f"snapshot, {label}: {kind} (AUROC {auroc:.2f})"
        # Positive scores are drawn on a log10 axis, others as they are.
        assert ax.get_xlabel() == (f"log10 {label}" if name == "disagreement" else label)
        assert legend_labels(ax) == ["test", kind]


# ------------------------------------------------------------------------ CCA (stage 06)
def test_canonical_correlations_are_bars_over_their_permutation_null():
    rng = np.random.default_rng(3)
    factor = rng.standard_normal((80, 1))
    x = factor @ rng.standard_normal((1, 4)) + 0.5 * rng.standard_normal((80, 4))
    y = factor @ rng.standard_normal((1, 3)) + 0.5 * rng.standard_normal((80, 3))
    cca = LatentCCA(n_components=2, n_permutations=50, seed=0).fit(x, y)
    fig = plot_canonical_correlations(cca)
    (ax,) = fig.axes
    null_box, observed = ax.containers
    np.testing.assert_allclose([bar.get_height() for bar in observed], cca.correlations_)
    low, high = np.quantile(cca.null_, [0.025, 0.975], axis=0)
    np.testing.assert_allclose([bar.get_y() for bar in null_box], low)
    np.testing.assert_allclose([bar.get_y() + bar.get_height() for bar in null_box], high)
    q95 = [segment[0, 1] for segment in ax.collections[0].get_segments()]
    np.testing.assert_allclose(q95, [record["null_q95"] for record in cca.results()])
    assert [t.get_text() for t in ax.texts] == [f"p={record['p']:.3f}" for record in cca.results()]
    assert list(ax.get_xticks()) == [1, 2]


def test_decoded_maps_have_a_row_per_variate_with_both_ends_and_their_difference(frozen_heap):
    grid = Grid(4)
    minus, plus = blob_images(grid, [(30.0, -20.0, 40.0), (-30.0, 10.0, 20.0)])
    fig = plot_decoded_maps([(minus, plus)], ["CV1 (r = 0.80)"], step=2.0)
    rows = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    assert len(rows) == 3  # one variate: -2 SD, +2 SD, their difference
    assert rows[0].get_title(loc="left") == "CV1 (r = 0.80)"
    assert {"-2 SD", "+2 SD", "+2 minus -2 SD"} <= set(texts(fig))


# ------------------------------------------------------------------------ hierarchy (stage 05)
def test_hierarchy_draws_the_level_correlations_and_the_category_profiles():
    correlation = np.array([[0.9, 0.1, np.nan], [0.2, 0.7, np.nan]])
    profile = pd.DataFrame([[1.5, -0.5], [-1.0, 0.25]], index=["motor", "pain"], columns=["top_00", "top_01"])
    fig = plot_hierarchy(correlation, profile)
    left, right = fig.axes[0], fig.axes[1]
    drawn = left.images[0].get_array()
    np.testing.assert_array_equal(drawn.mask, np.isnan(correlation))  # a constant unit is left blank
    np.testing.assert_array_equal(drawn.filled(np.nan), correlation)
    assert left.images[0].get_clim() == (0, 1)
    np.testing.assert_array_equal(right.images[0].get_array(), profile.to_numpy())
    assert right.images[0].get_clim() == (-1.5, 1.5)
    assert [t.get_text() for t in right.get_yticklabels()] == ["motor", "pain"]
    assert (left.get_xlabel(), left.get_ylabel()) == ("lower-level unit (z_low)", "top-level unit")


# ------------------------------------------------------------------------ point cloud (stages 03, 06)
def test_metric_comparison_draws_each_methods_median_chamfer_and_emd_per_task():
    def summary(chamfer: float, emd: float) -> dict[str, float]:
        return {"chamfer_mm_median": chamfer, "emd_mm_median": emd, "chamfer_mm_mean": 0.0, "emd_mm_mean": 0.0}

    results = {
        "reconstruction": {"model": summary(8.0, 9.0), "nearest_training": summary(12.0, 14.0), "n_studies": 5},
        "conditional_generation": {"model": summary(15.0, 16.0), "category_pool": summary(14.0, 18.0)},
    }
    fig = plot_metric_comparison(results)
    assert len(fig.axes) == 2
    for ax, task, methods in zip(
        fig.axes,
        ("reconstruction", "conditional_generation"),
        (("model", "nearest_training"), ("model", "category_pool")),
    ):
        chamfer, emd = ax.containers
        assert [bar.get_width() for bar in chamfer] == [results[task][m]["chamfer_mm_median"] for m in methods]
        assert [bar.get_width() for bar in emd] == [results[task][m]["emd_mm_median"] for m in methods]
        assert [t.get_text() for t in ax.get_yticklabels()] == [m.replace("_", " ") for m in methods]
        assert ax.get_title() == f"{task.replace('_', ' ')} (test, median)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Chamfer", "EMD"]


def test_glass_brain_points_draw_every_set_of_every_study(frozen_heap):
    rng = np.random.default_rng(0)
    sets = {"input": rng.uniform(-40, 40, (2, 5, 3)), "reconstruction": rng.uniform(-40, 40, (2, 4, 3))}
    fig = plot_glass_brain_points(sets, ["study A", "study B"])
    assert len([ax for ax in fig.axes if ax.get_subplotspec() is not None]) == 2
    # Each of the three orthogonal views of each study shows each set's points.
    sizes = [len(c.get_offsets()) for ax in fig.axes for c in ax.collections]
    assert sizes == [5, 4] * 3 * 2
    assert {"study A", "study B"} <= set(texts(fig))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["input", "reconstruction"]


def test_3d_view_carries_every_point_with_its_set_label():
    rng = np.random.default_rng(1)
    sets = {"input": rng.uniform(-40, 40, (5, 3)), "reconstruction": rng.uniform(-40, 40, (3, 3))}
    html = view_points_3d(sets).get_standalone()
    info = json.loads(re.search(r"var connectomeInfo = (\{.*?\});\n", html).group(1))["connectome"]
    assert info["marker_labels"] == ["input"] * 5 + ["reconstruction"] * 3
    assert info["marker_color"] == ["#000000"] * 5 + ["#ff0000"] * 3
    assert info["title"] == "input (black) / reconstruction (red)"
    points = np.concatenate(list(sets.values()))
    for axis, key in enumerate(("_marker_x", "_marker_y", "_marker_z")):
        decoded = np.frombuffer(base64.b64decode(info[key]), dtype=np.float32)
        np.testing.assert_allclose(decoded, points[:, axis], rtol=1e-6)
