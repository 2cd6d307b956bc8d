"""The model registry: a variant defined here, outside the library, trains, checkpoints, loads and evaluates."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from tiny_models import tiny_project
from torch import Tensor, nn

from sematlas.core.params import ParameterError, Params, TrainingParams, load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.evaluation.reconstruction import evaluate_run
from sematlas.inference.atlas import AtlasModel
from sematlas.models import (
    MODELS,
    VARIANTS,
    ModelConfig,
    VolumetricVAE,
    build_model,
    check_variants,
    config_from_dict,
    register,
    unregister,
)
from sematlas.models.blocks import reparameterise
from sematlas.models.losses import check_finite, gaussian_kl, masked_mse_sum
from sematlas.training.run import make_datamodule, train_variant

# ---- a variant the library does not know -------------------------------------------------------------


@dataclass
class ToyConfig(ModelConfig):
    """The shared fields plus the toy's own: its width and the weight of its sparsity term."""

    variant: ClassVar[str] = "toy"

    width: int = 2
    sparsity: float = 1e-3


class ToyVAE(VolumetricVAE):
    """One strided convolution down to 4^3, one transposed convolution back up; unconditional."""

    config: ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        coarse = [side // 16 for side in config.grid_shape]
        self.shape = (config.width, *coarse)
        self.down = nn.Conv3d(config.in_channels, config.width, 16, stride=16)
        self.head = nn.Linear(config.width * math.prod(coarse), 2 * config.z_dim)
        self.fc = nn.Linear(config.z_dim, config.width * math.prod(coarse))
        self.up = nn.ConvTranspose3d(config.width, config.in_channels, 16, stride=16)

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.down(image).flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.up(self.fc(z).view(-1, *self.shape)))

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        mu, logvar = self.encode(image)
        z = reparameterise(mu, logvar, sample=self.training)
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z}

    def loss_weights(self, training: TrainingParams) -> dict[str, float]:
        return {"beta": training.beta, "sparsity": self.config.sparsity}

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        # loss = recon + beta * KL + sparsity * sum_v x_hat_v   (an L1 prior on the map, per study)
        recon = masked_mse_sum(out["x_hat"], batch["image"], mask)
        kl = gaussian_kl(out["mu"], out["logvar"]).mean()
        mass = out["x_hat"].flatten(1).sum(1).mean()
        terms = {
            "loss": recon + weights["beta"] * kl + weights["sparsity"] * mass,
            "recon": recon,
            "kl": kl,
            "mass": mass,
        }
        check_finite(terms)
        return terms


@pytest.fixture
def toy() -> Iterator[None]:
    """The toy registered for one test, then removed, so no other test sees it."""
    register("toy", ToyVAE, ToyConfig)
    try:
        yield
    finally:
        unregister("toy")


@pytest.fixture
def project(processed: Path, tmp_path: Path) -> tuple[Params, ProfilePaths]:
    """The tiny training data of tests/test_train.py."""
    return tiny_project(processed, tmp_path)


# ---- the toy through the whole library -------------------------------------------------------------


def test_a_variant_registered_in_one_call_trains_checkpoints_loads_and_evaluates(toy, project) -> None:
    params, paths = project
    run = train_variant(params, "toy", paths)
    assert run.best_checkpoint.is_file() and not run.resumed
    assert list(run.metrics["epoch"]) == [0] and np.isfinite(run.metrics["val/loss"]).all()
    assert "train/mass_epoch" in run.metrics  # its own term, logged like any other
    assert "training toy on profile ci (from scratch)" in (run.run_dir / "train.log").read_text()

    atlas = AtlasModel.load(run.best_checkpoint, voxel_size=params.render.voxel_size)
    assert isinstance(atlas.network, ToyVAE) and atlas.variant == "toy" and not atlas.is_conditional
    datamodule = make_datamodule(params, paths)
    sizes = {"in_channels": datamodule.n_channels, "grid_shape": (48, 48, 48), "cond_dim": datamodule.encoder.cond_dim}
    sizes |= {"n_sparse": 1, "n_year_bins": datamodule.encoder.n_year_bins}
    assert atlas.config == ToyConfig.from_params(params, **sizes)  # z_dim, widths... from the profile
    state = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)
    for name, tensor in atlas.network.state_dict().items():
        torch.testing.assert_close(tensor, state["state_dict"][f"model.{name}"], rtol=0, atol=0, msg=name)
    maps = atlas.generate({"task": atlas.encoder.categories[0]}, n_samples=2)
    assert maps.shape == (1, datamodule.n_channels, *atlas.grid.shape) and torch.isfinite(maps).all()

    results, per_study = evaluate_run(atlas.network, datamodule, "toy", params.evaluation, int(params.seed))
    assert results["variant"] == "toy" and results["n_studies"] == len(per_study) == len(datamodule.tables["test"])
    assert results["conditional_generation"]["uses_metadata"] is False and results["year_debiasing"] is None
    assert 0 <= results["active_units"] <= params.model.z_dim
    assert np.isfinite(per_study["reconstruction_model_pearson_r"]).all()


def test_registered_variants_are_isolated_and_checked(toy) -> None:
    assert "toy" in MODELS and "toy" not in VARIANTS
    config = config_from_dict({"variant": "toy", "width": 3, "z_dim": 2})
    assert isinstance(config, ToyConfig) and config.to_dict()["width"] == 3
    assert isinstance(build_model(config), ToyVAE)
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register("toy", ToyVAE, ToyConfig)
    with pytest.raises(ValueError, match=r"ToyConfig.variant is 'toy'.*'other'"):
        register("other", ToyVAE, ToyConfig)
    with pytest.raises(TypeError, match="'toy' is built from a ToyConfig, got a WiderToyConfig"):
        build_model(WiderToyConfig())
    with pytest.raises(ValueError, match="only variants added by register"):
        unregister("cbvae")


@dataclass
class WiderToyConfig(ToyConfig):
    """A subclass that inherits the toy's name but is not the class registered for it."""

    width: int = 4


def test_unregistered_toy_is_gone() -> None:
    assert "toy" not in MODELS
    with pytest.raises(ValueError, match="variant must be one of"):
        config_from_dict({"variant": "toy"})


def test_check_variants_names_the_parameter_and_the_profile() -> None:
    params = load_params("ci")
    check_variants(params)
    unknown = override_params(params, {"model": {"variants": ["baseline", "vae"]}})
    with pytest.raises(ParameterError, match=r"'model.variants' must list some of baseline, cbvae.*\(profile 'ci'\)"):
        check_variants(unknown)
    with pytest.raises(ParameterError, match="'model.variants'"):
        check_variants(override_params(params, {"model": {"variants": []}}))


def test_generate_decodes_prior_draws_in_order() -> None:
    network = ToyVAE(ToyConfig(z_dim=3)).eval()
    meta = {"cond": torch.zeros(2, 1)}
    with torch.no_grad():
        maps = network.generate(meta, 3, torch.Generator().manual_seed(7))
        generator = torch.Generator().manual_seed(7)
        expected = torch.stack([network.decode(torch.randn(2, 3, generator=generator)) for _ in range(3)])
    assert maps.shape == (3, 2, 2, 48, 48, 48)
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)
