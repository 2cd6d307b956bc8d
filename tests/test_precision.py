"""training.precision: auto, bf16 where the hardware has it and float32 elsewhere, with losses that agree."""

from __future__ import annotations

import pytest
import torch
from test_lightning import fit
from test_models import batch as meta_batch
from tiny_models import tiny_config, tiny_training

from sematlas.models import build_model
from sematlas.training.precision import BF16, FP32, resolve_precision, run_precision


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx512_bf16", "avx2"}, BF16), ({"amx_bf16", "amx_tile"}, BF16), ({"avx2", "fma"}, FP32), (set(), FP32)],
)
def test_auto_reads_the_cpu_flags(flags: set[str], expected: str) -> None:
    assert resolve_precision("auto", "cpu", "cbvae", flags=flags) == expected


def test_auto_keeps_measured_fp32_variants_and_explicit_choices() -> None:
    bf16_cpu = {"avx512_bf16"}
    assert resolve_precision("auto", "cpu", "baseline", fp32_variants=["baseline"], flags=bf16_cpu) == FP32
    assert resolve_precision("auto", "cpu", "cbvae", fp32_variants=["baseline"], flags=bf16_cpu) == BF16
    assert resolve_precision("32-true", "cpu", "cbvae", flags=bf16_cpu) == FP32
    assert resolve_precision("bf16-mixed", "cpu", "baseline", fp32_variants=["baseline"], flags=set()) == BF16
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "gpu", "cbvae", flags=bf16_cpu) == FP32  # no CUDA: float32
    assert run_precision(tiny_training(precision="16-mixed"), "cbvae") == "16-mixed"


@pytest.mark.parametrize("variant", ["baseline", "cbvae", "hvae"])
def test_a_bf16_step_and_an_fp32_step_from_the_same_weights_agree(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(variant))
    model.train()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 2, 48, 48, 48, generator=g) * (torch.rand(2, 1, 48, 48, 48, generator=g) > 0.9)
    _, meta = meta_batch(2, seed=0)
    weights = model.loss_weights(tiny_training())
    losses = {}
    for name, context in (
        ("fp32", torch.autocast("cpu", enabled=False)),
        ("bf16", torch.autocast("cpu", torch.bfloat16)),
    ):
        torch.manual_seed(2)  # the same reparameterisation noise on both paths
        with context:
            out = model(image, meta)
            terms = model.loss(out, {"image": image, "meta": meta}, weights, mask=None, dataset_size=8)
        # The objectives are computed in float32 whatever the autocast.
        assert terms["loss"].dtype == torch.float32
        losses[name] = float(terms["loss"].detach().mean())
    # bf16 keeps 8 bits of mantissa: the activations differ by ~0.4 %, the summed loss by far less than 2 %.
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_the_float32_path_of_a_machine_without_bf16_trains() -> None:
    """What ``auto`` does on a CPU without bf16 flags, exercised whatever this machine's CPU has."""
    precision = resolve_precision("auto", "cpu", "cbvae", flags={"avx2"})
    module, trainer, losses = fit("cbvae", max_epochs=1, validate=False, precision=precision)
    assert trainer.precision == FP32 and trainer.global_step == 2 and len(losses) == 2
    assert all(p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in module.parameters())
