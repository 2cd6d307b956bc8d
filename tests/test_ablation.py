"""The ablation protocol: declared files, one change each, criteria and the table of verdicts."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sematlas.analysis.ablation import (
    METRICS,
    Ablation,
    Criterion,
    ablation_metrics,
    ablation_summary,
    ablation_table,
    ablations_dir,
    load_ablation,
    protocol_params,
)
from sematlas.core.params import PROFILES, ParameterError, load_params, override_params

VALID = {
    "hypothesis": "Sixteen units are too few.",
    "change": {"model": {"z_dim": 16}},
    "criterion": {"metric": "reconstruction_r", "direction": "decrease", "margin": 0.01},
}


def _write_ablation(project, name, spec):
    folder = project / "params" / "ablations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def _flatten(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, Mapping) and key != "task_categories":
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# ---- the shipped files ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_every_listed_ablation_has_a_valid_file(profile):
    params = load_params(profile)
    for name in params["ablation"]["names"]:
        assert load_ablation(name, params).name == name


@pytest.mark.parametrize("profile", PROFILES)
def test_each_listed_ablation_changes_exactly_one_parameter_of_the_locked_configuration(profile):
    locked = load_params(profile)
    before = dict(_flatten(locked))
    for name in locked["ablation"]["names"]:
        ablation = load_ablation(name, locked)
        after = dict(_flatten(ablation.apply(locked)))
        changed = [key for key in before if before[key] != after[key]]
        assert changed == [ablation.key], name
        assert after[ablation.key] == ablation.value
        assert ablation.criterion.metric in METRICS


def test_cpu_full_runs_every_protocol_file_and_quick_at_most_two():
    files = {path.stem for path in (Path(__file__).resolve().parents[1] / "params" / "ablations").glob("*.yaml")}
    # Every file but the latent size the locked model already has (z_dim_32 is the gpu profile's ablation).
    assert set(load_params("cpu-full")["ablation"]["names"]) == files - {"z_dim_32"}
    quick = load_params("quick")["ablation"]["names"]
    assert 1 <= len(quick) <= 2 and set(quick) <= files
    assert all((ablations_dir() / f"{name}.yaml").is_file() for name in load_params("gpu")["ablation"]["names"])


def test_protocol_budget_applies_to_every_run_without_touching_the_locked_params():
    params = load_params("ci")
    original = copy.deepcopy(params)
    budgeted = protocol_params(params)
    assert budgeted["training"]["max_epochs"] == params["ablation"]["max_epochs"]
    assert params == original


# ---- validation errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(hypotesis="typo"), r"unknown key 'hypotesis'"),
        (lambda s: s.pop("criterion"), r"missing key 'criterion'"),
        (lambda s: s["criterion"].update(metric="r2"), r"unknown criterion\.metric 'r2'"),
        (lambda s: s["criterion"].update(direction="up"), r"criterion\.direction must be one of"),
        (lambda s: s["criterion"].update(margin=-0.1), r"criterion\.margin must be a number >= 0"),
        (lambda s: s["change"]["model"].update(dropout=0.1), r"must set exactly one parameter"),
        (lambda s: s.update(change={"model": {"z_dims": 16}}), r"unknown parameter 'model\.z_dims'"),
        (lambda s: s.update(change={"training": {"max_epochs": 50}}), r"got 'training\.max_epochs'"),
        (lambda s: s.update(change={"clustering": {"min_samples": 2}}), r"got 'clustering\.min_samples'"),
        (lambda s: s.update(change={"model": {"z_dim": 8}}), r"locked value 8: nothing is ablated"),
        (lambda s: s.update(change={"model": {"z_dim": "16"}}), r"'model\.z_dim' must be int"),
    ],
)
def test_bad_ablation_files_fail_naming_the_file_and_the_key(project, edit, message):
    spec = copy.deepcopy(VALID)
    edit(spec)
    _write_ablation(project, "bad", spec)
    params = load_params("ci", project)
    with pytest.raises(ParameterError, match=message) as error:
        load_ablation("bad", params, project)
    assert "bad.yaml" in str(error.value)


def test_missing_ablation_file_lists_the_known_ones(project):
    _write_ablation(project, "z_dim_16_copy", VALID)
    with pytest.raises(ParameterError, match=r"ablation file not found: .*nope\.yaml .*z_dim_16_copy"):
        load_ablation("nope", load_params("ci", project), project)


def test_override_params_names_the_source_of_an_unknown_key(tmp_path):
    params = load_params("ci")
    with pytest.raises(ParameterError, match=r"extra\.yaml: unknown parameter 'render\.fwhm'"):
        override_params(params, {"render": {"fwhm": [6.0]}}, tmp_path / "extra.yaml")


# ---- criteria and the table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "ablated", "holds"),
    [
        ("decrease", 0.20, True),
        ("decrease", 0.25, False),  # a fall of exactly the margin is not more than it
        ("decrease", 0.60, False),
        ("increase", 0.80, True),
        ("increase", 0.75, False),
        ("no_increase", 0.75, True),
        ("no_increase", 0.30, True),
        ("no_increase", 0.80, False),
    ],
)
def test_criterion_directions(direction, ablated, holds):
    # Values exact in binary, so the boundary cases test the comparison, not rounding.
    assert Criterion("reconstruction_r", direction, 0.25).holds(0.50, ablated) is holds


def test_criterion_threshold_and_description():
    assert Criterion("beats_pca", "decrease", 0.05).threshold == -0.05
    assert Criterion("beats_pca", "no_increase", 0.05).threshold == 0.05
    assert Criterion("generation_r", "increase", 0.01).describe() == "generation_r rises by more than 0.01"


def _results(r, ssim, beats, gen, year, units):
    return {
        "reconstruction": {"model": {"pearson_r_median": r, "ssim_median": ssim}, "model_beats_pca_fraction": beats},
        "conditional_generation": {"model": {"pearson_r_median": gen}},
        "year_debiasing": {"balanced_accuracy": year},
        "active_units": units,
    }


def test_ablation_metrics_read_stage_02_results():
    metrics = ablation_metrics(_results(0.46, 0.62, 0.75, 0.07, 0.12, 32))
    assert metrics == {
        "reconstruction_r": 0.46,
        "reconstruction_ssim": 0.62,
        "beats_pca": 0.75,
        "generation_r": 0.07,
        "year_balanced_accuracy": 0.12,
        "active_units": 32.0,
    }


def test_plot_ablations_colours_verdicts_and_marks_thresholds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sematlas.reporting.plotting import plot_ablations

    table = pd.DataFrame(
        {
            "ablation": ["z_dim_16", "no_grl"],
            "criterion": ["reconstruction_r falls by more than 0.01", "year_balanced_accuracy rises by more than 0.02"],
            "delta": [-0.06, 0.01],
            "threshold": [-0.01, 0.02],
            "verdict": ["PASS", "FAIL"],
            "beats_pca": [0.55, 0.80],
            "beats_pca_delta": [-0.20, 0.05],
        }
    )
    fig = plot_ablations(table)
    left, right = fig.axes
    bars = [patch for container in left.containers for patch in container]
    assert [round(b.get_width(), 3) for b in bars] == [-0.06, 0.01]
    assert [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars] == ["#2ca02c", "#7f7f7f"]
    assert list(left.collections[0].get_offsets()[:, 0]) == [-0.01, 0.02]
    assert right.lines[0].get_xdata()[0] == pytest.approx(0.75)  # the locked model's win rate
    plt.close(fig)


def test_ablation_table_gives_deltas_and_verdicts(tmp_path):
    params = load_params("quick")
    locked = {"metrics": ablation_metrics(_results(0.46, 0.62, 0.75, 0.07, 0.12, 32)), "training": {"max_epochs": 12}}
    small = Ablation(
        "z_dim_16", "too few", {"model": {"z_dim": 16}}, Criterion("reconstruction_r", "decrease", 0.01), tmp_path
    )
    grl = Ablation(
        "no_grl",
        "year leaks",
        {"training": {"grl_max_lambda": 0.0}},
        Criterion("year_balanced_accuracy", "increase", 0.02),
        tmp_path,
    )
    runs = {
        "z_dim_16": {"metrics": ablation_metrics(_results(0.40, 0.60, 0.55, 0.07, 0.12, 16)), "training": {}},
        "no_grl": {"metrics": ablation_metrics(_results(0.47, 0.62, 0.80, 0.07, 0.13, 32)), "training": {}},
    }
    for run in runs.values():
        run["training"]["train_seconds"] = 60.0
    table = ablation_table(params, locked, runs, [small, grl])
    assert list(table["ablation"]) == ["z_dim_16", "no_grl"]
    assert list(table["verdict"]) == ["PASS", "FAIL"]
    assert table.loc[0, "change"] == "model.z_dim: 32 -> 16"
    assert table.loc[1, "change"] == "training.grl_max_lambda: 1.0 -> 0.0"
    assert table.loc[0, "delta"] == pytest.approx(-0.06)
    assert table.loc[0, "beats_pca_delta"] == pytest.approx(-0.20)
    assert table.loc[1, "delta"] == pytest.approx(0.01)
    assert table.loc[1, "threshold"] == pytest.approx(0.02)
    summary = ablation_summary(locked, table)
    assert (summary["n_ablations"], summary["n_pass"], summary["max_epochs"]) == (2, 1, 12)
    assert summary["ablations"]["z_dim_16"]["verdict"] == "PASS"
    assert summary["order"] == ["z_dim_16", "no_grl"]
    assert summary["locked"] == locked["metrics"]
    assert summary["ablations"]["no_grl"]["delta"] == pytest.approx(0.01)
