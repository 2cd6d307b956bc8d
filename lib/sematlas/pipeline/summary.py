"""What a run produced, in a few lines: the headline results against their baselines and each stage's wall time.

``python -m sematlas.pipeline summary PROFILE`` (the last thing ``./run_all.sh``
prints) reads the results files the stages wrote and names each row's file:

- reconstruction of held-out maps (stage 02, and stage 05's ``hvae``): each
  model's median Pearson r against PCA at its latent size and the training mean
  map, and the share of test studies where it beats PCA;
- maps generated from metadata alone (same files): the model against ridge
  regression from the metadata and the mean map;
- the point-cloud model (stage 03): median Chamfer distance against the nearest
  training study (reconstruction) and the category's pooled peaks (generation);
- samples (stage 09): Fréchet distance to the held-out maps of every model,
  probabilistic PCA and real training maps.

A file that is missing or unreadable is said so in its row. Wall times are
those the runner recorded (:func:`record_wall_time`) in
``notebooks/executed/<profile>/stage_times.json``, beside the completion stamps:
a fact about a run, not a result, it lies outside every folder a stage owns, so
no stage's freshness or output digest depends on it, and the release, which
copies every JSON under ``data/results/<profile>/``, stays the same for the
same results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sematlas.core.io import read_json, write_json
from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.core.results import StageResults
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.paired import PairedComparison
from sematlas.evaluation.results import EvaluationResults, PointCloudResults, VolumetricResults
from sematlas.models.registry import HIERARCHICAL_VARIANT
from sematlas.pipeline.registry import STAGES, UnknownStage, writer_of

#: The runner's record of stage wall times, in ``notebooks/executed/<profile>/``.
STAGE_TIMES = "stage_times.json"

_R = TypeVar("_R", bound=StageResults)


@dataclass(frozen=True)
class Section:
    """One block of the summary: a title over column names, then one row per model (cells as text)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _relative(path: Path, paths: ProfilePaths) -> str:
    return path.relative_to(paths.root).as_posix()


# ---- stage wall times ------------------------------------------------------------------------------


def stage_times_path(paths: ProfilePaths) -> Path:
    return paths.executed / STAGE_TIMES


def stage_times(paths: ProfilePaths) -> dict[str, dict[str, Any]]:
    """Stage stem -> ``{"wall_seconds": s, "finished": "YYYY-MM-DD HH:MM:SS"}``; empty before any run.

    An unreadable file (cut short by a crash of old) counts as empty: it is rewritten by the next stage.
    """
    try:
        times = read_json(stage_times_path(paths))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return times if isinstance(times, dict) else {}


def record_wall_time(paths: ProfilePaths, stem: str, seconds: float) -> Path:
    """Add (or replace) one stage's wall time in the record, keeping the other stages' entries.

    Written atomically, so a run killed while writing leaves the previous record whole.
    """
    times = stage_times(paths)
    times[stem] = {"wall_seconds": round(float(seconds), 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return write_json(times, stage_times_path(paths))


def _clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def _times_section(paths: ProfilePaths) -> Section:
    times = {stem: entry for stem, entry in stage_times(paths).items() if stem in {s.stem for s in STAGES}}
    rows = [
        (stage.stem, _clock(times[stage.stem]["wall_seconds"]), times[stage.stem]["finished"])
        if stage.stem in times
        else (stage.stem, "-", "no run recorded")
        for stage in STAGES
    ]
    total = sum(entry["wall_seconds"] for entry in times.values())
    rows.append(("total" if len(times) == len(STAGES) else f"total of {len(times)}", _clock(total), ""))
    title = f"wall time per stage, from {_relative(stage_times_path(paths), paths)}"
    return Section(title, ("stage", "wall", "finished"), tuple(rows))


# ---- headline results ------------------------------------------------------------------------------


def _load(cls: type[_R], paths: ProfilePaths, **names: str) -> tuple[_R | None, str]:
    """The results file of ``cls`` and its name, or None and the reason it could not be read."""
    path = cls.path(paths, **names)
    name = _relative(path, paths)
    if not path.is_file():
        try:
            writer = f"stage {writer_of(path, paths).stem} has not written it"
        except UnknownStage:
            writer = "no stage writes it"
        return None, f"missing: {name} ({writer})"
    try:
        return cls.load(path), name
    except (KeyError, TypeError, ValueError) as error:  # ResultsError and bad JSON are ValueErrors
        return None, f"unreadable: {name} ({type(error).__name__}: {error})"


def _r(value: float) -> str:
    return f"{value:.3f}"


def _difference(comparison: PairedComparison) -> str:
    low, high = comparison.median_difference_ci
    return f"{comparison.median_difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def _share(value: float) -> str:
    return f"{value:.0%}"


def _mm(value: float) -> str:
    return f"{value:.1f}"


def _rows(
    names: Sequence[str], load: Callable[[str], tuple[_R | None, str]], cells: Callable[[_R], tuple[str, ...]]
) -> tuple[list[_R], tuple[tuple[str, ...], ...]]:
    """The results read and one row per name: its cells and its file, or the reason the file is missing."""
    found, rows = [], []
    for name in names:
        results, file = load(name)
        if results is not None:
            found.append(results)
        rows.append((name, *cells(results), file) if results is not None else (name, file))
    return found, tuple(rows)


def _volumetric_sections(paths: ProfilePaths, variants: Sequence[str]) -> list[Section]:
    def load(variant: str) -> tuple[VolumetricResults | None, str]:
        return _load(VolumetricResults, paths, variant=variant)

    def reconstruction(results: VolumetricResults) -> tuple[str, ...]:
        task = results.reconstruction
        return (
            _r(task.model.pearson_r_median),
            _r(task.pca.pearson_r_median),
            _difference(task.vs_pca),
            _r(task.mean_map.pearson_r_median),
            _share(task.model_beats_pca_fraction),
        )

    def generation(results: VolumetricResults) -> tuple[str, ...]:
        task = results.conditional_generation
        return (
            _r(task.model.pearson_r_median),
            _r(task.ridge.pearson_r_median),
            _difference(task.vs_ridge),
            _r(task.mlp.pearson_r_median),
            _difference(task.vs_mlp),
            _r(task.mean_map.pearson_r_median),
        )

    found, recon_rows = _rows(variants, load, reconstruction)
    _, generation_rows = _rows(variants, load, generation)
    # One split for every variant; results of an older run on another split would show two counts.
    studies = f"{' or '.join(map(str, sorted({r.n_studies for r in found})))} " if found else ""
    return [
        Section(
            f"reconstruction of {studies}held-out maps, median r (model - PCA: paired bootstrap 95% CI;"
            " beats PCA: share of the studies)",
            ("variant", "model", "PCA", "model - PCA [95% CI]", "mean map", "beats PCA", "file"),
            recon_rows,
        ),
        Section(
            "maps from metadata alone (the decoded prior mean), median r (paired bootstrap 95% CIs)",
            ("variant", "model", "ridge", "model - ridge [95% CI]", "MLP", "model - MLP [95% CI]", "mean map", "file"),
            generation_rows,
        ),
    ]


def _pointcloud_section(paths: ProfilePaths) -> Section:
    def cells(results: PointCloudResults) -> tuple[str, ...]:
        recon, generation = results.reconstruction, results.conditional_generation
        return (
            _mm(recon.model.chamfer_mm_median),
            _mm(recon.nearest_training_study.chamfer_mm_median),
            _mm(generation.model.chamfer_mm_median),
            _mm(generation.category_pool.chamfer_mm_median),
        )

    _, rows = _rows(["pointcloud"], lambda _: _load(PointCloudResults, paths), cells)
    return Section(
        "point-cloud model, median Chamfer distance in mm (lower is better)",
        ("model", "reconstructed", "nearest study", "generated", "category pool", "file"),
        rows,
    )


def _conditional_atlas_section(paths: ProfilePaths) -> Section:
    results, file = _load(ConditionalAtlasResults, paths)
    title = "category maps against the held-out category maps (median r over categories; identification)"
    if results is None:
        return Section(title, ("method", "file"), (("every method", file),))
    level = results.category_level
    rows = tuple(
        (name, _r(method.median_r), _share(method.identification_accuracy))
        for name, method in (
            ("model (category query)", level.model),
            ("model averaged over studies", level.sample_average),
            ("training mean", level.training_mean),
            ("NiMARE MKDA", level.mkda),
        )
    )
    size, cas = results.counterfactual_size, results.classification_accuracy_score
    rows += (
        ("model - MKDA [95% CI]", _difference(level.vs_mkda), ""),
        ("averaged - MKDA [95% CI]", _difference(level.sample_average_vs_mkda), ""),
        ("between-category r: generated / held out", f"{size.generated:.3f} / {size.held_out:.3f}", ""),
        ("CAS balanced accuracy: model / ridge / real", f"{cas.model:.3f} / {cas.ridge:.3f} / {cas.real:.3f}", ""),
    )
    return Section(f"{title}, {len(level.categories)} categories, from {file}", ("method", "r", "identification"), rows)


def _samples_section(paths: ProfilePaths) -> Section:
    results, file = _load(EvaluationResults, paths)
    title = "samples against held-out maps (Frechet distance: lower is better)"
    if results is None:
        return Section(title, ("method", "file"), (("every method", file),))
    rows = tuple(
        (method, f"{row['frechet_distance']:.2f}", f"{row['precision']:.2f}", f"{row['recall']:.2f}")
        for method, row in results.generative_quality.methods.items()
    )
    return Section(f"{title}, from {file}", ("method", "Frechet", "precision", "recall"), rows)


def headline(paths: ProfilePaths, variants: Sequence[str]) -> list[Section]:
    """The result sections of the summary, for the volumetric ``variants`` (and ``hvae``)."""
    volumetric = [*variants, *([HIERARCHICAL_VARIANT] if HIERARCHICAL_VARIANT not in variants else [])]
    return [
        *_volumetric_sections(paths, volumetric),
        _conditional_atlas_section(paths),
        _pointcloud_section(paths),
        _samples_section(paths),
    ]


# ---- text ------------------------------------------------------------------------------------------


def format_section(section: Section) -> str:
    """The section as text: its title, then the column names and the rows, aligned and indented.

    A row shorter than the columns (a missing file) has its reason as its last cell, unpadded.
    """
    lines = [section.columns, *section.rows]
    widths = [
        max((len(line[k]) for line in lines if k < len(line) - 1), default=0) for k in range(len(section.columns))
    ]
    body = [
        ("  " + "  ".join(cell.ljust(widths[k]) if k < len(line) - 1 else cell for k, cell in enumerate(line))).rstrip()
        for line in lines
    ]
    return "\n".join([section.title, *body])


def summary(profile: str, root: Path | None = None) -> str:
    """The summary of a profile's last run, as text."""
    params = load_params(profile, root)
    paths = ProfilePaths.for_profile(profile, root)
    sections = [*headline(paths, params["model"]["variants"]), _times_section(paths)]
    header = f"[sematlas] profile '{profile}': headline results on the held-out test split, and time per stage"
    return "\n\n".join([header, *map(format_section, sections)])


__all__ = ["STAGE_TIMES", "Section", "format_section", "headline", "record_wall_time", "stage_times", "summary"]
