"""Scale-out: devices and nodes from the launcher, and the README's torchrun command on two CPU processes."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

import sematlas
from sematlas.inference.atlas import AtlasModel
from sematlas.training.launcher import Launch, detect_launch

#: Variables of the launchers (and of Lightning's own child processes) that a test sets or must not inherit.
_LAUNCH_VARIABLES = (
    "TORCHELASTIC_RUN_ID",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_NNODES",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_JOB_NAME",
)


@pytest.fixture
def launch_env(monkeypatch: pytest.MonkeyPatch):
    """Set launcher variables on a clean slate (none inherited from the shell running the tests)."""
    for name in _LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_torchrun_gives_devices_nodes_and_rank(launch_env):
    # Rank 5 of two nodes of four processes: the second node, as `torchrun --nnodes 2 --nproc_per_node 4` sets it.
    launch_env(
        TORCHELASTIC_RUN_ID="job", WORLD_SIZE="8", LOCAL_WORLD_SIZE="4", RANK="5", LOCAL_RANK="1", GROUP_RANK="1"
    )
    launch = detect_launch(devices=1, num_nodes=1)
    assert launch == Launch("torchrun", devices=4, num_nodes=2, global_rank=5)
    assert launch.world_size == 8 and not launch.is_main
    assert launch.describe() == "4 devices x 2 nodes from torchrun (world size 8)"
    # The check that stopped the README's command before now passes.
    TorchElasticEnvironment().validate_settings(num_devices=launch.devices, num_nodes=launch.num_nodes)
    with pytest.raises(ValueError, match="does not match the world size"):
        TorchElasticEnvironment().validate_settings(num_devices=1, num_nodes=1)


def test_srun_gives_devices_nodes_and_rank(launch_env):
    launch_env(SLURM_NTASKS="6", SLURM_NTASKS_PER_NODE="3", SLURM_NNODES="2", SLURM_PROCID="0", SLURM_JOB_NAME="atlas")
    launch_env(SLURM_LOCALID="0", SLURM_NODEID="0")
    launch = detect_launch(devices=1, num_nodes=1)
    assert launch == Launch("srun", devices=3, num_nodes=2, global_rank=0) and launch.is_main
    SLURMEnvironment().validate_settings(num_devices=launch.devices, num_nodes=launch.num_nodes)


def test_torchrun_inside_a_slurm_job_is_torchrun(launch_env):
    # Lightning's order: torchrun started inside an allocation launches the processes, not SLURM.
    launch_env(SLURM_NTASKS="1", SLURM_NNODES="1", SLURM_PROCID="0", SLURM_JOB_NAME="atlas")
    launch_env(TORCHELASTIC_RUN_ID="job", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", RANK="1", LOCAL_RANK="1")
    assert detect_launch(devices=1, num_nodes=1) == Launch("torchrun", devices=2, num_nodes=1, global_rank=1)


def test_without_a_launcher_the_profile_counts(launch_env):
    assert detect_launch(devices=2, num_nodes=1) == Launch("profile", devices=2, num_nodes=1, global_rank=0)
    # An interactive SLURM shell (`srun --job-name interactive --pty bash`) is no launch, for Lightning either.
    launch_env(SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="4", SLURM_NNODES="1", SLURM_PROCID="0")
    launch_env(SLURM_JOB_NAME="interactive")
    assert detect_launch(devices=1, num_nodes=1).launcher == "profile"


def test_the_processes_lightning_starts_itself_are_not_rank_zero(launch_env):
    # Lightning's ddp launcher reruns the command for devices 1.. with LOCAL_RANK and NODE_RANK set.
    launch_env(LOCAL_RANK="1", NODE_RANK="1", WORLD_SIZE="4")
    launch = detect_launch(devices=2, num_nodes=2)
    assert launch == Launch("profile", devices=2, num_nodes=2, global_rank=3) and not launch.is_main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torchrun() -> list[str]:
    """This interpreter's ``torchrun`` (the same entry point as ``python -m torch.distributed.run``)."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _set_training(project: Path, **training: object) -> None:
    """Change the scratch project's ``ci`` profile: the smallest models, and ``training`` on top."""
    profile = project / "params" / "ci.yaml"
    ci = yaml.safe_load(profile.read_text())
    ci["model"] |= {"z_dim": 4, "base_channels": 4, "growth_rate": 4, "hidden_dim": 16}
    ci["training"] |= training
    profile.write_text(yaml.safe_dump(ci))


def _run_readme_command(project: Path) -> str:
    """The README's torchrun command in ``project``; returns what it printed."""
    env = {
        **os.environ,
        "SEMATLAS_ROOT": str(project),
        "PYTHONPATH": os.pathsep.join([str(Path(sematlas.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
        # torchrun reads its options from PET_* variables too: a free port keeps the command as the README has it.
        "PET_MASTER_PORT": str(_free_port()),
    }
    command = "--nproc_per_node 2 -m sematlas.training.run --profile ci --variant baseline --strategy ddp"
    done = subprocess.run(
        [*_torchrun(), *command.split()], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr + done.stdout


@pytest.mark.slow
def test_the_readme_torchrun_command_trains_on_two_cpu_processes(project: Path, processed: Path):
    # One epoch of every training study (a per-variant budget would win over max_epochs, so it is set too).
    _set_training(project, batch_size=8, max_epochs=1, variant_epochs={"baseline": 1}, studies_per_epoch=0)
    shutil.copytree(processed, project / "data" / "processed" / "ci")
    console = _run_readme_command(project)

    run_dir = project / "data" / "models" / "ci" / "baseline"
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] + 1 == 1  # the scratch profile's one epoch
    # Each rank trained on its half of the training split: ceil(half / batch) steps, not ceil(all / batch).
    n_train = int((pd.read_parquet(run_dir / "splits.parquet")["split"] == "train").sum())
    assert checkpoint["global_step"] == math.ceil(math.ceil(n_train / 2) / 8) < math.ceil(n_train / 8)

    atlas = AtlasModel.load(run_dir / "checkpoints" / "best.ckpt")
    assert (atlas.payload["profile"], atlas.variant) == ("ci", "baseline")
    assert all(torch.isfinite(weight).all() for weight in atlas.network.state_dict().values())
    maps = atlas.decode(torch.zeros(2, atlas.z_dim))
    assert maps.shape == (2, len(atlas.payload["fwhms"]), *atlas.grid.shape) and torch.isfinite(maps).all()

    # One set of run files, written by rank 0 alone.
    log = (run_dir / "train.log").read_text()
    assert log.count("training baseline on profile ci (from scratch)") == 1
    assert "devices and nodes: 2 devices x 1 node from torchrun (world size 2)" in log
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(path.name for path in (run_dir / "logs").iterdir()) == ["version_0"]
    assert {"fingerprint.json", "params.yaml", "splits.parquet", "versions.json", "timing.json"} <= {
        path.name for path in run_dir.iterdir()
    }
    # One console of progress: rank 0 reports, rank 1 keeps to warnings.
    assert re.search(r"INFO \[rank 0\] \S+: best checkpoint: ", console) and "INFO [rank 1]" not in console

    # A changed parameter: rank 0 deletes the stale run while rank 1, started with it, must not resume it.
    _set_training(project, lr=0.002)
    console = _run_readme_command(project)
    assert console.count("changed since the last run: training afresh") == 1
    log = (run_dir / "train.log").read_text()
    assert "resuming" not in log
    assert log.count("training baseline on profile ci (from scratch)") == 2
    retrained = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert retrained["hyper_parameters"]["training"]["lr"] == 0.002 and retrained["epoch"] == 0


def test_the_slurm_script_runs_one_task_per_gpu_and_the_readme_command():
    script = Path(__file__).resolve().parents[1] / "examples" / "slurm" / "train_gpu.sbatch"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.MULTILINE))
    # Lightning takes devices from --ntasks-per-node: one process per GPU.
    assert options["ntasks-per-node"] == options["gpus-per-node"] and int(options["nodes"]) >= 1
    command = "srun python -m sematlas.training.run --profile gpu --variant cbvae --strategy ddp"
    assert re.findall(r"^srun .*", text, flags=re.MULTILINE) == [command]
    assert command in (script.parents[2] / "README.md").read_text()
