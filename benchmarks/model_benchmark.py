"""Training throughput and decode latency of every volumetric variant: the old path against the new, in one run.

    python benchmarks/model_benchmark.py [--profile quick] [--steps 6]

For each variant at the profile's model size and batch size, on the same rendered
training batch, a full optimisation step (forward, backward, AdamW) is timed on
three paths:

- ``64^3 fp32``: the network grid of before issue 15 (the next power of two of the
  native grid, cubed, the native maps at its low corner), in float32;
- ``box fp32``: the brain's bounding box in multiples of 16 (48^3 at 4 mm), float32;
- ``box bf16``: the same under ``torch.autocast`` in bf16 (losses in float32).

It prints studies/s of each and their ratios to the ``64^3 fp32`` peer measured in
the same run, the precision ``training.precision: auto`` picks for the variant on this
machine, and the latency of decoding one map on the box (the dashboards' sliders need
< 50 ms at 4 mm) against PCA's reconstruction of one map at the same latent size.
Figures, not assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.baselines import PCABaseline
from sematlas.models import VARIANTS
from sematlas.training.module import AtlasModule
from sematlas.training.precision import BF16, cpu_flags, resolve_precision
from sematlas.training.run import make_datamodule, model_config


def _median_seconds(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cube(native: torch.Tensor, side: int) -> torch.Tensor:
    """Native maps ``(..., D, H, W)`` zero-padded at their high end to ``side^3`` (the old network grid)."""
    d, h, w = native.shape[-3:]
    return F.pad(native, (0, side - w, 0, side - h, 0, side - d))


def _step_seconds(module: AtlasModule, batch: dict[str, Any], bf16: bool, steps: int) -> float:
    optimiser = module.configure_optimizers()
    module.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        optimiser.zero_grad()
        with autocast:
            out = module.model(batch["image"], batch["meta"])
            loss = module.compute_loss(out, batch, module.loss_weights(1.0))["loss"]
        loss.backward()
        optimiser.step()

    return _median_seconds(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    params = load_params(args.profile)
    datamodule = make_datamodule(params, ProfilePaths.for_profile(args.profile))
    grid, batch_size = datamodule.grid, params.training.batch_size
    torch.manual_seed(0)
    batch = datamodule.render_rows("train", list(range(batch_size)), augment=True)
    native = grid.to_native(batch["image"])
    old_side = 1 << int(np.ceil(np.log2(max(grid.shape))))
    old_batch = {**batch, "image": _cube(native, old_side)}
    old_mask = _cube(torch.from_numpy(grid.mask()), old_side)
    flags = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}) or ["none"]
    print(
        f"profile {args.profile}: native grid {grid.shape} at {grid.voxel_size} mm; old network grid {old_side}^3 "
        f"({old_side**3:,} voxels), box {grid.network_shape} ({int(np.prod(grid.network_shape)):,} voxels); "
        f"batch {batch_size}, {datamodule.n_channels} channels, torch threads {torch.get_num_threads()}, "
        f"bf16 CPU flags: {', '.join(flags)}\n"
    )

    train_maps = datamodule.all_images("train", rows=range(min(2000, datamodule.train_size)))
    pca = PCABaseline(params.model.z_dim).fit(train_maps.flatten(1).numpy())
    scores = pca.transform(train_maps[:1].flatten(1).numpy())
    pca_s = _median_seconds(lambda: pca.pca_.inverse_transform(scores), args.repeats)

    header = (
        f"{'variant':<10} {'params':>9} {'64^3 fp32':>10} {'box fp32':>9} {'box bf16':>9} "
        f"{'x fp32':>7} {'x bf16':>7} {'auto':>10} {'decode ms':>10} {'x PCA':>6}"
    )
    print("training studies/s (forward + backward + AdamW), ratios against 64^3 fp32\n" + header)
    for variant in VARIANTS:
        config = model_config(params, variant, datamodule)
        rates = {}
        for path, path_config, path_batch, mask, bf16 in (
            ("old", replace(config, grid_shape=(old_side,) * 3), old_batch, old_mask, False),
            ("fp32", config, batch, datamodule.brain_mask(), False),
            ("bf16", config, batch, datamodule.brain_mask(), True),
        ):
            torch.manual_seed(0)
            module = AtlasModule(path_config, params.training, mask=mask, dataset_size=datamodule.train_size)
            rates[path] = batch_size / _step_seconds(module, path_batch, bf16, args.steps)
        module.eval()
        z = torch.zeros(1, config.z_dim)
        one = {key: value[:1] for key, value in batch["meta"].items()}
        with torch.no_grad():
            decode_s = _median_seconds(partial(module.model.decode, z, one), args.repeats)
        auto = resolve_precision("auto", params.training.accelerator, variant, params.training.fp32_variants)
        n_params = sum(p.numel() for p in module.model.parameters())
        print(
            f"{variant:<10} {n_params:>9,} {rates['old']:>10.1f} {rates['fp32']:>9.1f} {rates['bf16']:>9.1f} "
            f"{rates['fp32'] / rates['old']:>7.2f} {rates['bf16'] / rates['old']:>7.2f} "
            f"{'bf16' if auto == BF16 else 'fp32':>10} {decode_s * 1e3:>10.1f} {decode_s / pca_s:>6.1f}"
        )
    print(
        f"\nauto: the precision training.precision=auto gives the variant here (training.fp32_variants: "
        f"{list(params.training.fp32_variants)}). Decode: one map on the box, fp32; PCA (k = {params.model.z_dim}) "
        f"reconstructs one map in {pca_s * 1e3:.2f} ms; goal < 50 ms at 4 mm.  torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
