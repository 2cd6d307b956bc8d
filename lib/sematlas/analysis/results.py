"""The results files of the analyses of trained atlases (stages 05 to 08).

- :class:`HierarchicalResults`: ``hierarchical/results.json`` (stage 05), the H-VAE's
  stage gate and learned hierarchy;
- :class:`CCAResults`: ``cca/results.json`` (stage 06);
- :class:`ClusteringResults`: ``clustering/results.json`` (stage 07);
- :class:`ForecastingResults`: ``forecasting/results.json`` (stage 08).

Each has a ``from_*`` constructor that the stage's notebook calls with what it
computed, so the file's layout (rounding, relative paths, descriptions) lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd

from sematlas.core.params import ClusteringParams, ForecastingParams
from sematlas.core.paths import ProfilePaths
from sematlas.core.results import ResultSection, StageResults, parse
from sematlas.evaluation.results import VolumetricResults, VolumetricTraining

if TYPE_CHECKING:
    from sematlas.analysis.cca import LatentCCA
    from sematlas.analysis.clustering import LatentClustering
    from sematlas.analysis.forecasting import YearlySeries


# ------------------------------------------------------------------ the hierarchy (stage 05)
@dataclass(frozen=True, kw_only=True)
class StageGate(ResultSection):
    """:func:`~sematlas.analysis.hierarchy.stage_gate`'s verdict.

    ``criteria`` maps each criterion to its record: ``value``, ``threshold``, ``rule``, ``pass`` and
    the terms its threshold is made of (``reference_cbvae``, ``chance``, ``margin``), which differ
    between criteria.
    """

    criteria: dict[str, dict[str, Any]]
    passed: int
    result: str


@dataclass(frozen=True, kw_only=True)
class LevelKL(ResultSection):
    """Mean per-study KL of each level on the test split, in nats (:func:`~sematlas.analysis.hierarchy.level_kls`)."""

    kl_top: float
    kl_lower: float
    n_studies: int


@dataclass(frozen=True, kw_only=True)
class LevelUnits(ResultSection):
    """Active units of each level (posterior means that vary across the test studies)."""

    top: int
    lower: int


@dataclass(frozen=True, kw_only=True)
class HierarchicalReconstruction(ResultSection):
    """The H-VAE's held-out median reconstruction r beside the flat ``cbvae``'s and the file it came from."""

    hvae_pearson_r_median: float
    cbvae_pearson_r_median: float
    reference: str


@dataclass(frozen=True, kw_only=True)
class LevelProbe(ResultSection):
    """A task-category probe of one level (:func:`~sematlas.analysis.hierarchy.linear_probe`)."""

    balanced_accuracy: float
    chance: float
    n_classes: int
    n_train: int
    n_test: int


#: How stage 05 probes each level.
PROBE_METHOD = "logistic regression, train split -> test split, balanced accuracy"


@dataclass(frozen=True, kw_only=True)
class LevelProbes(ResultSection):
    """The probe of the top level (the gate's), the lower level and the whole code."""

    method: str = PROBE_METHOD
    top: LevelProbe
    lower: LevelProbe
    all: LevelProbe


@dataclass(frozen=True, kw_only=True)
class Hierarchy(ResultSection):
    """What the two levels learned: |r| between top and lower units ``(top_dim, lower_dim)``, and the
    mean z-scored top-level activation per task category (category -> unit -> value), rounded to 4 digits."""

    top_lower_abs_correlation: list[list[float]]
    category_profile: dict[str, dict[str, float]]

    @classmethod
    def from_tables(cls, correlation: np.ndarray, category_profile: pd.DataFrame) -> Self:
        """From :func:`~sematlas.analysis.hierarchy.level_correlation` and ``category_profile``; NaN r become 0."""
        return cls(
            top_lower_abs_correlation=np.nan_to_num(correlation).round(4).tolist(),
            category_profile=category_profile.round(4).to_dict(orient="index"),
        )


@dataclass(frozen=True, kw_only=True)
class HierarchicalResults(StageResults):
    """The H-VAE's stage gate and hierarchy: ``hierarchical/results.json``."""

    LOCATION: ClassVar[str] = "hierarchical/results.json"

    profile: str
    variant: str
    z_dim: int
    top_dim: int
    lower_dim: int
    gate: StageGate
    kl_per_level: LevelKL
    active_units: LevelUnits
    reconstruction: HierarchicalReconstruction
    probe: LevelProbes
    hierarchy: Hierarchy
    training: VolumetricTraining
    figures: list[str]

    @classmethod
    def from_analysis(
        cls,
        *,
        paths: ProfilePaths,
        evaluation: VolumetricResults,
        reference: VolumetricResults,
        top_dim: int,
        gate: Mapping[str, Any],
        kl: Mapping[str, Any],
        active_units: Mapping[str, int],
        probes: Mapping[str, Mapping[str, Any]],
        hierarchy: Hierarchy,
        figures: Sequence[str],
    ) -> Self:
        """Stage 05's results from what it computed.

        Parameters
        ----------
        paths : ProfilePaths
        evaluation, reference : VolumetricResults
            The H-VAE's held-out evaluation and the flat ``cbvae``'s it is gated against.
        top_dim : int
        gate : mapping
            :func:`~sematlas.analysis.hierarchy.stage_gate`.
        kl : mapping
            :func:`~sematlas.analysis.hierarchy.level_kls` on the test split.
        active_units : mapping
            ``top`` and ``lower``.
        probes : mapping
            ``top``, ``lower``, ``all``: :func:`~sematlas.analysis.hierarchy.linear_probe` of each.
        hierarchy : Hierarchy
        figures : sequence of str
            File names of the stage's figures under ``figures/<profile>/``.
        """
        return cls(
            profile=paths.profile,
            variant=evaluation.variant,
            z_dim=evaluation.z_dim,
            top_dim=top_dim,
            lower_dim=evaluation.z_dim - top_dim,
            gate=parse(StageGate, gate),
            kl_per_level=parse(LevelKL, kl),
            active_units=parse(LevelUnits, active_units),
            reconstruction=HierarchicalReconstruction(
                hvae_pearson_r_median=evaluation.reconstruction.model.pearson_r_median,
                cbvae_pearson_r_median=reference.reconstruction.model.pearson_r_median,
                reference=str(reference.location(paths).relative_to(paths.root)),
            ),
            probe=parse(LevelProbes, {"method": PROBE_METHOD, **probes}),
            hierarchy=hierarchy,
            training=evaluation.training,
            figures=[f"{paths.figures.relative_to(paths.root)}/{name}" for name in figures],
        )


# ------------------------------------------------------------------ CCA (stage 06)
@dataclass(frozen=True, kw_only=True)
class CCAComponent(ResultSection):
    """One canonical pair (:meth:`~sematlas.analysis.cca.LatentCCA.results`), 1-based."""

    component: int
    r: float
    p: float
    p_fwe: float
    null_q95: float


@dataclass(frozen=True, kw_only=True)
class LatentDims(ResultSection):
    """The latent size of each view."""

    volumetric: int
    pointcloud: int


@dataclass(frozen=True, kw_only=True)
class VariateChange(ResultSection):
    """How much a variate moves the decoded outputs between -2 and +2 SD."""

    component: int
    map_r: float
    points_chamfer_mm: float


@dataclass(frozen=True, kw_only=True)
class DecodedVariates(ResultSection):
    """The variates decoded to maps and peak sets, at ``steps_sd``, with one metadata request."""

    n_variates: int
    steps_sd: list[float]
    metadata: dict[str, Any]
    changes: list[VariateChange]


#: How stage 06 tests each canonical correlation, and how it standardises the views.
PERMUTATION_TEST = "stepwise shuffled pairing (Winkler et al., 2020); p per component, p_fwe running maximum"
STANDARDISATION = "each view standardised on the held-out studies"


@dataclass(frozen=True, kw_only=True)
class CCAResults(StageResults):
    """Canonical correlation between the volumetric and point-cloud latents: ``cca/results.json``."""

    LOCATION: ClassVar[str] = "cca/results.json"

    profile: str
    variant: str
    split: str
    n_studies: int
    dims: LatentDims
    n_components_requested: int
    n_components: int
    n_permutations: int
    seed: int
    permutation_test: str = PERMUTATION_TEST
    standardisation: str = STANDARDISATION
    sklearn_vs_exact_max_abs_diff: float
    fit_seconds: float
    components: list[CCAComponent]
    decoded: DecodedVariates

    @classmethod
    def from_fit(
        cls,
        cca: LatentCCA,
        *,
        profile: str,
        variant: str,
        split: str,
        dims: LatentDims,
        n_studies: int,
        n_components_requested: int,
        sklearn_vs_exact_max_abs_diff: float,
        fit_seconds: float,
        decoded: DecodedVariates,
    ) -> Self:
        """Stage 06's results from the fitted :class:`~sematlas.analysis.cca.LatentCCA` and its decoding."""
        return cls(
            profile=profile,
            variant=variant,
            split=split,
            n_studies=n_studies,
            dims=dims,
            n_components_requested=n_components_requested,
            n_components=cca.n_components_,
            n_permutations=cca.n_permutations,
            seed=cca.seed,
            sklearn_vs_exact_max_abs_diff=sklearn_vs_exact_max_abs_diff,
            fit_seconds=fit_seconds,
            components=[parse(CCAComponent, record) for record in cca.results()],
            decoded=decoded,
        )


# ------------------------------------------------------------------ clustering (stage 07)
@dataclass(frozen=True, kw_only=True)
class ClusterRecord(ResultSection):
    """A cluster, its size and the metadata its centroid was decoded with."""

    cluster: int
    name: str
    size: int
    decode_task: str
    decode_year: int


@dataclass(frozen=True, kw_only=True)
class NoiseHandling(ResultSection):
    """What each stability ARI counts."""

    ari: str = "noise (-1) is one more label, over all studies a subsample shares with the full data"
    ari_clustered: str = "only studies that both fits assign to a cluster"


@dataclass(frozen=True, kw_only=True)
class ClusteringResults(StageResults):
    """HDBSCAN clusters of the main model's latents: ``clustering/results.json``.

    The statistics are :meth:`~sematlas.analysis.clustering.LatentClustering.summary`'s
    (``None`` where undefined); ``params`` are the ``clustering`` parameters.
    """

    LOCATION: ClassVar[str] = "clustering/results.json"

    n_clusters: int
    noise_fraction: float
    n_studies: int
    ari_mean: float | None
    ari_sd: float | None
    ari_clustered_mean: float | None
    ari_clustered_sd: float | None
    bootstrap_ari: list[float | None]
    bootstrap_ari_clustered: list[float | None]
    bootstrap_n_clusters: list[int]
    profile: str
    variant: str
    z_dim: int
    seed: int
    params: ClusteringParams
    standardised: bool = True
    embedding: str = "t-SNE of the standardised latents"
    noise_handling: NoiseHandling = NoiseHandling()
    decode_metadata: str = "each cluster's most common task category and median year"
    clusters: list[ClusterRecord]
    centroid_maps: list[str]

    @classmethod
    def from_fit(
        cls,
        clustering: LatentClustering,
        *,
        paths: ProfilePaths,
        settings: ClusteringParams,
        seed: int,
        z_dim: int,
        clusters: pd.DataFrame,
        centroid_maps: Sequence[Path],
    ) -> Self:
        """Stage 07's results from the fitted clustering, its cluster table and the centroid maps written."""
        columns = [f.name for f in fields(ClusterRecord)]
        return cls(
            **clustering.summary(),
            profile=paths.profile,
            variant=settings.variant,
            z_dim=z_dim,
            seed=seed,
            params=settings,
            clusters=[parse(ClusterRecord, record) for record in clusters[columns].to_dict(orient="records")],
            centroid_maps=[str(path.relative_to(paths.root)) for path in centroid_maps],
        )


# ------------------------------------------------------------------ forecasting (stage 08)
@dataclass(frozen=True, kw_only=True)
class DriftRequest(ResultSection):
    """The task, years and prior samples of the predicted maps of the Zeitgeist timeline."""

    task: str
    years: list[int]
    n_samples: int


@dataclass(frozen=True, kw_only=True)
class ForecastingResults(StageResults):
    """Forecasts of the yearly latent distributions against persistence and trend: ``forecasting/results.json``.

    ``frechet_by_year`` maps each scored held-out year to each method's Fréchet distance;
    ``frechet_mean`` is their mean over those years.
    """

    LOCATION: ClassVar[str] = "forecasting/results.json"

    profile: str
    variant: str
    cutoff_year: int
    window: int
    min_studies: int
    note: str
    n_studies_per_year: dict[int, int]
    dropped_years: list[int]
    held_out_years_not_scored: list[int]
    gru_train_nll: float
    frechet_by_year: dict[int, dict[str, float]]
    frechet_mean: dict[str, float]
    drift: DriftRequest

    @classmethod
    def from_forecasts(
        cls,
        *,
        profile: str,
        settings: ForecastingParams,
        series: YearlySeries,
        frechet: pd.DataFrame,
        methods: Sequence[str],
        not_scored: Sequence[int],
        gru_train_nll: float,
        note: str,
    ) -> Self:
        """Stage 08's results.

        Parameters
        ----------
        profile : str
        settings : ForecastingParams
        series : YearlySeries
            The series of all studies.
        frechet : DataFrame
            Fréchet distance per scored held-out year (index) and method (columns).
        methods : sequence of str
            The forecasting methods, in reporting order.
        not_scored : sequence of int
            Held-out years with too few studies to score.
        gru_train_nll : float
        note : str
            Where the held-out years end.
        """
        return cls(
            profile=profile,
            variant=settings.variant,
            cutoff_year=settings.cutoff_year,
            window=settings.window,
            min_studies=settings.min_studies,
            note=note,
            n_studies_per_year={int(y): int(n) for y, n in zip(series.years, series.n)},
            dropped_years=[int(y) for y in series.years[~series.observed]],
            held_out_years_not_scored=list(not_scored),
            gru_train_nll=gru_train_nll,
            frechet_by_year={
                int(year): {method: float(frechet.loc[year, method]) for method in methods} for year in frechet.index
            },
            frechet_mean={method: float(frechet[method].mean()) for method in methods},
            drift=DriftRequest(task=settings.drift_task, years=settings.drift_years, n_samples=settings.drift_samples),
        )


__all__ = [
    "PERMUTATION_TEST",
    "PROBE_METHOD",
    "STANDARDISATION",
    "CCAComponent",
    "CCAResults",
    "ClusterRecord",
    "ClusteringResults",
    "DecodedVariates",
    "DriftRequest",
    "ForecastingResults",
    "Hierarchy",
    "HierarchicalReconstruction",
    "HierarchicalResults",
    "LatentDims",
    "LevelKL",
    "LevelProbe",
    "LevelProbes",
    "NoiseHandling",
    "StageGate",
    "VariateChange",
]
