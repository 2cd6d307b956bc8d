"""Two-level hierarchical VAE: config, shapes, the protected skip, level KLs, loss, training, gate, hierarchy."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tiny_models import tiny_training
from torch.distributions import Normal, kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from sematlas.analysis.hierarchy import (
    FAIL,
    PASS,
    category_profile,
    level_correlation,
    linear_probe,
    stage_gate,
)
from sematlas.core.params import load_params, override_params
from sematlas.core.paths import ProfilePaths
from sematlas.inference.atlas import AtlasModel
from sematlas.models import HierarchicalVAE, HVAEConfig, build_model, config_from_dict
from sematlas.models.hvae import hierarchical_kl
from sematlas.models.losses import gaussian_kl
from sematlas.training.module import AtlasModule
from sematlas.training.run import train_variant

TOP, Z = 2, 6


def tiny(**overrides) -> HVAEConfig:
    return HVAEConfig(**({"z_dim": Z, "top_dim": TOP, "base_channels": 4, "hidden_dim": 8} | overrides))


def hvae_loss(model: HierarchicalVAE, out: dict, x: torch.Tensor, top_beta: float, beta: float) -> dict:
    return model.loss(out, {"image": x}, {"top_beta": top_beta, "beta": beta})


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 2, 48, 48, 48, generator=torch.Generator().manual_seed(seed))


# ---- config and shapes -----------------------------------------------------------------------------


def test_top_dim_is_validated_and_only_the_hvae_has_levels() -> None:
    with pytest.raises(ValueError, match="top_dim"):
        tiny(top_dim=0)
    with pytest.raises(ValueError, match="top_dim"):
        tiny(top_dim=Z)
    with pytest.raises(ValueError, match=r"unknown model config keys \['top_dim'\] for 'cbvae'"):
        config_from_dict({"variant": "cbvae", "top_dim": 2})
    assert tiny().lower_dim == Z - TOP


def test_the_levels_come_from_the_hierarchical_section() -> None:
    params = override_params(load_params("ci"), {"hierarchical": {"top_dim": 3, "top_beta": 0.25}})
    config = HVAEConfig.from_params(
        params, in_channels=2, grid_shape=(48, 48, 48), cond_dim=5, n_sparse=1, n_year_bins=10
    )
    assert (config.top_dim, config.top_beta, config.z_dim) == (3, 0.25, params.model.z_dim)
    assert build_model(config).loss_weights(params.training) == {"beta": params.training.beta, "top_beta": 0.25}


def test_shapes_and_per_level_kl() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    assert isinstance(model, HierarchicalVAE)
    out = model(images())
    assert out["x_hat"].shape == (2, 2, 48, 48, 48)
    for key in ("mu", "logvar", "z"):
        assert out[key].shape == (2, Z)
    assert out["kl_top"].shape == out["kl_lower"].shape == (2,)
    torch.testing.assert_close(out["kl_top"], gaussian_kl(out["mu"][:, :TOP], out["logvar"][:, :TOP]))
    torch.testing.assert_close(out["kl_top"] + out["kl_lower"], gaussian_kl(out["mu"], out["logvar"]))
    assert model.lower_latent(out["z"]).shape == (2, Z - TOP)
    # The conditional prior starts at N(0, I): z_low = u.
    torch.testing.assert_close(model.lower_latent(out["z"]), out["z"][:, TOP:])
    with torch.no_grad():
        assert model.decode(torch.zeros(3, Z)).shape == (3, 2, 48, 48, 48)


# ---- the protected skip ----------------------------------------------------------------------------


def _skip_output_loss(model: HierarchicalVAE, detach: bool) -> None:
    """Backpropagate a loss that depends only on the output of the top-down skip (the decoder's FiLM)."""
    mu, logvar, z = model._infer(images(), sample=True)
    z_top = z[:, :TOP]
    film = model.decoder.film(model.top_down_skip(z_top) if detach else z_top)
    sum(dg.pow(2).sum() + b.pow(2).sum() for dg, b in film).backward()


def test_no_gradient_flows_through_the_top_down_skip() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    torch.nn.init.normal_(model.decoder.film.mlp[-1].weight)  # the skip's output depends on z_top
    sources = [model.stem, model.local_stages, model.global_stage, model.top_head, model.lower_head, model.lower_prior]

    _skip_output_loss(model, detach=True)
    for module in sources:
        assert all(p.grad is None for p in module.parameters()), module
    assert float(model.decoder.film.mlp[0].weight.grad.abs().sum()) > 0  # the skip itself still learns

    # Without the stop-gradient the same loss reaches the top-level encoder: the test can fail.
    model.zero_grad(set_to_none=True)
    _skip_output_loss(model, detach=False)
    assert float(model.top_head.weight.grad.abs().sum()) > 0


def test_the_full_forward_uses_the_protected_skip() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    captured = {}
    model.decoder.film.register_forward_hook(lambda module, args, output: captured.update(source=args[0]))
    out = model(images())
    assert not captured["source"].requires_grad  # detached
    torch.testing.assert_close(captured["source"], out["z"][:, :TOP])


# ---- KL against the conditional prior and the loss -------------------------------------------------


def test_lower_kl_equals_kl_against_the_conditional_prior() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    torch.nn.init.normal_(model.lower_prior[-1].weight, std=0.5)  # a non-trivial p(z_low | z_top)
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(4, Z, generator=g), torch.randn(4, Z, generator=g).clamp(-2, 2)
    z_top = torch.randn(4, TOP, generator=g)
    mean, prior_logvar = model.conditional_prior(z_top)
    scale = torch.exp(0.5 * prior_logvar)
    # q(z_low | x, z_top) = N(m + s mu_u, s^2 exp(logvar_u)) against p(z_low | z_top) = N(m, s^2).
    q = Normal(mean + scale * mu[:, TOP:], scale * torch.exp(0.5 * logvar[:, TOP:]))
    p = Normal(mean, scale)
    _, kl_lower = hierarchical_kl(mu, logvar, TOP)
    torch.testing.assert_close(kl_lower, kl_divergence(q, p).sum(1).detach(), rtol=1e-5, atol=1e-5)


def test_hvae_loss_terms() -> None:
    torch.manual_seed(0)
    model = build_model(tiny())
    x = images()
    out = model(x)
    terms = hvae_loss(model, out, x, top_beta=0.3, beta=0.7)
    assert set(terms) == {"loss", "recon", "kl_top", "kl_lower", "kl"}
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    assert float(terms["kl_top"]) >= 0 and float(terms["kl_lower"]) >= 0
    torch.testing.assert_close(terms["kl"], terms["kl_top"] + terms["kl_lower"])
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.3 * terms["kl_top"] + 0.7 * terms["kl_lower"])
    # Both levels' weighted KL is the KL part of the objective.
    weighted = 0.3 * terms["kl_top"] + 0.7 * terms["kl_lower"]
    torch.testing.assert_close(model.kl_share(terms, {}), weighted / (terms["recon"] + weighted))
    terms["loss"].backward()
    broken = {**out, "kl_top": torch.full((2,), float("nan"))}
    with pytest.raises(ValueError, match="kl_top"):
        hvae_loss(model, broken, x, top_beta=0.3, beta=0.7)


# ---- training --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_lightning_step_logs_both_levels() -> None:
    pl.seed_everything(0, verbose=False)
    module = AtlasModule(tiny(top_beta=0.5), tiny_training(beta=0.1))
    n = 2
    meta = {"cond": torch.zeros(n, 1), "sparse": torch.zeros(n, 1), "sparse_mask": torch.zeros(n, 1, dtype=bool)}
    data = TensorDataset(images(n), *meta.values())

    def collate(rows: list) -> dict:
        columns = [torch.stack(c) for c in zip(*rows)]
        return {"image": columns[0], "meta": dict(zip(meta, columns[1:])), "id": list(range(len(rows)))}

    loader = DataLoader(data, batch_size=n, collate_fn=collate)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader, loader)
    metrics = trainer.callback_metrics
    for key in ("train/kl_top", "train/kl_lower", "train/kl_share", "top_beta", "val/kl_top", "val/active_units"):
        assert key in metrics, key
    assert module.loss_weights(None) == {"beta": 0.1, "top_beta": 0.5}
    assert all(math.isfinite(float(v)) for v in metrics.values())


@pytest.mark.slow
def test_train_variant_and_atlas_model_round_trip(processed: Path, tmp_path: Path) -> None:
    params = override_params(
        load_params("ci"),
        {
            "model": {"z_dim": 4, "base_channels": 4, "hidden_dim": 8},
            "training": {"batch_size": 8, "max_epochs": 1, "recon_every_n_epochs": 0},
            "hierarchical": {"top_dim": 1, "top_beta": 0.25},
        },
    )
    paths = ProfilePaths("ci", tmp_path)
    shutil.copytree(processed, paths.processed)
    run = train_variant(params, "hvae", paths)
    atlas = AtlasModel.load(run.best_checkpoint)
    assert atlas.variant == "hvae" and not atlas.is_conditional and atlas.z_dim == 4
    assert atlas.config.top_dim == 1 and atlas.config.top_beta == 0.25
    maps = atlas.generate({"task": atlas.encoder.categories[0]})
    assert maps.shape == (1, 2, *atlas.grid.shape)
    assert atlas.encode(maps).shape == (1, 4)
    # A stage-gate threshold does not touch training: the finished run is reused, not retrained.
    looser = override_params(params, {"hierarchical": {"gate_probe_margin": 0.2}})
    assert train_variant(looser, "hvae", paths).resumed
    # The level sizes do count: another top_dim is another model.
    changed = override_params(params, {"hierarchical": {"top_dim": 2}})
    assert not train_variant(changed, "hvae", paths).resumed


# ---- stage gate and hierarchy analysis -------------------------------------------------------------

SETTINGS = {"gate_min_kl_per_level": 0.5, "gate_recon_margin": 0.05, "gate_probe_margin": 0.05}


def gate(**changes) -> dict:
    values = {
        "kl": {"kl_top": 2.0, "kl_lower": 10.0},
        "recon_r": 0.40,
        "reference_recon_r": 0.42,
        "probe_accuracy": 0.30,
        "chance": 0.10,
    }
    return stage_gate(**(values | changes), settings=SETTINGS)


def test_stage_gate_passes_only_when_every_criterion_does() -> None:
    result = gate()
    assert result["result"] == PASS and result["passed"] == 4
    assert set(result["criteria"]) == {"kl_top_active", "kl_lower_active", "reconstruction", "top_level_probe"}
    assert result["criteria"]["reconstruction"]["threshold"] == pytest.approx(0.37)
    assert result["criteria"]["top_level_probe"]["threshold"] == pytest.approx(0.15)

    collapsed = gate(kl={"kl_top": 0.1, "kl_lower": 10.0})
    assert collapsed["result"] == FAIL and not collapsed["criteria"]["kl_top_active"]["pass"]
    assert gate(kl={"kl_top": 2.0, "kl_lower": 0.5})["result"] == FAIL  # "above" the threshold: strictly
    assert gate(recon_r=0.36)["result"] == FAIL
    assert gate(recon_r=0.375)["result"] == PASS  # worse than cbvae, but within the margin
    assert gate(probe_accuracy=0.12)["result"] == FAIL
    assert gate(probe_accuracy=float("nan"))["result"] == FAIL


def test_linear_probe_and_hierarchy_tables() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = np.eye(3)[labels] * 5 + rng.normal(size=(60, 3))
    probe = linear_probe(features[::2], labels[::2], features[1::2], labels[1::2])
    assert probe["balanced_accuracy"] == 1.0 and probe["chance"] == pytest.approx(1 / 3)

    top = rng.normal(size=(50, 2))
    lower = np.column_stack([3 * top[:, 0] + 1, -top[:, 1], np.ones(50)])
    correlation = level_correlation(top, lower)
    assert correlation.shape == (2, 3)
    np.testing.assert_allclose(correlation[0, 0], 1.0)
    np.testing.assert_allclose(correlation[1, 1], 1.0)
    assert np.isnan(correlation[:, 2]).all()  # a constant unit has no correlation

    names = np.array(["motor", "pain"])[np.arange(50) % 2]
    profile = category_profile(top, names.tolist())
    assert list(profile.index) == ["motor", "pain"] and list(profile.columns) == ["top_00", "top_01"]
    # What the plot draws is checked in tests/test_reporting.py; here the category means are the data's
    # (each unit z-scored over all studies first).
    scores = (top - top.mean(0)) / top.std(0)
    np.testing.assert_allclose(profile.loc["motor"].to_numpy(), scores[::2].mean(0))
