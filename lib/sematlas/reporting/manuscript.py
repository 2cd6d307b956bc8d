"""The manuscript's numbers, read from the stages' results objects, and its rendering.

Every number in ``manuscript/index.qmd`` is a Quarto variable, ``{{< var name >}}``.
:data:`VARIABLES` says where each comes from: a results file (a
:class:`~sematlas.reporting.sources.Source`, mostly a results class), the value read
from the loaded object (``lambda r: r.reconstruction.model.pearson_r_median``) and a
format. :func:`write_variables` writes them to ``manuscript/_variables.yml``; a file
a stage has not written yet shows as ``[stage NN not run]`` in the text, never as a
stale or typed-in number. Tables too long for variables are generated the same way
(:data:`TABLES`) and pulled in with Quarto's ``{{< include _name.md >}}``.

``python -m sematlas.reporting.manuscript render PROFILE`` (the last step of ``./run_all.sh``)
writes the variables, copies ``figures/<profile>/manuscript/`` into
``manuscript/figures/`` and renders with ``quarto render manuscript`` when Quarto is
installed; otherwise with pandoc (the ``pypandoc-binary`` wheel), after replacing
what only Quarto understands: ``include`` and ``var`` shortcodes become the files
and values they name, and
``@fig-``/``@tbl-`` cross-references become numbered links.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from sematlas.analysis.results import CCAResults, ClusteringResults, ForecastingResults, HierarchicalResults
from sematlas.core.io import atomic_path
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.paired import PairedComparison
from sematlas.evaluation.results import (
    EnsembleResults,
    EvaluationResults,
    PointCloudResults,
    VolumetricResults,
    YearDebiasing,
)
from sematlas.models.registry import DISENTANGLED_VARIANT, MAIN_VARIANT, REFERENCE_VARIANT
from sematlas.reporting.sources import MANIFEST, Source, results_file

_T = TypeVar("_T")


@dataclass(frozen=True)
class Variable(Generic[_T]):
    """Where one manuscript number comes from.

    Parameters
    ----------
    source : Source
        The file, which says the stage that writes it.
    value : callable
        Reads the number from the loaded file (``None`` shows as ``n/a``).
    fmt : str
        A format spec, e.g. ``".3f"``, ``",d"``, ``".0%"``; ``""`` for text.
    """

    source: Source[_T]
    value: Callable[[_T], Any]
    fmt: str = ".3f"


def _v(source: Source[_T], value: Callable[[_T], Any], fmt: str = ".3f") -> Variable[Any]:
    # A function, not the class: its source's type is inferred first, so each reader is type-checked.
    return Variable(source, value, fmt)


_CBVAE = results_file(VolumetricResults, variant=MAIN_VARIANT)
_BASELINE = results_file(VolumetricResults, variant=REFERENCE_VARIANT)
_TCVAE = results_file(VolumetricResults, variant=DISENTANGLED_VARIANT)
_POINTS = results_file(PointCloudResults)
_ENSEMBLE = results_file(EnsembleResults)
_HVAE = results_file(HierarchicalResults)
_CCA = results_file(CCAResults)
_CLUSTERS = results_file(ClusteringResults)
_FORECAST = results_file(ForecastingResults)
_EVAL = results_file(EvaluationResults)
_ATLAS = results_file(ConditionalAtlasResults)

#: Every number the manuscript may use, by variable name.
VARIABLES: dict[str, Variable[Any]] = {
    "profile": _v(MANIFEST, lambda m: m["profile"], ""),
    "neurosynth_version": _v(MANIFEST, lambda m: m["parameters"]["data"]["neurosynth_version"], ""),
    "last_year": _v(MANIFEST, lambda m: m["report"]["year_bin_edges"][-1], ".0f"),
    "n_studies": _v(MANIFEST, lambda m: m["n_studies"], ",d"),
    "n_peaks": _v(MANIFEST, lambda m: m["n_peaks"], ",d"),
    "n_peaks_raw": _v(MANIFEST, lambda m: m["report"]["deduplication"]["peaks_in"], ",d"),
    "n_duplicate_studies": _v(MANIFEST, lambda m: m["report"]["deduplication"]["studies_flagged_duplicate"], ",d"),
    "n_train": _v(MANIFEST, lambda m: m["report"]["splits"]["train"], ",d"),
    "n_val": _v(MANIFEST, lambda m: m["report"]["splits"]["val"], ",d"),
    "n_test": _v(MANIFEST, lambda m: m["report"]["splits"]["test"], ",d"),
    "subset_size": _v(MANIFEST, lambda m: m["report"]["subset_size"], ",d"),
    "subset_train": _v(MANIFEST, lambda m: m["report"]["subset_splits"]["train"], ",d"),
    "subset_test": _v(MANIFEST, lambda m: m["report"]["subset_splits"]["test"], ",d"),
    "n_sample_size_matched": _v(MANIFEST, lambda m: m["report"]["sample_size_matched"], ",d"),
    "voxel_size": _v(MANIFEST, lambda m: m["parameters"]["render"]["voxel_size"], "d"),
    "z_dim": _v(_CBVAE, lambda r: r.z_dim, "d"),
    "cbvae_epochs": _v(_CBVAE, lambda r: r.training.epochs, "d"),
    "cbvae_recon_r": _v(_CBVAE, lambda r: r.reconstruction.model.pearson_r_median),
    "cbvae_recon_ssim": _v(_CBVAE, lambda r: r.reconstruction.model.ssim_median),
    "pca_recon_r": _v(_CBVAE, lambda r: r.reconstruction.pca.pearson_r_median),
    "mean_map_recon_r": _v(_CBVAE, lambda r: r.reconstruction.mean_map.pearson_r_median),
    "cbvae_beats_pca": _v(_CBVAE, lambda r: r.reconstruction.model_beats_pca_fraction, ".0%"),
    "cbvae_minus_pca": _v(_CBVAE, lambda r: _paired(r.reconstruction.vs_pca), ""),
    "bootstrap_resamples": _v(_CBVAE, lambda r: r.reconstruction.vs_pca.n_resamples, ",d"),
    "bootstrap_confidence": _v(_CBVAE, lambda r: r.reconstruction.vs_pca.confidence, ".0%"),
    "baseline_recon_r": _v(_BASELINE, lambda r: r.reconstruction.model.pearson_r_median),
    "tcvae_recon_r": _v(_TCVAE, lambda r: r.reconstruction.model.pearson_r_median),
    "tcvae_active_units": _v(_TCVAE, lambda r: r.active_units, "d"),
    "cbvae_active_units": _v(_CBVAE, lambda r: r.active_units, "d"),
    "cbvae_generation_r": _v(_CBVAE, lambda r: r.conditional_generation.model.pearson_r_median),
    "ridge_generation_r": _v(_CBVAE, lambda r: r.conditional_generation.ridge.pearson_r_median),
    "mean_map_generation_r": _v(_CBVAE, lambda r: r.conditional_generation.mean_map.pearson_r_median),
    "cbvae_minus_ridge": _v(_CBVAE, lambda r: _paired(r.conditional_generation.vs_ridge), ""),
    "cbvae_minus_mean_map_generation": _v(_CBVAE, lambda r: _paired(r.conditional_generation.vs_mean_map), ""),
    "mlp_generation_r": _v(_CBVAE, lambda r: r.conditional_generation.mlp.pearson_r_median),
    "cbvae_minus_mlp": _v(_CBVAE, lambda r: _paired(r.conditional_generation.vs_mlp), ""),
    "estimator_studies": _v(_CBVAE, lambda r: r.conditional_generation.estimators.n_studies, "d"),
    "estimator_samples": _v(_CBVAE, lambda r: r.conditional_generation.estimators.n_samples, "d"),
    "estimator_prior_mean_r": _v(_CBVAE, lambda r: r.conditional_generation.estimators.prior_mean_r_median),
    "estimator_sample_average_r": _v(_CBVAE, lambda r: r.conditional_generation.estimators.sample_average_r_median),
    "category_n": _v(_ATLAS, lambda r: len(r.category_level.categories), "d"),
    "category_min_test": _v(_ATLAS, lambda r: r.category_level.min_test_studies, "d"),
    "category_model_r": _v(_ATLAS, lambda r: r.category_level.model.median_r),
    "category_mkda_r": _v(_ATLAS, lambda r: r.category_level.mkda.median_r),
    "category_training_mean_r": _v(_ATLAS, lambda r: r.category_level.training_mean.median_r),
    "category_average_r": _v(_ATLAS, lambda r: r.category_level.sample_average.median_r),
    "category_average_n": _v(_ATLAS, lambda r: r.category_level.max_averaged, "d"),
    "category_average_minus_mkda": _v(_ATLAS, lambda r: _paired(r.category_level.sample_average_vs_mkda), ""),
    "category_average_id": _v(_ATLAS, lambda r: r.category_level.sample_average.identification_accuracy, ".0%"),
    "category_model_minus_mkda": _v(_ATLAS, lambda r: _paired(r.category_level.vs_mkda), ""),
    "category_model_id": _v(_ATLAS, lambda r: r.category_level.model.identification_accuracy, ".0%"),
    "category_mkda_id": _v(_ATLAS, lambda r: r.category_level.mkda.identification_accuracy, ".0%"),
    "category_training_mean_id": _v(_ATLAS, lambda r: r.category_level.training_mean.identification_accuracy, ".0%"),
    "counterfactual_generated": _v(_ATLAS, lambda r: r.counterfactual_size.generated),
    "counterfactual_held_out": _v(_ATLAS, lambda r: r.counterfactual_size.held_out),
    "cas_model": _v(_ATLAS, lambda r: r.classification_accuracy_score.model),
    "cas_ridge": _v(_ATLAS, lambda r: r.classification_accuracy_score.ridge),
    "cas_real": _v(_ATLAS, lambda r: r.classification_accuracy_score.real),
    "cas_chance": _v(_ATLAS, lambda r: r.classification_accuracy_score.chance),
    "year_balanced_accuracy": _v(_CBVAE, lambda r: _year(r).balanced_accuracy),
    "year_chance": _v(_CBVAE, lambda r: _year(r).chance),
    "points_recon_chamfer": _v(_POINTS, lambda r: r.reconstruction.model.chamfer_mm_median, ".1f"),
    "points_recon_emd": _v(_POINTS, lambda r: r.reconstruction.model.emd_mm_median, ".1f"),
    "points_nearest_chamfer": _v(_POINTS, lambda r: r.reconstruction.nearest_training_study.chamfer_mm_median, ".1f"),
    "points_nearest_emd": _v(_POINTS, lambda r: r.reconstruction.nearest_training_study.emd_mm_median, ".1f"),
    "points_floor_chamfer": _v(_POINTS, lambda r: r.reconstruction.resample_noise_floor.chamfer_mm_mean, ".1f"),
    "points_beats_nearest": _v(_POINTS, lambda r: r.reconstruction.model_beats_nearest_training_fraction, ".0%"),
    "points_generation_chamfer": _v(_POINTS, lambda r: r.conditional_generation.model.chamfer_mm_median, ".1f"),
    "points_pool_chamfer": _v(_POINTS, lambda r: r.conditional_generation.category_pool.chamfer_mm_median, ".1f"),
    "ece_snapshot_before": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ece_test_before),
    "ece_snapshot_after": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ece_test_after),
    "ece_mc_before": _v(_ENSEMBLE, lambda r: r.methods["mc_dropout"].ece_test_before),
    "ece_mc_after": _v(_ENSEMBLE, lambda r: r.methods["mc_dropout"].ece_test_after),
    "ece_goal": _v(_ENSEMBLE, lambda r: r.goals.ece_below, ".2f"),
    "ood_goal": _v(_ENSEMBLE, lambda r: r.goals.ood_auroc_above, ".2f"),
    "ood_uniform": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc["uniform"], ".2f"),
    "ood_white_matter": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc["white_matter"], ".2f"),
    "ood_synthetic": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc["nimare_synthetic"], ".2f"),
    "ood_nll_uniform": _v(_ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc_predictive_nll["uniform"], ".2f"),
    "ood_nll_white_matter": _v(
        _ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc_predictive_nll["white_matter"], ".2f"
    ),
    "ood_nll_synthetic": _v(
        _ENSEMBLE, lambda r: r.methods["snapshot"].ood_auroc_predictive_nll["nimare_synthetic"], ".2f"
    ),
    "hvae_gate": _v(_HVAE, lambda r: r.gate.result, ""),
    "hvae_kl_top": _v(_HVAE, lambda r: r.kl_per_level.kl_top, ".2f"),
    "hvae_kl_lower": _v(_HVAE, lambda r: r.kl_per_level.kl_lower, ".2f"),
    "hvae_kl_threshold": _v(_HVAE, lambda r: r.gate.criteria["kl_top_active"]["threshold"], ".2f"),
    "hvae_recon_r": _v(_HVAE, lambda r: r.gate.criteria["reconstruction"]["value"]),
    "hvae_recon_threshold": _v(_HVAE, lambda r: r.gate.criteria["reconstruction"]["threshold"]),
    "hvae_probe": _v(_HVAE, lambda r: r.gate.criteria["top_level_probe"]["value"]),
    "hvae_probe_threshold": _v(_HVAE, lambda r: r.gate.criteria["top_level_probe"]["threshold"]),
    "cca_n_studies": _v(_CCA, lambda r: r.n_studies, ",d"),
    "cca_permutations": _v(_CCA, lambda r: r.n_permutations, ",d"),
    "cca_r1": _v(_CCA, lambda r: r.components[0].r),
    "cca_p1": _v(_CCA, lambda r: r.components[0].p),
    "cca_r2": _v(_CCA, lambda r: r.components[1].r),
    "cca_p2": _v(_CCA, lambda r: r.components[1].p),
    "n_clusters": _v(_CLUSTERS, lambda r: r.n_clusters, "d"),
    "cluster_noise": _v(_CLUSTERS, lambda r: r.noise_fraction, ".0%"),
    "cluster_ari": _v(_CLUSTERS, lambda r: r.ari_mean, ".2f"),
    "cluster_ari_sd": _v(_CLUSTERS, lambda r: r.ari_sd, ".2f"),
    "cluster_studies": _v(_CLUSTERS, lambda r: r.n_studies, ",d"),
    "forecast_cutoff": _v(_FORECAST, lambda r: r.cutoff_year, "d"),
    "frechet_gru": _v(_FORECAST, lambda r: r.frechet_mean["gru"], ".2f"),
    "frechet_persistence": _v(_FORECAST, lambda r: r.frechet_mean["persistence"], ".2f"),
    "frechet_trend": _v(_FORECAST, lambda r: r.frechet_mean["linear_trend"], ".2f"),
    "prd_cbvae_precision": _v(_EVAL, lambda r: r.generative_quality.methods[MAIN_VARIANT]["precision"], ".2f"),
    "prd_cbvae_recall": _v(_EVAL, lambda r: r.generative_quality.methods[MAIN_VARIANT]["recall"], ".2f"),
    "prd_mixture_precision": _v(
        _EVAL, lambda r: r.generative_quality.methods[f"{MAIN_VARIANT}_mixture"]["precision"], ".2f"
    ),
    "prd_mixture_recall": _v(_EVAL, lambda r: r.generative_quality.methods[f"{MAIN_VARIANT}_mixture"]["recall"], ".2f"),
    "prd_standard_normal_recall": _v(
        _EVAL, lambda r: r.generative_quality.methods[f"{MAIN_VARIANT}_standard_normal"]["recall"], ".2f"
    ),
    "prd_reconstruction_recall": _v(
        _EVAL, lambda r: r.generative_quality.methods[f"{MAIN_VARIANT}_reconstruction"]["recall"], ".2f"
    ),
    "prd_ppca_precision": _v(_EVAL, lambda r: r.generative_quality.methods["ppca"]["precision"], ".2f"),
    "prd_ppca_recall": _v(_EVAL, lambda r: r.generative_quality.methods["ppca"]["recall"], ".2f"),
    "probe_n_analyses": _v(_EVAL, lambda r: r.zero_shot_probe.n_analyses, ",d"),
    "probe_n_in_neurosynth": _v(_EVAL, lambda r: r.zero_shot_probe.n_in_neurosynth, ",d"),
    "probe_cbvae": _v(_EVAL, lambda r: r.zero_shot_probe.features[MAIN_VARIANT]["balanced_accuracy"], ".2f"),
    "probe_pca": _v(_EVAL, lambda r: r.zero_shot_probe.features["pca"]["balanced_accuracy"], ".2f"),
    "probe_raw": _v(_EVAL, lambda r: r.zero_shot_probe.features["raw_voxels"]["balanced_accuracy"], ".2f"),
    "ablation_n": _v(_EVAL, lambda r: r.ablations.n_ablations, "d"),
    "ablation_n_pass": _v(_EVAL, lambda r: r.ablations.n_pass, "d"),
    "ablation_epochs": _v(_EVAL, lambda r: r.ablations.max_epochs, "d"),
    "ablation_locked_r": _v(_EVAL, lambda r: r.ablations.locked["reconstruction_r"]),
    "ablation_locked_beats_pca": _v(_EVAL, lambda r: r.ablations.locked["beats_pca"], ".0%"),
}


def _paired(comparison: PairedComparison) -> str:
    """A median difference with its paired bootstrap interval, as the text quotes it."""
    low, high = comparison.median_difference_ci
    return f"{comparison.median_difference:+.3f} (95% CI {low:+.3f} to {high:+.3f})"


def _year(results: VolumetricResults) -> YearDebiasing:
    """The year adversary's results; a model without a year head has none to quote."""
    if results.year_debiasing is None:
        raise KeyError("year_debiasing")
    return results.year_debiasing


_VAR = re.compile(r"\{\{<\s*var\s+([A-Za-z0-9_.-]+)\s*>\}\}")
_INCLUDE = re.compile(r"\{\{<\s*include\s+([A-Za-z0-9_.-]+)\s*>\}\}")


def ablation_table(paths: ProfilePaths) -> str:
    """The ablation protocol of stage 09 as a Markdown pipe table with a caption (``@tbl-ablations``)."""
    path = _EVAL.locate(paths)
    caption = (
        ": The ablation protocol. Each row changes one parameter of the locked conditional model; the "
        "criterion was declared before the run; values are the criterion's metric on held-out studies; "
        "the last column is the per-study win rate against PCA. {#tbl-ablations}"
    )
    if not path.is_file():
        return f"[stage {_EVAL.writer(paths).number} not run]\n\n{caption}\n"
    ablations = _EVAL.read(path).ablations
    lines = [
        "| ablation | change | criterion | locked | ablated | verdict | beats PCA |",
        "|:--|:--|:--|--:|--:|:--|--:|",
    ]
    for name in ablations.order:
        row = ablations.ablations[name]
        cells = [
            f"`{name}`",
            f"`{row['change']}`",
            row["criterion"].replace("_", "\\_"),
            f"{row['locked']:.3f}",
            f"{row['ablated']:.3f}",
            f"**{row['verdict']}**",
            f"{row['beats_pca']:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{caption}\n"


#: Generated Markdown files of the manuscript folder: name -> writer.
TABLES = {"_ablations.md": ablation_table}


def write_tables(paths: ProfilePaths, manuscript: Path) -> list[Path]:
    """Write every table of :data:`TABLES` into the manuscript folder, atomically."""
    written = []
    for name, make in TABLES.items():
        with atomic_path(manuscript / name) as tmp:
            tmp.write_text(
                "<!-- Written by sematlas.reporting.manuscript from the results files; do not edit. -->\n\n"
                + make(paths)
            )
        written.append(manuscript / name)
    return written


def expand_includes(text: str, folder: Path) -> str:
    """Replace Quarto's ``{{< include name >}}`` shortcodes by the named files of ``folder``."""
    return _INCLUDE.sub(lambda m: (folder / m.group(1)).read_text(), text)


def collect_variables(paths: ProfilePaths) -> dict[str, str]:
    """Every variable of :data:`VARIABLES`, formatted, from the profile's results files.

    Parameters
    ----------
    paths : ProfilePaths

    Returns
    -------
    dict
        Name -> text. A file not written yet gives ``"[stage NN not run]"``.

    Raises
    ------
    ResultsError
        A file that exists but does not load as its results class (naming the file and the key).
    KeyError
        A file that loads but lacks what a variable reads (naming the variable and the file), e.g. a
        second canonical component the manuscript quotes: the variable table and the stage disagree,
        which must not pass silently.
    """
    loaded: dict[Path, Any] = {}
    values = {}
    for name, variable in VARIABLES.items():
        path = variable.source.locate(paths)
        if not path.is_file():
            values[name] = f"[stage {variable.source.writer(paths).number} not run]"
            continue
        if path not in loaded:
            loaded[path] = variable.source.read(path)
        try:
            value = variable.value(loaded[path])
        except (KeyError, IndexError) as error:
            raise KeyError(f"manuscript variable {name!r}: {path} has no such value ({error!r})") from error
        values[name] = "n/a" if value is None else format(value, variable.fmt)
    return values


def write_variables(paths: ProfilePaths, manuscript: Path) -> Path:
    """Write ``_variables.yml`` for Quarto's ``var`` shortcode, atomically."""
    target = manuscript / "_variables.yml"
    with atomic_path(target) as tmp:
        tmp.write_text(
            "# Written by sematlas.reporting.manuscript from the results files; do not edit.\n"
            + yaml.safe_dump(collect_variables(paths), sort_keys=True, allow_unicode=True)
        )
    return target


def used_variables(text: str) -> list[str]:
    """Names of the ``{{< var name >}}`` shortcodes in a document, in order."""
    return _VAR.findall(text)


def to_pandoc_markdown(text: str, values: Mapping[str, str]) -> str:
    """Replace what only Quarto understands: ``var`` shortcodes and figure/table cross-references.

    Parameters
    ----------
    text : str
        The ``.qmd`` source.
    values : mapping
        Variable name -> text.

    Returns
    -------
    str
        Pandoc Markdown: each ``@fig-x`` becomes a link "Figure N" to its figure,
        numbered in order of appearance of ``{#fig-x}``, and likewise for ``@tbl-``.

    Raises
    ------
    KeyError
        A shortcode naming an unknown variable, or a reference to an undefined label.
    """
    unknown = [name for name in used_variables(text) if name not in values]
    if unknown:
        raise KeyError(f"index.qmd uses unknown variable(s): {', '.join(unknown)}")
    text = _pandoc_front_matter(_VAR.sub(lambda m: values[m.group(1)], text))
    numbers: dict[str, str] = {}
    for kind, word in (("fig", "Figure"), ("tbl", "Table")):
        labels = re.findall(rf"\{{#({kind}-[A-Za-z0-9_-]+)", text)
        numbers.update({label: f"{word} {k}" for k, label in enumerate(dict.fromkeys(labels), start=1)})

    def reference(match: re.Match[str]) -> str:
        label = match.group(1)
        if label not in numbers:
            raise KeyError(f"index.qmd refers to undefined label @{label}")
        return f"[{numbers[label]}](#{label})"

    return re.sub(r"(?<![\w{#])@((?:fig|tbl)-[A-Za-z0-9_-]+)", reference, text)


def _pandoc_front_matter(text: str) -> str:
    """Quarto's front matter in pandoc's terms: author maps become names, ``last-modified`` a date."""
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    if not match:
        return text
    meta = yaml.safe_load(match.group(1))
    meta["author"] = [a["name"] if isinstance(a, Mapping) else a for a in meta.get("author", [])]
    if meta.get("date") in ("last-modified", "today"):
        meta["date"] = datetime.date.today().isoformat()
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + text[match.end() :]


def render(profile: str, root: Path | None = None, use_quarto: bool | None = None) -> Path:
    """Write the variables, copy the figures, and render the manuscript to HTML.

    Parameters
    ----------
    profile : str
        Whose results and figures the manuscript reports.
    root : Path, optional
        Project root (found from the working directory when omitted).
    use_quarto : bool, optional
        Default: when ``quarto`` is on the PATH.

    Returns
    -------
    Path
        The rendered ``manuscript/_output/index.html``.
    """
    paths = ProfilePaths.for_profile(profile, root)
    manuscript = paths.root / "manuscript"
    write_variables(paths, manuscript)
    write_tables(paths, manuscript)
    figures = manuscript / "figures"
    if figures.exists():
        shutil.rmtree(figures)
    source_figures = paths.figures / "manuscript"
    if source_figures.is_dir():
        shutil.copytree(source_figures, figures)
    output = manuscript / "_output"
    output.mkdir(exist_ok=True)
    if use_quarto if use_quarto is not None else shutil.which("quarto"):
        subprocess.run(["quarto", "render", str(manuscript), "--to", "html"], check=True)
        return output / "index.html"
    return render_with_pandoc(manuscript, output / "index.html")


def render_with_pandoc(manuscript: Path, target: Path) -> Path:
    """The fallback: pandoc renders ``index.qmd`` (Quarto syntax replaced) to one self-contained HTML file.

    Raises
    ------
    FileNotFoundError
        ``_variables.yml`` or an included table missing (run :func:`write_variables`
        and :func:`write_tables` first).
    """
    import pypandoc

    values = yaml.safe_load((manuscript / "_variables.yml").read_text())
    markdown = to_pandoc_markdown(expand_includes((manuscript / "index.qmd").read_text(), manuscript), values)
    with atomic_path(target) as tmp:
        pypandoc.convert_text(
            markdown,
            "html5",
            format="markdown",
            outputfile=str(tmp),
            extra_args=[
                "--standalone",
                "--embed-resources",
                "--citeproc",
                "--toc",
                f"--bibliography={manuscript / 'references.bib'}",
                f"--resource-path={manuscript}",
                "--metadata=link-citations:true",
            ],
            cworkdir=str(manuscript),
        )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sematlas.reporting.manuscript", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("render", help="write the variables and render manuscript/ to HTML")
    run.add_argument("profile")
    run.add_argument("--pandoc", action="store_true", help="use the pandoc fallback even where Quarto is installed")
    run.add_argument("--strict", action="store_true", help="fail when a stage the text quotes has not run")
    args = parser.parse_args(argv)
    target = render(args.profile, use_quarto=False if args.pandoc else None)
    print(f"[sematlas] manuscript rendered for profile '{args.profile}': {target}")
    values = yaml.safe_load((target.parent.parent / "_variables.yml").read_text())
    missing = sorted(
        name
        for name in used_variables((target.parent.parent / "index.qmd").read_text())
        if str(values[name]).startswith("[stage")
    )
    if missing:
        print(f"[sematlas] numbers whose stage has not run: {', '.join(missing)}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
