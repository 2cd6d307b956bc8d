"""Progress bars: the library's helper, the pipeline's copy of a kernel's bars to the terminal, the training bar."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from sematlas.core.progress import PROGRESS_COLUMNS, PROGRESS_FILE, PROGRESS_LABEL, progress, progress_bar
from sematlas.pipeline.console import StageConsole

#: A bar's counters: ``n/total [elapsed<remaining``, both times as mm:ss.
COUNTS = r"(\d+)/(\d+) \[(\d\d:\d\d)<(\d\d:\d\d)"


@pytest.fixture
def channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the pipeline gives a stage's kernel: the side channel, the stage and its terminal's width."""
    path = tmp_path / "progress.txt"
    monkeypatch.setenv(PROGRESS_FILE, str(path))
    monkeypatch.setenv(PROGRESS_LABEL, "07_clustering")
    monkeypatch.setenv(PROGRESS_COLUMNS, "90")
    return path


def _states(text: str) -> list[str]:
    """Every redraw of the bars written to a side channel."""
    return [state.rstrip() for state in re.split(r"[\r\n]", text) if state.strip()]


def test_under_the_pipeline_a_bar_names_the_stage_and_shows_elapsed_and_remaining_time(channel: Path):
    with progress_bar(range(4), "rendering test", unit="batch") as bar:
        for _ in bar:
            pass
    states = _states(channel.read_bytes().decode())
    assert states[0].startswith("07_clustering  rendering test:   0%|")
    assert re.search(r"\| 0/4 \[00:00<\?, \?batch/s\]$", states[0])  # nothing to estimate from yet
    last = states[-1]
    assert last.startswith("07_clustering  rendering test: 100%|")
    assert re.search(COUNTS, last).groups()[:2] == ("4", "4")
    assert all(len(state) <= 90 for state in states)
    assert channel.read_bytes().decode().endswith("\n")  # progress_bar leaves a finished bar on screen


def test_a_library_loop_yields_every_item_and_clears_its_bar_when_done(channel: Path):
    assert list(progress(iter(range(5)), "encoding train", total=5)) == [0, 1, 2, 3, 4]
    text = channel.read_bytes().decode()
    assert re.search(r"encoding train:.*\| 0/5 \[00:00<\?", text)
    assert not _states(text.rsplit("\r", 1)[-1])  # the last redraw is the clearing one


def test_outside_the_pipeline_a_bar_is_tqdms_own_without_a_stage(monkeypatch: pytest.MonkeyPatch, capsys):
    for name in (PROGRESS_FILE, PROGRESS_LABEL):
        monkeypatch.delenv(name, raising=False)
    with progress_bar(range(3), "rendering test") as bar:
        assert bar.desc == "rendering test: "
        list(bar)
    assert re.search(r"rendering test: 100%\|.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d", capsys.readouterr().err)


# ---- the pipeline's side of the channel ---------------------------------------------------------


def test_the_console_gives_the_kernel_its_channel_and_takes_it_back(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(PROGRESS_LABEL, "an outer value")
    with StageConsole("02_train_volumetric", io.StringIO(), interactive=True):
        path = Path(os.environ[PROGRESS_FILE])
        assert path.is_file()
        assert os.environ[PROGRESS_LABEL] == "02_train_volumetric"
        assert int(os.environ[PROGRESS_COLUMNS]) > 0
    assert not path.exists() and PROGRESS_FILE not in os.environ
    assert os.environ[PROGRESS_LABEL] == "an outer value"


def _kernel_writes(text: str) -> None:
    with open(os.environ[PROGRESS_FILE], "a", encoding="utf-8", newline="") as channel:
        channel.write(text)


def test_on_a_terminal_every_redraw_clears_the_line_and_the_kernel_comes_before_the_runners_bar():
    terminal = io.StringIO()
    with StageConsole("05_train_hierarchical", terminal, interactive=True) as console:
        _kernel_writes("\rhvae epoch 1/2: 50%\rhvae epoch 1/2: 100%\n")
        console.write("\rcells 40%")  # the runner's bar over the notebook's cells
        _kernel_writes("\rencoding test █")
    assert terminal.getvalue() == (
        "\r\x1b[Khvae epoch 1/2: 50%\r\x1b[Khvae epoch 1/2: 100%\n\r\x1b[Kcells 40%\r\x1b[Kencoding test █\n"
    )  # and a line break for what the runner prints next


def test_in_a_log_file_each_bar_left_on_screen_is_one_line_with_its_last_state():
    log = io.StringIO()
    with StageConsole("05_train_hierarchical", log, interactive=False) as console:
        _kernel_writes("\rhvae epoch 2/2:  50%\rhvae epoch 2/2: 100%|#| 14/14 [00:31<00:00]   \n")
        _kernel_writes("\rencoding train: 10%\r                   \r")  # a cleared bar: nothing
        console.drain()
        assert log.getvalue() == "hvae epoch 2/2: 100%|#| 14/14 [00:31<00:00]\n"
        _kernel_writes("\rencoding test:  30%\x1b[A")  # cut short: the stage failed here
    assert log.getvalue().splitlines() == ["hvae epoch 2/2: 100%|#| 14/14 [00:31<00:00]", "encoding test:  30%"]


# ---- the training bar -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_training_bar_shows_the_run_and_epoch_count_with_the_time_left_in_the_epoch(
    channel: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(PROGRESS_COLUMNS, "200")  # room for the losses after the times
    import lightning.pytorch as pl
    import torch

    from sematlas.training.progress import TrainingProgressBar

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            self.log("val/loss", self.layer(batch[0]).pow(2).mean(), prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(12, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[TrainingProgressBar("cbvae")],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), loader, loader)
    states = _states(channel.read_bytes().decode())
    epoch_ends = [s for s in states if re.match(r"07_clustering  cbvae epoch [12]/2: 100%", s)]
    assert {s.split(":")[0] for s in epoch_ends} == {"07_clustering  cbvae epoch 1/2", "07_clustering  cbvae epoch 2/2"}
    assert all(re.search(COUNTS, s).groups()[:2] == ("4", "4") for s in epoch_ends)
    assert "val/loss=" in epoch_ends[-1] and "train/loss=" in epoch_ends[-1]
    assert not any("v_num" in s or "_epoch=" in s or s.startswith("Epoch") for s in states)
    assert any(s.startswith("07_clustering  cbvae validation:") for s in states)
