"""AtlasModule and callbacks: reproducible CPU fits, KL controller, GRL ramp, schedules, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import COND_DIM, tiny_config, tiny_training
from torch.utils.data import DataLoader, Dataset

from sematlas.core.stats import balanced_accuracy
from sematlas.models import VARIANTS
from sematlas.training.callbacks import GRLLambdaRamp, dann_lambda
from sematlas.training.module import AtlasModule, beta_at, beta_tc_at, lr_at


class TinyMaps(Dataset):
    """Random studies in the data contract's format (48^3 network grid, 2 kernels)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.image = torch.rand(n, 2, 48, 48, 48, generator=g)
        self.cond = torch.randn(n, COND_DIM, generator=g)
        self.sparse = torch.randn(n, 1, generator=g)
        self.observed = torch.rand(n, 1, generator=g) < 0.3
        self.year_bin = torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict[str, Any]:
        meta = {
            "cond": self.cond[i],
            "sparse": torch.where(self.observed[i], self.sparse[i], 0.0),
            "sparse_mask": self.observed[i],
            "year_bin": self.year_bin[i],
            "task": torch.tensor(0),
        }
        return {"image": self.image[i], "meta": meta, "id": f"study-{i}"}


class StepLosses(pl.Callback):
    """Records every training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


def brain_mask() -> torch.Tensor:
    """A box standing in for the brain, on the 48^3 network grid."""
    mask = torch.zeros(48, 48, 48, dtype=torch.bool)
    mask[4:42, 5:46, 6:40] = True
    return mask


def fit(
    variant: str,
    seed: int = 0,
    max_epochs: int = 2,
    callbacks: list[pl.Callback] | None = None,
    validate: bool = True,
    config: dict[str, Any] | None = None,
    precision: str = "32-true",
    **training: Any,
) -> tuple[AtlasModule, pl.Trainer, list[float]]:
    """Fit a tiny module on CPU, deterministically; returns it, its trainer and the step losses.

    ``config`` changes the model's fields, ``training`` the training section's; ``precision`` is the Trainer's.
    """
    pl.seed_everything(seed, verbose=False)
    model_config = tiny_config(variant, **(config or {}))
    module = AtlasModule(model_config, tiny_training(**training), brain_mask(), dataset_size=8)
    recorder = StepLosses()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        precision=precision,  # type: ignore[arg-type]  # a Lightning precision string
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        callbacks=[recorder, *(callbacks or [])],
    )
    train = DataLoader(TinyMaps(8, seed=1), batch_size=4, shuffle=True)
    val = DataLoader(TinyMaps(4, seed=2), batch_size=4)
    trainer.fit(module, train, val)
    return module, trainer, recorder.losses


# ---- schedules -------------------------------------------------------------------------------------


def test_beta_schedules() -> None:
    assert beta_at(3.0, "constant", 0.5) == 0.5
    assert [beta_at(e, "linear", 2.0, warmup_epochs=4) for e in (0, 1, 4, 9)] == [0.0, 0.5, 2.0, 2.0]
    assert beta_at(5.0, "linear", 2.0, warmup_epochs=0) == 2.0
    # Cyclical (Fu et al. 2019): cycles of 4 epochs, ramp over the first half.
    values = [beta_at(e, "cyclical", 1.0, cycle_epochs=4, cycle_ratio=0.5) for e in (0, 1, 2, 3, 4, 5)]
    assert values == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="schedule"):
        beta_at(0.0, "cosine", 1.0)  # type: ignore[arg-type]


def test_cosine_restart_lr_starts_every_cycle_at_its_maximum() -> None:
    assert lr_at(7.3, "constant", 1e-3) == 1e-3
    starts = [lr_at(e, "cosine_restarts", 1e-3, cycle_epochs=2, min_ratio=0.1) for e in (0, 2, 4, 6)]
    assert starts == pytest.approx([1e-3] * 4)
    # Half-way through a cycle the rate is half-way between lr_min and lr_max; it ends near lr_min.
    assert lr_at(3.0, "cosine_restarts", 1e-3, cycle_epochs=2, min_ratio=0.1) == pytest.approx(0.55e-3)
    assert lr_at(3.999, "cosine_restarts", 1e-3, cycle_epochs=2, min_ratio=0.1) == pytest.approx(1e-4, rel=1e-4)
    with pytest.raises(ValueError, match="lr schedule"):
        lr_at(0.0, "step", 1e-3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr_schedule"):
        AtlasModule(tiny_config("cbvae"), tiny_training(), lr_schedule="step")  # type: ignore[arg-type]


def test_beta_tc_warm_up() -> None:
    assert [beta_tc_at(e, 6.0, annealing_epochs=3) for e in (0, 1.5, 3, 10)] == [0.0, 3.0, 6.0, 6.0]
    assert beta_tc_at(0.0, 6.0, annealing_epochs=0) == 6.0


def test_dann_lambda_schedule() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0, max_lambda=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    values = [dann_lambda(p) for p in (0.0, 0.1, 0.3, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] == values[-2]


def test_balanced_accuracy_of_tensors_as_the_validation_logs_it() -> None:
    target = torch.tensor([0, 0, 0, 0, 1, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 2])
    assert balanced_accuracy(target, pred) == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert math.isnan(balanced_accuracy(target[:0], pred[:0]))


# ---- module ----------------------------------------------------------------------------------------


def test_module_keeps_the_network_mask_and_validates() -> None:
    module = AtlasModule(tiny_config("baseline"), tiny_training(), brain_mask().numpy())
    assert module.mask.dtype == torch.bool and torch.equal(module.mask, brain_mask())
    assert bool(AtlasModule(tiny_config("baseline"), tiny_training()).mask.all())
    with pytest.raises(ValueError, match=r"mask must be on the network grid \(48, 48, 48\), got shape \(46, 55, 46\)"):
        AtlasModule(tiny_config("baseline"), tiny_training(), torch.ones(46, 55, 46, dtype=torch.bool))
    with pytest.raises(ValueError, match="tcvae_sbd needs dataset_size"):
        AtlasModule(tiny_config("tcvae_sbd"), tiny_training())
    with pytest.raises(ValueError, match="beta_schedule"):
        AtlasModule(tiny_config("baseline"), tiny_training(beta_schedule="sawtooth"))


def test_module_takes_plain_data_and_saves_it() -> None:
    config, training = tiny_config("hvae", top_beta=0.5), tiny_training(beta=0.1)
    module = AtlasModule(config.to_dict(), training.to_dict(), dataset_size=3, lr_schedule="cosine_restarts")
    assert module.config == config and module.settings == training
    assert module.hparams["config"] == config.to_dict() and module.hparams["training"] == training.to_dict()
    assert (module.hparams["dataset_size"], module.hparams["lr_schedule"]) == (3, "cosine_restarts")


def test_loss_weights_follow_schedules_and_validation_uses_targets() -> None:
    # The TCVAE's weight ramps on its own schedule.
    tc = AtlasModule(
        tiny_config("tcvae_sbd", alpha=0.5),
        tiny_training(beta_tc_target=6.0, beta_tc_annealing_epochs=2),
        dataset_size=10,
    )
    assert tc.loss_weights(0.0) == {"beta_tc": 0.0, "alpha": 0.5, "gamma": 1.0}
    assert tc.loss_weights(1.0)["beta_tc"] == 3.0
    assert tc.loss_weights(None)["beta_tc"] == 6.0
    # The H-VAE's two levels follow beta's schedule, each a fraction of its own maximum.
    linear = tiny_training(beta=2.0, beta_schedule="linear", beta_warmup_epochs=4)
    h = AtlasModule(tiny_config("hvae", top_beta=1.0), linear)
    assert h.loss_weights(0.0) == {"beta": 0.0, "top_beta": 0.0}
    assert h.loss_weights(1.0) == {"beta": 0.5, "top_beta": 0.25}
    assert h.loss_weights(None) == {"beta": 2.0, "top_beta": 1.0}
    # The cbvae's term weights come with its KL weight, unscheduled.
    cb = AtlasModule(tiny_config("cbvae"), tiny_training(beta=0.5, imputation_weight=2.0, year_weight=0.1))
    assert cb.loss_weights(3.0) == {"beta": 0.5, "imputation_weight": 2.0, "year_weight": 0.1}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.slow
def test_fit_is_reproducible_on_cpu(variant: str) -> None:
    callbacks = (lambda: [GRLLambdaRamp()]) if variant == "cbvae" else (lambda: [])
    first, trainer, losses = fit(variant, seed=0, callbacks=callbacks())
    val_first = float(trainer.callback_metrics["val/loss"])
    second, trainer, losses_again = fit(variant, seed=0, callbacks=callbacks())
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses == losses_again
    assert float(trainer.callback_metrics["val/loss"]) == val_first
    for (name, p), q in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_logged_metrics_per_variant() -> None:
    ramp = GRLLambdaRamp(max_lambda=0.5)
    module, trainer, _ = fit("cbvae", max_epochs=1, callbacks=[ramp])
    metrics = trainer.callback_metrics
    expected = ["train/loss", "train/recon", "train/kl", "train/imputation_kl", "train/imputation_nll"]
    expected += ["train/year_ce", "train/kl_share", "train/recon_se", "train/noise_sigma_0", "train/noise_sigma_1"]
    expected += ["beta", "grl_lambda", "val/loss", "val/year_balanced_accuracy", "val/active_units"]
    expected += ["val/kl_per_active_dim", "val/recon_se"]
    expected += [f"val/kl_unit_{unit:02d}" for unit in range(module.config.z_dim)]
    for key in expected:
        assert key in metrics, key
    # The ramp set lambda from the last step's progress (global_step 1 of 2 before the last batch).
    assert module.model.grl.lambda_ == pytest.approx(dann_lambda(1 / 2, 0.5))
    assert float(metrics["grl_lambda"]) == pytest.approx(module.model.grl.lambda_)

    _, trainer, _ = fit("tcvae_sbd", max_epochs=1)
    for key in ("train/mi", "train/tc", "train/dwkl", "train/kl", "beta_tc", "val/tc"):
        assert key in trainer.callback_metrics, key


def test_callbacks_refuse_variants_they_cannot_drive() -> None:
    with pytest.raises(ValueError, match="gradient reversal"):
        fit("baseline", max_epochs=1, callbacks=[GRLLambdaRamp()], validate=False)


@pytest.mark.slow
def test_checkpoint_rebuilds_the_module(tmp_path: Path) -> None:
    module, trainer, _ = fit("cbvae", max_epochs=1, validate=False)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = AtlasModule.load_from_checkpoint(path)
    assert restored.config == module.config and restored.settings == module.settings
    assert restored.hparams.config == module.config.to_dict()
    torch.testing.assert_close(restored.mask, module.mask)
    batch = next(iter(DataLoader(TinyMaps(2, seed=3), batch_size=2)))
    module.eval()
    restored.eval()
    with torch.no_grad():
        expected = module(batch["image"], batch["meta"])["x_hat"]
        torch.testing.assert_close(restored(batch["image"], batch["meta"])["x_hat"], expected, rtol=0, atol=0)


def test_each_parameter_group_learns_at_its_scale_of_the_learning_rate() -> None:
    module = AtlasModule(tiny_config("cbvae", prior_lr_scale=10.0), tiny_training(lr=2e-3))
    optimizer = module.configure_optimizers()
    assert [group["lr"] for group in optimizer.param_groups] == [2e-3, pytest.approx(2e-3 * 10.0)]
