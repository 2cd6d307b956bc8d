"""What the launcher of this process says: devices per node, nodes and this process's rank.

Under ``torchrun`` or ``srun`` every process of a job starts the same command, and
the launcher, not the profile, knows how many there are: Lightning checks that
``devices * num_nodes`` equals the launcher's world size and stops otherwise. So
:func:`detect_launch` takes them from the launcher's environment, recognising the
launchers as Lightning does (``TorchElasticEnvironment`` before ``SLURMEnvironment``,
an interactive SLURM job being no launch), and keeps the profile's values outside
one. It also gives the global rank before any process group exists, so that only
rank 0 writes the run folder's own files. :class:`EpochMetricsOnEveryRank` keeps the
ranks' collectives in step at the end of each training epoch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """How this process was started.

    Attributes
    ----------
    launcher : str
        ``torchrun``, ``srun`` or ``profile`` (no external launcher: the profile's
        ``training.devices`` and ``training.num_nodes``, Lightning starting any further
        processes itself).
    devices : int
        Processes (devices) per node.
    num_nodes : int
    global_rank : int
        This process's rank among ``devices * num_nodes``.
    """

    launcher: str
    devices: int
    num_nodes: int
    global_rank: int

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def is_main(self) -> bool:
        """Whether this is global rank 0, the one process that writes the run folder's files."""
        return self.global_rank == 0

    def describe(self) -> str:
        """A line for the run's log, e.g. ``2 devices x 1 node from torchrun (world size 2)``."""
        return (
            f"{self.devices} device{'s' * (self.devices != 1)} x {self.num_nodes} node{'s' * (self.num_nodes != 1)}"
            f" from {self.launcher} (world size {self.world_size})"
        )


def detect_launch(devices: int, num_nodes: int) -> Launch:
    """The launch of this process, read from its environment.

    Parameters
    ----------
    devices, num_nodes : int
        The profile's ``training.devices`` and ``training.num_nodes``, used outside a launcher.

    Returns
    -------
    Launch
        Under ``torchrun``: ``LOCAL_WORLD_SIZE`` devices, ``WORLD_SIZE / LOCAL_WORLD_SIZE``
        nodes, rank ``RANK``. Under ``srun``: ``SLURM_NTASKS_PER_NODE`` devices (Lightning
        requires it for more than one task), ``SLURM_NNODES`` nodes, rank ``SLURM_PROCID``.
        Otherwise the profile's values, with the rank Lightning gives the processes it
        starts itself (``NODE_RANK * devices + LOCAL_RANK``, 0 for the first).
    """
    env = os.environ
    if TorchElasticEnvironment.detect():
        per_node = int(env["LOCAL_WORLD_SIZE"])
        return Launch("torchrun", per_node, int(env["WORLD_SIZE"]) // per_node, int(env["RANK"]))
    if SLURMEnvironment.detect():
        nodes = int(env["SLURM_NNODES"])
        per_node = int(env.get("SLURM_NTASKS_PER_NODE", int(env["SLURM_NTASKS"]) // nodes))
        return Launch("srun", per_node, nodes, int(env["SLURM_PROCID"]))
    rank = int(env.get("NODE_RANK", 0)) * devices + int(env.get("LOCAL_RANK", 0))
    return Launch("profile", devices, num_nodes, rank)


class EpochMetricsOnEveryRank(pl.Callback):
    """Compute a training epoch's metrics on every rank before the progress bar does (place it ahead of the bar).

    The progress bar runs on global rank 0 alone and reads the epoch's metrics when a
    training epoch ends; for metrics logged with ``sync_dist=True`` that read is a
    collective, which the other ranks would meet only at their next one (a callback's
    reduce, a checkpoint's barrier): the job then fails with mismatched collectives or
    hangs (Lightning issue #21264). Read here on every rank, the values are cached for
    the bar and every rank's collectives stay in one order.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        computed = trainer.progress_bar_metrics
        _log.debug("rank %d: epoch %d metrics %s", trainer.global_rank, trainer.current_epoch, sorted(computed))
