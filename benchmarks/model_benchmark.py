"""Training throughput and decode latency of every volumetric variant, with peers from the same run.

    python benchmarks/model_benchmark.py [--profile quick] [--batch-size 16] [--steps 6]

Prints, per variant at the profile's grid and model size:
- training throughput (studies/s) of full optimisation steps on rendered batches,
  against the renderer's own throughput on the same batches (the data side must
  never be the bottleneck);
- latency of decoding one map from a latent code (median of repeats; the sliders of
  the dashboards need < 50 ms at 4 mm), against reconstructing one map with PCA at
  the same latent size (the linear peer).
Figures, not assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from sematlas.core.params import load_params
from sematlas.core.paths import ProfilePaths
from sematlas.data.datamodule import NeurosynthDataModule
from sematlas.evaluation.baselines import PCABaseline
from sematlas.models import VARIANTS
from sematlas.training.module import AtlasModule
from sematlas.training.run import build_module


def _median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    params = load_params(args.profile)
    paths = ProfilePaths.for_profile(args.profile)
    datamodule = NeurosynthDataModule.from_params(params, paths.processed, batch_size=args.batch_size, use_subset=True)
    datamodule.setup()
    torch.manual_seed(0)
    rows = list(range(args.batch_size))
    batch = datamodule.render_rows("train", rows, augment=True)
    render_s = _median_seconds(lambda: datamodule.render_rows("train", rows, augment=True), 5)
    print(
        f"profile {args.profile}: grid {datamodule.grid.shape} padded to {datamodule.grid.padded_shape}, "
        f"{datamodule.n_channels} channels, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(f"rendering a training batch: {args.batch_size / render_s:,.0f} studies/s\n")

    train_maps = datamodule.all_images("train")
    pca = PCABaseline(params["model"]["z_dim"]).fit(train_maps.flatten(1).numpy())
    scores = pca.transform(train_maps[:1].flatten(1).numpy())
    pca_s = _median_seconds(lambda: pca.pca_.inverse_transform(scores), args.repeats)

    print(f"{'variant':<11} {'params':>9} {'train studies/s':>16} {'x render':>9} {'decode 1 map ms':>16} {'x PCA':>7}")
    for variant in VARIANTS:
        module: AtlasModule = build_module(params, variant, datamodule)
        optimiser = module.configure_optimizers()
        module.train()

        def step(module: AtlasModule = module, optimiser: torch.optim.Optimizer = optimiser) -> None:
            optimiser.zero_grad()
            out = module.model(batch["image"], batch["meta"])
            loss = module.compute_loss(out, batch, module.loss_weights(1.0))["loss"]
            loss.backward()
            optimiser.step()

        step_s = _median_seconds(step, args.steps)
        module.eval()
        z = torch.zeros(1, module.config.z_dim)
        one = {key: value[:1] for key, value in batch["meta"].items()}
        with torch.no_grad():
            decode_s = _median_seconds(partial(module.model.decode, z, one), args.repeats)
        n_params = sum(p.numel() for p in module.model.parameters())
        throughput = args.batch_size / step_s
        print(
            f"{variant:<11} {n_params:>9,} {throughput:>16.1f} {throughput / (args.batch_size / render_s):>9.3f} "
            f"{decode_s * 1e3:>16.1f} {decode_s / pca_s:>7.1f}"
        )
    print(
        f"\nPCA (k = {params['model']['z_dim']}) reconstruct of one map: {pca_s * 1e3:.2f} ms; "
        f"decode goal < 50 ms at 4 mm.  numpy {np.__version__}, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
