"""Training entry point: the same function in a notebook and on a cluster.

``python -m sematlas.training.run --profile P --variant V`` trains one variant outside
Jupyter, so it runs under a launcher with ``--strategy ddp`` (inside Jupyter Lightning
allows only the single-node ``ddp_notebook``)::

    torchrun --nproc_per_node 2 -m sematlas.training.run --profile ci --variant baseline --strategy ddp
    srun python -m sematlas.training.run --profile gpu --variant cbvae --strategy ddp

Under ``torchrun`` or ``srun`` the devices per node and the nodes come from the
launcher (:func:`sematlas.training.launcher.detect_launch`, logged in ``train.log``),
elsewhere from the profile's ``training.devices`` and ``training.num_nodes``; only
global rank 0 writes the run folder's files. Notebook 02 calls :func:`train_variant`
in-process on one device, or reads the outputs of a cluster run from the same run folder.

The run folder ``data/models/<profile>/<variant>/`` holds ``checkpoints/``
(``best.ckpt`` on val/loss and ``last.ckpt``), ``logs/`` (CSV, TensorBoard when
installed, W&B offline when asked), ``recon/``, ``params.yaml`` (resolved),
``splits.parquet``, ``versions.json``, ``fingerprint.json`` and ``train.log``.
Rerunning after a kill resumes from ``last.ckpt``; a changed fingerprint (the
training parameters or the model code) starts afresh instead, so a stale
checkpoint is never resumed with new settings.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import pandas as pd
import torch
import yaml

from sematlas.core.io import package_versions, read_json, write_json, write_parquet
from sematlas.core.params import Params, load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.data.studies import StudyDataModule
from sematlas.models import VARIANTS, ModelConfig, check_variants, model_entry
from sematlas.training.callbacks import BatchSeed, GRLLambdaRamp, ReconSnapshots, gradient_reversal
from sematlas.training.launcher import EpochMetricsOnEveryRank, detect_launch
from sematlas.training.module import AtlasModule
from sematlas.training.precision import run_precision
from sematlas.training.progress import TrainingProgressBar

_log = logging.getLogger(__name__)

#: Library sources whose change invalidates a checkpoint.
_MODEL_SOURCES = (
    "models",
    "training/module.py",
    "training/callbacks.py",
    "data/datamodule.py",
    "data/studies.py",
    "data/render.py",
    "core/metadata.py",
)


@dataclass(frozen=True)
class TrainedRun:
    """Where a finished run put its files.

    Attributes
    ----------
    run_dir : Path
    best_checkpoint, last_checkpoint : Path
    metrics : DataFrame
        The per-epoch CSV log (one row per epoch, train and val columns merged).
    resumed : bool
        Whether training resumed from ``last.ckpt``.
    timing : dict
        ``train_seconds`` and ``epochs`` summed over every session of this run
        (a resumed run adds to them), and ``studies_per_second``.
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: pd.DataFrame
    resumed: bool
    timing: dict[str, float]


class AtlasPayload(pl.Callback):
    """Adds what inference needs to every checkpoint under ``checkpoint["sematlas"]``.

    The metadata encoder (fitted on the training split), the grid and kernels,
    the profile and variant: :class:`sematlas.inference.atlas.AtlasModel` rebuilds a
    usable model from a checkpoint file alone.
    """

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = dict(payload)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["sematlas"] = self.payload


def model_config(params: Params, variant: str, datamodule: NeurosynthDataModule) -> ModelConfig:
    """The architecture of ``variant``: its choices from params (:meth:`ModelConfig.choices`), sizes from the data."""
    assert datamodule.encoder is not None, "call datamodule.setup() first"
    return model_entry(variant).config.from_params(
        params,
        in_channels=datamodule.n_channels,
        grid_shape=datamodule.grid.network_shape,
        cond_dim=datamodule.encoder.cond_dim,
        n_sparse=1,
        n_year_bins=datamodule.encoder.n_year_bins,
    )


def build_module(params: Params, variant: str, datamodule: NeurosynthDataModule, **options: Any) -> AtlasModule:
    """The LightningModule of ``variant`` with the profile's ``training`` section (``options``: the run options
    of :class:`AtlasModule`, e.g. a learning-rate schedule)."""
    return AtlasModule(
        model_config(params, variant, datamodule),
        params.training,
        mask=datamodule.brain_mask(),
        dataset_size=datamodule.train_size,
        **options,
    )


def make_datamodule(params: Params, paths: ProfilePaths) -> NeurosynthDataModule:
    """The profile's DataModule, set up (tables read, metadata encoder fitted on train)."""
    datamodule = NeurosynthDataModule.from_params(
        params,
        paths.processed,
        batch_size=params["training"]["batch_size"],
        use_subset=params["training"]["use_subset"],
    )
    datamodule.setup()
    return datamodule


def fingerprint(
    params: Params,
    variant: str,
    sections: Sequence[str] = (),
    sources: Sequence[str] = _MODEL_SOURCES,
    options: Mapping[str, Any] | None = None,
) -> str:
    """SHA-256 over what a checkpoint depends on: the parameters and the code.

    Parameters
    ----------
    params : mapping
        Validated profile parameters; ``seed``, ``curation``, ``render``, ``model``
        and ``training`` always count, plus ``sections``.
    variant : str
        The model's name.
    sections : sequence of str
        Further top-level parameter sections (e.g. ``pointcloud``).
        ``training.max_epochs`` and ``training.variant_epochs`` do not count: a longer run
        of the same model resumes.
    sources : sequence of str
        Library files or folders (relative to the package) whose code counts.
    options : mapping, optional
        Settings passed to the module beside the parameters (e.g. a learning-rate schedule).
    """
    digest = hashlib.sha256()
    plain = params.to_dict()
    relevant = {key: plain[key] for key in ("seed", "curation", "render", "model", "training", *sections)}
    # More (or fewer) epochs continue the same run: raising max_epochs resumes from last.ckpt.
    epochs = ("max_epochs", "variant_epochs")
    relevant["training"] = {key: value for key, value in relevant["training"].items() if key not in epochs}
    digest.update(yaml.safe_dump({"variant": variant, **relevant}, sort_keys=True).encode())
    if options:
        digest.update(yaml.safe_dump({"options": dict(options)}, sort_keys=True).encode())
    package = Path(__file__).resolve().parents[1]
    for name in sources:
        for source in sorted((package / name).rglob("*.py")) if (package / name).is_dir() else [package / name]:
            digest.update(source.read_bytes())
    return digest.hexdigest()


def _loggers(run_dir: Path, use_wandb: bool, variant: str, profile: str) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger

    # A fixed version: an auto-incremented one would silently start a new log on resume.
    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="logs", version=0)]
    try:
        import tensorboard  # noqa: F401  (optional)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=0))
    except ImportError:
        pass
    if use_wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(project="sematlas", name=f"{profile}-{variant}", save_dir=str(run_dir), offline=True)
        )
    return loggers


def _log_sessions(run_dir: Path) -> list[Path]:
    """CSV logs of earlier sessions (set aside on resume), oldest first, then the current one."""
    folder = run_dir / "logs" / "version_0"
    earlier = sorted(folder.glob("metrics_session_*.csv"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [*earlier, folder / "metrics.csv"]


def _set_aside_log(run_dir: Path) -> None:
    """Keep the log of a killed session: Lightning's CSVLogger deletes ``metrics.csv`` on start."""
    current = run_dir / "logs" / "version_0" / "metrics.csv"
    if current.is_file():
        current.rename(current.with_name(f"metrics_session_{len(_log_sessions(run_dir)) - 1}.csv"))


def _epoch_metrics(run_dir: Path) -> pd.DataFrame:
    """Per-epoch metrics over every session of a run (the latest row wins for a repeated epoch)."""
    logs = [pd.read_csv(path) for path in _log_sessions(run_dir) if path.is_file()]
    if not logs:
        return pd.DataFrame()
    frame = pd.concat(logs, ignore_index=True)
    epoch_columns = [c for c in frame.columns if c.startswith("val/") or c.endswith("_epoch") or c == "train/kl_share"]
    # Lightning writes train and val rows separately: combine them per epoch, the last session winning.
    return frame.groupby("epoch")[epoch_columns].last().reset_index()


def _starting_point(resumed: bool, callbacks: Sequence[pl.Callback]) -> str:
    """How a run starts, for its log: its own last checkpoint, another run's weights, or a seeded initialisation."""
    if resumed:
        return "resuming from last.ckpt"
    from sematlas.training.ensemble import InitialWeights  # here: ensemble imports this module

    initial = [callback.checkpoint for callback in callbacks if isinstance(callback, InitialWeights)]
    return f"starting from the weights of {initial[0]}" if initial else "from scratch"


def fit_run(
    module: pl.LightningModule,
    datamodule: StudyDataModule,
    run_dir: Path,
    params: Params,
    *,
    name: str,
    run_fingerprint: str,
    payload: Mapping[str, Any],
    callbacks: list[pl.Callback],
    train_size: int,
    strategy: str | None = None,
    variant: str | None = None,
) -> TrainedRun:
    """Fit a LightningModule in a run folder: fresh start, resume or reuse, with the run's files.

    Every trained model of the compendium goes through here, so each run folder
    has the same layout (see the module docstring) and the same resume rules.
    Under ``torchrun`` or ``srun`` the Trainer gets the launcher's devices and nodes
    (:func:`~sematlas.training.launcher.detect_launch`); every rank makes the same
    fresh-or-resume decision, global rank 0 alone writes the run's files, and the
    returned run is read by every rank after rank 0 has finished them.

    Parameters
    ----------
    module, datamodule
        What to fit and on what; the run draws from ``datamodule.for_run(name, seed)``, so runs
        sharing one DataModule draw independently of each other and of their order.
    run_dir : Path
        The run folder.
    params : mapping
        Validated profile parameters (``training`` sets the Trainer).
    name : str
        The run's name in logs (e.g. ``cbvae``).
    run_fingerprint : str
        What the checkpoints depend on (:func:`fingerprint`); a change trains afresh.
    payload : mapping
        Stored under ``checkpoint["sematlas"]`` for the inference loaders.
    callbacks : list
        Run-specific callbacks, added after the checkpointing and progress bar.
    train_size : int
        Training studies per epoch (for the throughput in ``timing.json``; ``datamodule.studies_per_epoch_count``).
    strategy : str, optional
        Overrides ``training.strategy``.
    variant : str, optional
        The model trained, for ``training.precision: auto`` (:func:`~sematlas.training.precision.run_precision`).

    Returns
    -------
    TrainedRun
    """
    t = params["training"]
    launch = detect_launch(t["devices"], t["num_nodes"])
    checkpoints = run_dir / "checkpoints"
    stamp = run_dir / "fingerprint.json"
    # Every process of a launch decides alone, before any process group exists, from what rank 0 is about
    # to change: rank 0 deletes a stale run before writing the new stamp, so another rank reads either the
    # old stamp (stale: no resume) or the new one (the deletion done); it never writes.
    stale = stamp.is_file() and read_json(stamp).get("fingerprint") != run_fingerprint
    if launch.is_main:
        if stale:
            _log.warning("%s: parameters or model code changed since the last run: training afresh", name)
            for folder in ("checkpoints", "logs", "tensorboard", "recon", "snapshots"):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json({"fingerprint": run_fingerprint, "name": name, "profile": params["profile"]}, stamp)
        _write_run_files(run_dir, params, datamodule)
    datamodule = datamodule.for_run(name, seed=int(params["seed"]))

    all_callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=str(checkpoints), filename="best", monitor="val/loss", mode="min", enable_version_counter=False
        ),
        # A checkpoint of its own for resuming: Lightning's save_last writes last.ckpt only in epochs that also
        # improved the monitored metric, so a run killed after a non-improving epoch would lose that epoch.
        pl.callbacks.ModelCheckpoint(
            dirpath=str(checkpoints),
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        ),
        AtlasPayload(payload),
        BatchSeed(int(params["seed"]), name),
        EpochMetricsOnEveryRank(),
        TrainingProgressBar(name, refresh_rate=max(1, train_size // t["batch_size"] // 10)),
        *callbacks,
    ]
    last = checkpoints / "last.ckpt"
    resumed = not stale and last.is_file()
    if resumed and launch.is_main:
        _set_aside_log(run_dir)
    trainer = pl.Trainer(
        max_epochs=t["max_epochs"],
        accelerator=t["accelerator"],
        devices=launch.devices,
        num_nodes=launch.num_nodes,
        strategy=strategy or t["strategy"],
        precision=cast(Any, run_precision(params.training, variant)),  # a Lightning precision string
        deterministic=t["deterministic"],
        default_root_dir=str(run_dir),
        logger=_loggers(run_dir, t["wandb"], name, params["profile"]),
        callbacks=all_callbacks,
        log_every_n_steps=1,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # The run's log, rank 0's alone, keeps INFO records of Lightning and of this module, even where the caller
    # quietened Lightning's console.
    handler: logging.Handler = logging.FileHandler(run_dir / "train.log") if launch.is_main else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    run_loggers = [logging.getLogger("lightning.pytorch"), _log] if launch.is_main else []
    console_levels = [logger.level for logger in run_loggers]
    for logger in run_loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    timing_file = run_dir / "timing.json"
    timing = read_json(timing_file) if resumed and timing_file.is_file() else {"train_seconds": 0.0, "epochs": 0}
    try:
        _log.info("training %s on profile %s (%s)", name, params["profile"], _starting_point(resumed, all_callbacks))
        _log.info("devices and nodes: %s", launch.describe())
        # A checkpoint saved at the end of epoch e (0-based) holds e + 1 completed epochs.
        completed_before = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1 if resumed else 0
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
        timing["train_seconds"] += time.perf_counter() - started
        timing["epochs"] += max(trainer.current_epoch - completed_before, 0)
        best = trainer.checkpoint_callback  # the first ModelCheckpoint: "best", on val/loss
        _log.info(
            "finished at epoch %d, best val/loss %s",
            trainer.current_epoch,
            best.best_model_score if isinstance(best, pl.callbacks.ModelCheckpoint) else None,
        )
    finally:
        for logger, level in zip(run_loggers, console_levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()
    timing["studies_per_second"] = (
        timing["epochs"] * train_size / timing["train_seconds"]
        if timing["train_seconds"] > 0 and timing["epochs"]
        else float("nan")
    )
    if launch.is_main:
        write_json(timing, timing_file)
    # The other ranks read the logs once rank 0 has finished them (a no-op without a process group).
    trainer.strategy.barrier("sematlas-run-files")
    return TrainedRun(
        run_dir=run_dir,
        best_checkpoint=checkpoints / "best.ckpt",
        last_checkpoint=last,
        metrics=_epoch_metrics(run_dir),
        resumed=resumed,
        timing=timing,
    )


def train_variant(
    params: Params,
    variant: str,
    paths: ProfilePaths,
    datamodule: NeurosynthDataModule | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    strategy: str | None = None,
    run_name: str | None = None,
    module_options: Mapping[str, Any] | None = None,
    sections: Sequence[str] = (),
    depends_on: Mapping[str, str] | None = None,
) -> TrainedRun:
    """Train (or resume, or reuse) one registered volumetric variant of a profile.

    Parameters
    ----------
    params : mapping
        Validated profile parameters.
    variant : str
        A name of :data:`sematlas.models.MODELS` (``baseline``, ``cbvae``, ``tcvae_sbd``,
        ``hvae``, or one added by :func:`sematlas.models.register`). Its config
        (:func:`model_config`, e.g. the ``hvae``'s ``top_dim`` and ``top_beta`` from the
        ``hierarchical`` section) counts in the fingerprint; parameters it does not read
        beside it (the stage gate's thresholds) do not.
    paths : ProfilePaths
    datamodule : NeurosynthDataModule, optional
        A set-up DataModule to share between variants.
    extra_callbacks : list, optional
        Added after the module's own: recon snapshots and the GRL ramp (networks with a
        gradient reversal layer).
    strategy : str, optional
        Overrides ``training.strategy`` (the notebook passes ``auto``; a cluster ``ddp``).
    run_name : str, optional
        The run folder under ``data/models/<profile>/`` (a relative path such as
        ``ensemble/member_1``); defaults to the variant, whose run then trains for
        ``training.variant_epochs[variant]`` epochs when the profile sets them.
    module_options : mapping, optional
        Run options of :class:`AtlasModule` (e.g. a learning-rate schedule); they count in the fingerprint.
    sections : sequence of str
        Further parameter sections the run depends on (see :func:`fingerprint`).
    depends_on : mapping of str to str, optional
        Identities of inputs beside the parameters and the code (e.g. the SHA-256 of a
        checkpoint the run starts from); they count in the fingerprint.

    Returns
    -------
    TrainedRun

    Raises
    ------
    ParameterError
        ``model.variants`` names an unregistered variant.
    ValueError
        ``variant`` is not registered.
    """
    check_variants(params)
    if run_name is None and variant in params.training.variant_epochs:
        # The variant's own run trains for its own budget; named runs (ensembles, ablations) set theirs.
        epochs = params.training.variant_epochs[variant]
        params = override_params(params, {"training": {"max_epochs": epochs}}, f"training.variant_epochs.{variant}")
    t = params["training"]
    pl.seed_everything(int(params["seed"]), workers=True, verbose=False)
    if t["num_threads"] > 0:
        torch.set_num_threads(t["num_threads"])
    datamodule = datamodule or make_datamodule(params, paths)
    assert datamodule.encoder is not None
    payload = {
        "profile": params["profile"],
        "variant": variant,
        "voxel_size": datamodule.voxel_size,
        "fwhms": list(datamodule.fwhms),
        "kernel_choice": datamodule.kernel_choice,
        "metadata_encoder": datamodule.encoder.to_dict(),
    }
    options = dict(module_options or {})
    module = build_module(params, variant, datamodule, **options)
    callbacks: list[pl.Callback] = [ReconSnapshots(t["recon_every_n_epochs"], t["num_recon_samples"])]
    if gradient_reversal(module) is not None:
        callbacks.append(GRLLambdaRamp(max_lambda=t["grl_max_lambda"]))
    callbacks += extra_callbacks or []
    # The built config counts too: it holds what the model reads beyond the model and training sections
    # (the hvae's level sizes), and not the rest of those sections (the hvae's stage-gate thresholds).
    trained_by = {"config": module.config.to_dict(), **({"depends_on": dict(depends_on)} if depends_on else {})}
    return fit_run(
        module,
        datamodule,
        paths.models / (run_name or variant),
        params,
        name=run_name or variant,
        run_fingerprint=fingerprint(params, variant, sections=sections, options={**options, **trained_by}),
        payload=payload,
        callbacks=callbacks,
        train_size=datamodule.studies_per_epoch_count,
        strategy=strategy,
        variant=variant,
    )


def _write_run_files(run_dir: Path, params: Params, datamodule: Any) -> None:
    """Resolved params, split ids and package versions next to the weights.

    ``datamodule.tables`` maps each split to an object with a ``studies`` table.
    """
    from sematlas.core.io import atomic_path

    with atomic_path(run_dir / "params.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))
    splits = pd.concat([table.studies[["id"]].assign(split=split) for split, table in datamodule.tables.items()])
    write_parquet(splits.reset_index(drop=True), run_dir / "splits.parquet")
    write_json(package_versions(), run_dir / "versions.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sematlas.training.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--strategy", help="override training.strategy (e.g. ddp under torchrun/srun)")
    args = parser.parse_args(argv)
    params = load_params(args.profile)
    launch = detect_launch(params.training.devices, params.training.num_nodes)
    # One console of progress for the job: the other ranks report warnings and errors only.
    logging.basicConfig(
        level=logging.INFO if launch.is_main else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {launch.global_rank}] %(name)s: %(message)s",
    )
    run = train_variant(params, args.variant, ProfilePaths.for_profile(args.profile), strategy=args.strategy)
    _log.info("best checkpoint: %s; run folder: %s", run.best_checkpoint, run.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
