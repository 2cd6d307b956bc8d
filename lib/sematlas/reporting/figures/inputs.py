"""What each manuscript figure is drawn from, read once, and where the figures are written.

:func:`figure_inputs` declares, per figure, each argument of its ``plot_*`` function
as a :class:`~sematlas.reporting.sources.Source` (results files as their classes);
:func:`load_results` checks that every file exists, naming the stage that writes a
missing one, and reads each file once. :func:`save_figure` writes a figure as PNG
and SVG, :func:`write_index` the ``index.json`` of the files each was drawn from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from sematlas.analysis.results import CCAResults, ClusteringResults, ForecastingResults, HierarchicalResults
from sematlas.core.io import atomic_path, write_json
from sematlas.core.metadata import TOPIC_KEYS_FILE
from sematlas.core.params import Params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.atlas_results import ConditionalAtlasResults
from sematlas.evaluation.results import EnsembleResults, EvaluationResults, PointCloudResults, VolumetricResults
from sematlas.models.registry import HIERARCHICAL_VARIANT
from sematlas.pipeline.registry import writer_of
from sematlas.reporting.figures.models import CATEGORY_MAP_LABELS
from sematlas.reporting.sources import MANIFEST, STUDIES, Source, category_maps, raw_file, results_file, results_table

#: Manuscript figure name -> title (also the README figure index and ``index.json``).
TITLES: dict[str, str] = {
    "fig1_data": "The curated Neurosynth v7 corpus and the profile's stratified subset",
    "fig2_reconstruction": "Held-out reconstruction of every volumetric model against PCA and the mean map",
    "fig3_generation": "Generative quality against PPCA and real maps; zero-shot task probe against chance",
    "fig4_category_maps": "Category maps: the conditional atlas beside the held-out studies and NiMARE's MKDA",
    "fig5_pointcloud": "Point-cloud C-VAE against the noise floor, nearest-study retrieval and the category pool",
    "fig6_uncertainty": "Calibration and out-of-distribution detection of the ensembles against their goals",
    "fig7_hierarchy": "The H-VAE stage gate and the hierarchy it learned",
    "fig8_cca": "Canonical correlations between the volumetric and point-cloud latents against a permutation null",
    "fig9_clusters": "HDBSCAN clusters of the latents: sizes, topic and task profiles, centroid maps",
    "fig10_forecasting": "Forecasting the latent distribution of held-out years: GRU against persistence and trend",
    "fig11_ablations": "Ablations: each one-change variant of the locked cbvae against its declared criterion",
}

#: The H-VAE's volumetric results folder (stage 05 writes it beside stage 02's variants).
_HVAE = HIERARCHICAL_VARIANT

#: A figure's inputs: argument -> its file, or -> name -> file (one per variant).
Inputs = dict[str, Source[Any] | dict[str, Source[Any]]]


def volumetric_variants(paths: ProfilePaths, params: Params) -> list[str]:
    """The volumetric models of figure 2: ``model.variants``, then ``hvae`` when stage 05 wrote its results."""
    return [*params.model.variants, *([_HVAE] if (paths.results / _HVAE).is_dir() else [])]


def _volumetric(variant: str, name: str) -> Source[Any]:
    """A file of a volumetric run's results folder: ``test_results.json`` as its class, or a table."""
    if name == "test_results":
        return results_file(VolumetricResults, variant=variant)
    return results_table(f"{variant}/{name}.parquet")


def figure_inputs(paths: ProfilePaths, params: Params) -> dict[str, Inputs]:
    """Every figure's inputs, by the arguments of its ``plot_*`` function.

    Figure 9 reads its cluster tables and results here; :func:`load_results` adds its
    centroid maps (named in the results) and its topic profiles' members.
    """
    variants = volumetric_variants(paths, params)
    return {
        "fig1_data": {"studies": STUDIES, "manifest": MANIFEST},
        "fig2_reconstruction": {
            "per_study": {v: _volumetric(v, "per_study") for v in variants},
            "test_results": {v: _volumetric(v, "test_results") for v in variants},
        },
        "fig3_generation": {
            "quality": results_table("evaluation/generative_quality.parquet"),
            "probe": results_file(EvaluationResults).then(lambda results: results.zero_shot_probe),
        },
        "fig4_category_maps": {
            "results": results_file(ConditionalAtlasResults),
            "table": results_table("evaluation/conditional_atlas_categories.parquet"),
            "maps": {method: category_maps(method) for method in CATEGORY_MAP_LABELS},
        },
        "fig5_pointcloud": {
            "results": results_file(PointCloudResults),
            "per_study": results_table("pointcloud/per_study.parquet"),
        },
        "fig6_uncertainty": {"results": results_file(EnsembleResults)},
        "fig7_hierarchy": {"results": results_file(HierarchicalResults)},
        "fig8_cca": {"results": results_file(CCAResults)},
        "fig9_clusters": {
            "clusters": results_table("clustering/clusters.parquet"),
            "results": results_file(ClusteringResults),
            "assignments": results_table("clustering/assignments.parquet"),
            "studies": STUDIES,
            "topic_keys": raw_file(f"neurosynth/{TOPIC_KEYS_FILE}"),
        },
        "fig10_forecasting": {
            "table": results_table("forecasting/frechet_by_year.parquet"),
            "results": results_file(ForecastingResults),
        },
        "fig11_ablations": {"table": results_table("evaluation/ablations.parquet")},
    }


def _sources(inputs: Inputs) -> list[Source[Any]]:
    """A figure's files in order: its single files, then each variant's files together."""
    single = [value for value in inputs.values() if not isinstance(value, Mapping)]
    per_name = [value for value in inputs.values() if isinstance(value, Mapping)]
    names = dict.fromkeys(name for value in per_name for name in value)
    return single + [value[name] for name in names for value in per_name if name in value]


def _require(needed: Mapping[str, Sequence[Path]], paths: ProfilePaths) -> None:
    """Raise naming every missing file, the figure that needs it and the stage that writes it."""
    missing = []
    for figure, files in needed.items():
        for path in files:
            if not path.is_file():
                stage = writer_of(path, paths)
                missing.append(
                    f"figure {figure} needs {path.relative_to(paths.root)}, "
                    f"written by stage {stage.number} {stage.name}"
                )
    if missing:
        raise FileNotFoundError("\n".join(missing))


def load_results(paths: ProfilePaths, params: Params) -> dict[str, Any]:
    """Read everything the manuscript figures are drawn from, each file once.

    Parameters
    ----------
    paths : ProfilePaths
    params : Params
        The profile's parameters (``model.variants`` names the volumetric models).

    Returns
    -------
    dict
        ``sources`` (figure -> files read) and one entry per figure: the keyword
        arguments of its ``plot_*`` function (results objects, tables, paths), but
        figure 9's, which holds ``clusters``, ``results``, ``members`` (the assignments
        with their studies' topic weights, for ``cluster_profiles``), ``topic_keys`` and
        ``centroids`` (the centroid maps' paths).

    Raises
    ------
    FileNotFoundError
        One line per missing file, e.g. ``figure fig8_cca needs
        data/results/quick/cca/results.json, written by stage 06 cca``.
    """
    declared = figure_inputs(paths, params)
    needed = {figure: [s.locate(paths) for s in _sources(inputs)] for figure, inputs in declared.items()}
    _require(needed, paths)
    cache: dict[tuple[Path, Any], Any] = {}

    def read(source: Source[Any]) -> Any:
        key = (source.locate(paths), source.read)
        if key not in cache:
            cache[key] = source.read(key[0])
        return cache[key]

    loaded: dict[str, Any] = {
        figure: {
            name: {key: read(s) for key, s in value.items()} if isinstance(value, Mapping) else read(value)
            for name, value in inputs.items()
        }
        for figure, inputs in declared.items()
    }

    clusters = loaded["fig9_clusters"]
    centroids = [paths.root / name for name in clusters["results"].centroid_maps]
    _require({"fig9_clusters": centroids}, paths)
    needed["fig9_clusters"] += centroids
    studies = clusters.pop("studies").assign(id=lambda frame: frame["id"].astype(str))
    assignments = clusters.pop("assignments").assign(id=lambda frame: frame["id"].astype(str))
    topics = [c for c in studies.columns if c.startswith("topic_")]
    # Cluster labels with the topic weights of their studies, for clustering.cluster_profiles.
    clusters["members"] = assignments.merge(studies[["id", *topics]], on="id", how="left", validate="one_to_one")
    clusters["centroids"] = centroids
    loaded["sources"] = needed
    return loaded


# ------------------------------------------------------------------------ saving
def save_figure(fig: Figure, folder: str | os.PathLike[str], name: str, dpi: int = 150) -> list[Path]:
    """Write ``<name>.png`` (at ``dpi``) and ``<name>.svg`` into ``folder``, each atomically.

    The SVG carries no date and fixed element ids, so an unchanged figure gives
    an unchanged file.

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    written = []
    for fmt in ("png", "svg"):
        target = Path(folder) / f"{name}.{fmt}"
        with atomic_path(target) as tmp, mpl.rc_context({"svg.hashsalt": name}):
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        written.append(target)
    return written


def write_index(folder: str | os.PathLike[str], sources: Mapping[str, Sequence[Path]], root: Path) -> Path:
    """``index.json`` beside the figures: name -> title, PNG, SVG and the source files (relative to ``root``)."""
    index = {
        name: {
            "title": TITLES[name],
            "png": f"{name}.png",
            "svg": f"{name}.svg",
            "sources": [str(Path(path).relative_to(root)) for path in files],
        }
        for name, files in sources.items()
    }
    return write_json(index, Path(folder) / "index.json")


__all__ = ["TITLES", "figure_inputs", "load_results", "save_figure", "volumetric_variants", "write_index"]
