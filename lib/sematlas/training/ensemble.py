"""Training the deep ensembles of the main volumetric model (``cbvae``) that stage 04 compares.

Three ways to get several predictions of one map:

- ``snapshot`` (Huang et al., ICLR 2017): one run with a cyclical cosine
  learning rate; the model at the end of each cycle is a member
  (:class:`~sematlas.training.callbacks.SnapshotCheckpoint`). K members for the price of one run.
- ``independent`` (Lakshminarayanan et al., NeurIPS 2017): K runs from different
  seeds (``data/models/<profile>/ensemble/member_k``).
- ``mc_dropout`` (Gal & Ghahramani, ICML 2016): one model with dropout kept on at
  test time, S stochastic passes (the snapshot run's final model).

Every member has an aleatoric decoder (trained with the Gaussian NLL) and dropout;
:class:`sematlas.inference.ensemble.AtlasEnsemble` loads the members and predicts.
"""

from __future__ import annotations

from sematlas.core.params import ENSEMBLE_METHODS, Params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.models.registry import MAIN_VARIANT
from sematlas.training.callbacks import SnapshotCheckpoint
from sematlas.training.run import TrainedRun, train_variant

METHODS: tuple[str, ...] = ENSEMBLE_METHODS

#: The ensemble's model: the main volumetric variant.
VARIANT = MAIN_VARIANT


def ensemble_params(params: Params, max_epochs: int, seed: int | None = None) -> Params:
    """The profile's parameters for an ensemble member: its decoder, dropout, length and seed.

    Parameters
    ----------
    params : Params
        Validated profile parameters.
    max_epochs : int
    seed : int, optional
        Defaults to the profile's seed.

    Returns
    -------
    Params
        A copy with ``model.aleatoric``, ``model.dropout``, ``training.max_epochs`` and ``seed`` set.
    """
    change = {
        "model": {"aleatoric": bool(params.ensemble.aleatoric), "dropout": float(params.ensemble.dropout)},
        "training": {"max_epochs": int(max_epochs)},
        "seed": int(params.seed if seed is None else seed),
    }
    return override_params(params, change, "ensemble member")


def train_snapshot_ensemble(
    params: Params,
    paths: ProfilePaths,
    datamodule: NeurosynthDataModule,
    run_name: str = "ensemble/snapshot",
) -> TrainedRun:
    """Train (or resume, or reuse) the snapshot-ensemble run: K cosine cycles, a snapshot at each cycle's end.

    Parameters
    ----------
    params : mapping
        Validated profile parameters; ``ensemble.n_members`` cycles of
        ``ensemble.cycle_epochs`` epochs, learning rate from ``training.lr``
        down to ``ensemble.lr_min_ratio`` times it.
    paths : ProfilePaths
    datamodule : NeurosynthDataModule
        Set up.
    run_name : str
        The run folder under ``data/models/<profile>/``; snapshots go to its ``snapshots/``.

    Returns
    -------
    TrainedRun
        Its ``run_dir / "snapshots"`` holds ``snapshot_01.ckpt`` ... ``snapshot_K.ckpt``.

    Notes
    -----
    Stage 02's training (:func:`sematlas.training.run.train_variant`) with the ensemble's
    decoder and dropout, a cosine-restart learning-rate schedule and a snapshot callback.
    """
    e = params["ensemble"]
    cycle = int(e["cycle_epochs"])
    member = ensemble_params(params, max_epochs=int(e["n_members"]) * cycle)
    schedule = {"lr_schedule": "cosine_restarts", "lr_cycle_epochs": cycle, "lr_min_ratio": float(e["lr_min_ratio"])}
    return train_variant(
        member,
        VARIANT,
        paths,
        datamodule=datamodule,
        extra_callbacks=[SnapshotCheckpoint(cycle)],
        strategy="auto",
        run_name=run_name,
        module_options=schedule,
        sections=("ensemble",),
    )


def train_independent_members(
    params: Params, paths: ProfilePaths, datamodule: NeurosynthDataModule
) -> list[TrainedRun]:
    """Train (or reuse) K independently seeded members, ``ensemble/member_1`` ... ``member_K``.

    Member ``k`` is stage 02's training (:func:`sematlas.training.run.train_variant`)
    with the ensemble's decoder and dropout, ``ensemble.member_epochs`` epochs and
    seed ``seed + ensemble.seed_offset * k``.
    """
    e = params["ensemble"]
    runs = []
    for k in range(1, int(e["n_members"]) + 1):
        member = ensemble_params(
            params, max_epochs=int(e["member_epochs"]), seed=int(params["seed"]) + int(e["seed_offset"]) * k
        )
        runs.append(
            train_variant(
                member, VARIANT, paths, datamodule=datamodule, strategy="auto", run_name=f"ensemble/member_{k}"
            )
        )
    return runs


__all__ = [
    "METHODS",
    "VARIANT",
    "ensemble_params",
    "train_independent_members",
    "train_snapshot_ensemble",
]
