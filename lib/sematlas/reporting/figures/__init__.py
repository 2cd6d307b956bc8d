"""The manuscript's figures, remade from the results the stages saved (stage 11).

- :mod:`~sematlas.reporting.figures.inputs`: what each figure is drawn from
  (results files read as their classes, tables), read once by :func:`load_results`,
  which names the stage that writes a missing file; :func:`save_figure` (PNG and
  SVG) and :func:`write_index`;
- :mod:`~sematlas.reporting.figures.models`: figures 1 to 5, the corpus and the models;
- :mod:`~sematlas.reporting.figures.analyses`: figures 6 to 9, the analyses;
- :mod:`~sematlas.reporting.figures.style`: colours and layout helpers.

Nothing here trains or decodes a model: every number drawn is read from
``data/results/<profile>/`` or ``data/processed/<profile>/``. Where a stage already
draws a panel from saved results (``plot_generative_quality``,
``plot_metric_comparison``, ``plot_hierarchy``, ``plot_cluster_profiles``,
``plot_frechet``), its figure is reused and grown by the panels the manuscript
adds. One style throughout: models in blue, baselines in red, chance, goals and
thresholds as grey dashed lines; each title says what is compared and on how
many held-out studies.
"""

from sematlas.reporting.figures.analyses import plot_cca, plot_clusters, plot_forecasting, plot_gate
from sematlas.reporting.figures.inputs import (
    TITLES,
    figure_inputs,
    load_results,
    save_figure,
    volumetric_variants,
    write_index,
)
from sematlas.reporting.figures.models import (
    CATEGORY_MAP_LABELS,
    plot_conditional_atlas,
    plot_corpus,
    plot_generation,
    plot_pointcloud,
    plot_reconstruction,
    plot_uncertainty,
)
from sematlas.reporting.figures.style import BASELINE, BASELINE_LIGHT, MODEL, REFERENCE

__all__ = [
    "BASELINE",
    "BASELINE_LIGHT",
    "CATEGORY_MAP_LABELS",
    "MODEL",
    "REFERENCE",
    "TITLES",
    "figure_inputs",
    "load_results",
    "plot_cca",
    "plot_clusters",
    "plot_conditional_atlas",
    "plot_corpus",
    "plot_forecasting",
    "plot_gate",
    "plot_generation",
    "plot_pointcloud",
    "plot_reconstruction",
    "plot_uncertainty",
    "save_figure",
    "volumetric_variants",
    "write_index",
]
