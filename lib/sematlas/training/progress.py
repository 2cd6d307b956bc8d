"""The training progress bar: Lightning's, with the run's name and the epoch count, where the user sees it.

Under the pipeline its bars go to the stage's side channel
(:mod:`sematlas.core.progress`), one line at a time::

    02_train_volumetric  cbvae epoch 3/10:  45%|#####      | 120/266 [00:40<00:49, 3.0batch/s, train/loss=812.]

In a terminal or a notebook they are tqdm's usual ones (text, or a widget).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from sematlas.core.progress import describe, progress_bar


def _count(total: float) -> float | None:
    """A batch count tqdm can show: None for Lightning's ``inf`` (an iterable without a length)."""
    return None if math.isinf(total) or math.isnan(total) else total


class TrainingProgressBar(TQDMProgressBar):
    """Per-epoch training bar (``<run> epoch E/N``, elapsed and time left in the epoch) and a validation bar.

    The finished training bar stays on screen, one line per run; the validation
    bar takes the training bar's line for a moment and clears.

    Parameters
    ----------
    run_name : str
        What trains, e.g. the variant (``cbvae``) or an ensemble member.
    refresh_rate : int
        Redraw every this many batches.
    """

    def __init__(self, run_name: str, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.run_name = run_name

    def init_train_tqdm(self) -> Any:
        return progress_bar(description=self.run_name, unit="batch", smoothing=0, disable=self.is_disabled)

    def init_validation_tqdm(self) -> Any:
        fitting = self.trainer.state.fn != "validate"
        return progress_bar(
            description=f"{self.run_name} validation", unit="batch", leave=not fitting, disable=self.is_disabled
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning's own version would draw "Epoch 2" first; the description is set before the one redraw.
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        bar = self.train_progress_bar
        bar.set_description(describe(f"{self.run_name} epoch {trainer.current_epoch + 1}{epochs}"), refresh=False)
        bar.initial = 0
        bar.reset(total=_count(self.total_train_batches))

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.has_dataloader_changed(dataloader_idx):
            return
        bar = self.val_progress_bar
        bar.set_description(describe(f"{self.run_name} validation"), refresh=False)
        bar.initial = 0
        bar.reset(total=_count(self.total_val_batches_current_dataloader))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The latest step's losses and the last validation's, under short names.

        The logger's version number and the epoch means of the last epoch are left out:
        they say little to someone watching the run and would push the time left off the line.
        """
        metrics = super().get_metrics(trainer, pl_module)
        return {
            name.removesuffix("_step"): value
            for name, value in metrics.items()
            if name != "v_num" and not name.endswith("_epoch")
        }
