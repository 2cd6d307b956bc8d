"""Evaluate a trained run on the held-out test split and save its results: one routine for every model.

Stages 02 (each volumetric variant), 03 (the point cloud) and 05 (the H-VAE) call
:func:`evaluate_trained_run` on the run :func:`~sematlas.training.run.train_variant`
or :func:`~sematlas.training.pointcloud.train_pointcloud` returned. It loads the best
checkpoint, evaluates it against the baselines, adds the training summary, encodes
the studies (every split for the variants of ``evaluation.latents_every_split``, the
test split for the others) and writes ``data/results/<profile>/<name>/``: the results file
(:class:`~sematlas.evaluation.results.VolumetricResults` or
:class:`~sematlas.evaluation.results.PointCloudResults`), ``per_study.parquet`` and
``latents.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sematlas.data.pointcloud import PointCloudDataModule
from sematlas.evaluation.pointcloud import evaluate_pointcloud, pointcloud_latents
from sematlas.evaluation.reconstruction import collect_outputs, evaluate_run, latents_table, save_results
from sematlas.evaluation.rendered import RenderedSplits
from sematlas.evaluation.results import PointCloudResults, PointCloudTraining, VolumetricResults, VolumetricTraining
from sematlas.inference.atlas import AtlasModel
from sematlas.inference.pointcloud import PointCloudModel

if TYPE_CHECKING:
    from sematlas.core.params import Params
    from sematlas.core.paths import ProfilePaths
    from sematlas.training.run import TrainedRun


@dataclass(frozen=True)
class RunEvaluation:
    """What :func:`evaluate_trained_run` computed and saved.

    Attributes
    ----------
    model : AtlasModel or PointCloudModel
        The best checkpoint, loaded for inference.
    results : VolumetricResults or PointCloudResults
        The results file's content.
    per_study : DataFrame
        One row per held-out study: every method's metrics.
    latents : DataFrame
        Posterior means (``id``, ``split``, ``z_00`` ..., ``logvar_mean``) of every study of every
        split, or of the test split for a variant not in ``evaluation.latents_every_split``.
    points : dict of ndarray
        The point cloud's MNI mm sets per method, for figures
        (:class:`~sematlas.evaluation.pointcloud.PointCloudEvaluation`); empty for a volumetric run.
    """

    model: Any
    results: VolumetricResults | PointCloudResults
    per_study: pd.DataFrame
    latents: pd.DataFrame
    points: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_trained_run(
    run: TrainedRun, datamodule: Any, params: Params, paths: ProfilePaths, maps: RenderedSplits | None = None
) -> RunEvaluation:
    """Evaluate a run's best checkpoint on the test split, then save its results, per-study table and latents.

    Parameters
    ----------
    run : TrainedRun
        A finished run (its ``best_checkpoint``, ``timing`` and ``metrics``).
    datamodule : NeurosynthDataModule or PointCloudDataModule
        Set up; the run's data. A point-cloud DataModule evaluates a point-cloud run.
    params : Params
        The profile's parameters (``evaluation``, ``seed``, ``profile``).
    paths : ProfilePaths
        The results go to ``data/results/<profile>/<variant>/`` for a volumetric run (its
        checkpoint names the variant) and to ``data/results/<profile>/pointcloud/``.
    maps : RenderedSplits, optional
        A volumetric stage's rendered splits, shared by the runs it evaluates (each split
        rendered once per stage); by default a volumetric run renders each split once for
        this call. A point-cloud run renders nothing and takes none.

    Returns
    -------
    RunEvaluation
    """
    if isinstance(datamodule, PointCloudDataModule):
        if maps is not None:
            raise ValueError("a point-cloud run is evaluated on peak sets: it takes no rendered maps")
        evaluation = _evaluate_points(run, datamodule, params, paths)
    else:
        evaluation = _evaluate_maps(run, datamodule, params, paths, RenderedSplits.shared(maps, datamodule))
    save_results(evaluation.results, evaluation.per_study, evaluation.latents, paths)
    return evaluation


def _evaluate_maps(
    run: TrainedRun, datamodule: Any, params: Params, paths: ProfilePaths, maps: RenderedSplits
) -> RunEvaluation:
    atlas = AtlasModel.load(run.best_checkpoint, voxel_size=datamodule.voxel_size)
    # The test split is run through the network once: its metrics and its rows of the latents table.
    outputs = collect_outputs(atlas.network, datamodule, "test", maps)
    summary, per_study = evaluate_run(
        atlas.network,
        datamodule,
        atlas.variant,
        params.evaluation,
        int(params.seed),
        maps=maps,
        baseline_store=paths.linear_baselines,
        outputs=outputs,
    )
    results = VolumetricResults(**summary, training=VolumetricTraining.from_run(run))
    splits = None if atlas.variant in params.evaluation.latents_every_split else ["test"]
    latents = latents_table(atlas.network, datamodule, maps, splits, collected={"test": outputs})
    return RunEvaluation(atlas, results, per_study, latents)


def _evaluate_points(
    run: TrainedRun, datamodule: PointCloudDataModule, params: Params, paths: ProfilePaths
) -> RunEvaluation:
    model = PointCloudModel.load(run.best_checkpoint)
    peaks = pd.read_parquet(paths.processed / "peaks.parquet", columns=["id", "x", "y", "z"])
    evaluation = evaluate_pointcloud(model, datamodule, peaks, params.evaluation.n_prior_samples, int(params.seed))
    results = PointCloudResults(**evaluation.results, profile=params.profile, training=PointCloudTraining.from_run(run))
    return RunEvaluation(model, results, evaluation.per_study, pointcloud_latents(model, datamodule), evaluation.points)


__all__ = ["RunEvaluation", "evaluate_trained_run"]
