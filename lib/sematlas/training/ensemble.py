"""Training the deep ensembles of the main volumetric model (``cbvae``) that stage 04 compares.

Three ways to get several predictions of one map:

- ``snapshot`` (Huang et al., ICLR 2017): one run with a cyclical cosine
  learning rate; the model at the end of each cycle is a member
  (:class:`~sematlas.training.callbacks.SnapshotCheckpoint`). The run continues
  from stage 02's trained main model (:func:`main_checkpoint`), so its K members
  cost ``K * cycle_epochs`` epochs of fine-tuning, not a training from scratch.
- ``independent`` (Lakshminarayanan et al., NeurIPS 2017): K runs from different
  seeds, each from scratch (``data/models/<profile>/ensemble/member_k``): their
  independence is the point.
- ``mc_dropout`` (Gal & Ghahramani, ICML 2016): one model with dropout kept on at
  test time, S stochastic passes (the snapshot run's final model).

Every member has an aleatoric decoder (trained with the Gaussian NLL) and dropout;
:class:`sematlas.inference.ensemble.AtlasEnsemble` loads the members and predicts.
The main model has neither: dropout has no weights, and the decoder's variance
head (``decoder.out_logvar``) is the only tensor a snapshot run does not inherit
(:class:`InitialWeights` lists it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from sematlas.core.errors import CheckpointError
from sematlas.core.io import read_json, sha256_file, write_json
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


def main_checkpoint(paths: ProfilePaths) -> Path:
    """Stage 02's best checkpoint of the main variant, ``data/models/<profile>/cbvae/checkpoints/best.ckpt``."""
    return paths.models / MAIN_VARIANT / "checkpoints" / "best.ckpt"


class InitialWeights(pl.Callback):
    """Start a fresh run from another checkpoint's weights, where names and shapes match.

    At the start of fitting (after a resumed run restored its own checkpoint, which
    then wins), every parameter and buffer of the module that the checkpoint holds
    is copied from it; the module's tensors it does not hold keep their seeded
    initialisation. The loaded and the new names are logged and written to
    ``record`` (JSON: ``checkpoint``, ``sha256``, ``loaded``, ``new``).

    Parameters
    ----------
    checkpoint : Path
        A Lightning checkpoint of an :class:`~sematlas.training.module.AtlasModule`.
    record : Path
        Where the account of what was loaded goes (the run folder's ``initial_weights.json``).

    Raises
    ------
    CheckpointError
        At the start of fitting, a tensor of the checkpoint that the module lacks or has in
        another shape: the architectures differ beyond added tensors, and starting from the
        checkpoint would be unsound.
    """

    def __init__(self, checkpoint: Path, record: Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.record = Path(record)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return  # a resumed run has restored its own weights
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        own = pl_module.state_dict()
        foreign = sorted(name for name, value in state.items() if name not in own or own[name].shape != value.shape)
        if foreign:
            raise CheckpointError(
                f"{self.checkpoint} does not fit the model being trained: {', '.join(foreign[:5])}"
                f"{' ...' if len(foreign) > 5 else ''} missing or of another shape"
            )
        pl_module.load_state_dict(state, strict=False)
        new = sorted(set(own) - set(state))
        # Through Lightning's logger, so that the line also lands in the run's train.log.
        rank_zero_info(
            f"InitialWeights: starting from {self.checkpoint}: {len(state)} of {len(own)} tensors loaded; "
            f"new, from the seeded initialisation: {', '.join(new) or 'none'}"
        )
        if trainer.is_global_zero:
            account = {"checkpoint": str(self.checkpoint), "sha256": sha256_file(self.checkpoint)}
            write_json({**account, "loaded": sorted(state), "new": new}, self.record)


def initial_weights(run: TrainedRun) -> dict[str, Any] | None:
    """What a run started from (:class:`InitialWeights`' record), or ``None`` for a run from scratch."""
    record = run.run_dir / "initial_weights.json"
    return read_json(record) if record.is_file() else None


def train_snapshot_ensemble(
    params: Params,
    paths: ProfilePaths,
    datamodule: NeurosynthDataModule,
    run_name: str = "ensemble/snapshot",
    start_from: Path | None = None,
) -> TrainedRun:
    """Train (or resume, or reuse) the snapshot-ensemble run: K cosine cycles from the trained main model.

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
    start_from : Path, optional
        The checkpoint the run continues from; default stage 02's :func:`main_checkpoint`.

    Returns
    -------
    TrainedRun
        Its ``run_dir / "snapshots"`` holds ``snapshot_01.ckpt`` ... ``snapshot_K.ckpt``, and
        ``initial_weights.json`` what it inherited (:func:`initial_weights`).

    Raises
    ------
    CheckpointError
        No checkpoint to start from (stage 02 has not trained the main model), or one
        whose weights do not fit the member's architecture.

    Notes
    -----
    Stage 02's training (:func:`sematlas.training.run.train_variant`) with the ensemble's
    decoder and dropout, a cosine-restart learning-rate schedule and a snapshot callback,
    starting from the main model's weights (:class:`InitialWeights`; the variance head is
    new). The KL weights start at their end-of-schedule values (no warm-up): the main
    model went through its warm-ups already, and a second one would first undo the
    regularisation it converged under. The starting checkpoint's SHA-256 counts in the
    fingerprint, so a retrained main model retrains the snapshots.
    """
    start = Path(start_from) if start_from is not None else main_checkpoint(paths)
    if not start.is_file():
        raise CheckpointError(
            f"the snapshot ensemble continues from the trained {MAIN_VARIANT}, and there is no {start}: "
            "run stage 02 first"
        )
    e = params["ensemble"]
    cycle = int(e["cycle_epochs"])
    member = override_params(
        ensemble_params(params, max_epochs=int(e["n_members"]) * cycle),
        {"training": {"beta_warmup_epochs": 0, "beta_tc_annealing_epochs": 0}},
        "snapshot ensemble from the main model",
    )
    schedule = {"lr_schedule": "cosine_restarts", "lr_cycle_epochs": cycle, "lr_min_ratio": float(e["lr_min_ratio"])}
    inherit = InitialWeights(start, paths.models / run_name / "initial_weights.json")
    return train_variant(
        member,
        VARIANT,
        paths,
        datamodule=datamodule,
        extra_callbacks=[inherit, SnapshotCheckpoint(cycle)],
        strategy="auto",
        run_name=run_name,
        module_options=schedule,
        sections=("ensemble",),
        depends_on={"initial_weights": sha256_file(start)},
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
    "InitialWeights",
    "ensemble_params",
    "initial_weights",
    "main_checkpoint",
    "train_independent_members",
    "train_snapshot_ensemble",
]
