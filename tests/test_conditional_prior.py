"""The cbvae's conditional prior p(z | m), its calibrated likelihood, and what is drawn from the prior."""

from __future__ import annotations

import math

import pytest
import torch
from test_models import CBVAE_WEIGHTS, batch
from tiny_models import tiny_config

from sematlas.models import build_model
from sematlas.models.losses import (
    MIN_LOG_SIGMA,
    gaussian_kl_between_per_dim,
    gaussian_kl_per_dim,
    optimal_sigma_nll,
)


def trained_prior(seed: int = 0):
    """A tiny cbvae whose prior network's last layer is moved off its zero start."""
    torch.manual_seed(seed)
    model = build_model(tiny_config("cbvae")).eval()
    with torch.no_grad():
        for parameter in model.prior_net.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def test_kl_between_gaussians_against_the_closed_form_and_the_standard_case() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = (torch.randn(4, 3, generator=g) for _ in range(4))
    kl = gaussian_kl_between_per_dim(mu_q, logvar_q, mu_p, logvar_p)
    var_q, var_p = logvar_q.exp(), logvar_p.exp()
    expected = torch.log(var_p.sqrt() / var_q.sqrt()) + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5
    torch.testing.assert_close(kl, expected)
    zeros = torch.zeros_like(mu_q)
    torch.testing.assert_close(
        gaussian_kl_between_per_dim(mu_q, logvar_q, zeros, zeros), gaussian_kl_per_dim(mu_q, logvar_q)
    )
    assert float(gaussian_kl_between_per_dim(mu_p, logvar_p, mu_p, logvar_p).abs().max()) < 1e-6


def test_optimal_sigma_is_the_root_mean_squared_error_of_each_channel() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 4, 4, 4, generator=g)
    x_hat = x + torch.stack(
        [0.1 * torch.randn(3, 4, 4, 4, generator=g), 0.01 * torch.randn(3, 4, 4, 4, generator=g)], 1
    )
    mask = torch.rand(4, 4, 4, generator=g) > 0.3
    nll, sigma = optimal_sigma_nll(x_hat, x, mask)
    squared = ((x_hat - x) ** 2)[..., mask]  # (B, C, n_mask)
    n_voxels = int(mask.sum())
    expected_sigma = (squared.sum(2).mean(0) / n_voxels).sqrt()
    torch.testing.assert_close(sigma, expected_sigma)
    # At the optimum the quadratic term is N / 2 per channel:
    # NLL_i = sum_c [SE_ic / (2 s_c^2) + N (log s_c + log(2 pi) / 2)].
    per_study = (
        squared.sum(2) / (2 * expected_sigma**2) + n_voxels * (expected_sigma.log() + 0.5 * math.log(2 * math.pi))
    ).sum(1)
    torch.testing.assert_close(nll, per_study.mean())
    # A perfect fit stops at the floor instead of an infinite likelihood.
    _, floored = optimal_sigma_nll(x, x, mask)
    torch.testing.assert_close(floored, torch.full((2,), math.exp(MIN_LOG_SIGMA)))


def test_the_prior_starts_standard_and_its_kl_is_then_the_standard_kl() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("cbvae"))
    image, meta = batch(3)
    out = model(image, meta)
    assert torch.equal(out["prior_mu"], torch.zeros_like(out["mu"]))
    assert torch.equal(out["prior_logvar"], torch.zeros_like(out["mu"]))
    terms = model.loss(out, {"image": image, "meta": meta}, CBVAE_WEIGHTS)
    standard = gaussian_kl_per_dim(out["mu"], out["logvar"]).sum(1).mean()
    torch.testing.assert_close(terms["kl"], standard)


def test_the_kl_trains_the_prior_network_towards_the_posterior() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config("cbvae"))
    image, meta = batch(4)
    out = model(image, meta)
    terms = model.loss(out, {"image": image, "meta": meta}, CBVAE_WEIGHTS)
    terms["kl"].backward()
    assert float(model.prior_net.linear.weight.grad.abs().sum()) > 0


def test_the_standard_prior_ablation_has_no_prior_network() -> None:
    model = build_model(tiny_config("cbvae", prior="standard"))
    assert model.prior_net is None
    image, meta = batch(2)
    mu, logvar = model.prior(meta)
    assert torch.equal(mu, torch.zeros(2, 8)) and torch.equal(logvar, torch.zeros(2, 8))


def test_generation_decodes_the_prior_and_counterfactuals_keep_the_residual() -> None:
    model = trained_prior()
    image, meta = batch(3)
    other = {**meta, "cond": meta["cond"].flip(0)}
    with torch.no_grad():
        mu_p, logvar_p = model.prior(meta)
        assert float((mu_p - model.prior(other)[0]).abs().max()) > 1e-3  # the metadata moves the prior
        torch.testing.assert_close(model.generate_mean(meta), model.decode(mu_p, meta))
        # Samples: mu(m) + sigma(m) * eps with eps from the generator.
        drawn = model.prior_sample(meta, torch.Generator().manual_seed(3))
        eps = torch.randn(mu_p.shape, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(drawn, mu_p + torch.exp(0.5 * logvar_p) * eps)
        samples = model.generate(meta, 2, torch.Generator().manual_seed(3))
        torch.testing.assert_close(samples[0], model.decode(drawn, meta))
        # Abduction then action: the residual is kept, the prior is the new metadata's.
        z = model.encode(image, meta)[0]
        moved = model.counterfactual(z, meta, other)
        torch.testing.assert_close(model.residual(moved, other), model.residual(z, meta), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.counterfactual(z, meta, meta), z, atol=1e-5, rtol=1e-5)


def test_the_year_adversary_reads_the_residual_under_the_prior() -> None:
    model = trained_prior()
    image, meta = batch(2)
    with torch.no_grad():
        out = model(image, meta)
        eps = (out["z"] - out["prior_mu"]) * torch.exp(-0.5 * out["prior_logvar"])
        torch.testing.assert_close(out["year_logits"], model.year_head(eps))


def test_the_learned_likelihood_logs_its_noise_scale_and_the_comparable_squared_error() -> None:
    torch.manual_seed(0)
    image, meta = batch(2)
    learned = build_model(tiny_config("cbvae"))
    torch.manual_seed(0)
    fixed = build_model(tiny_config("cbvae", likelihood="fixed"))
    terms = {}
    for name, model in (("learned", learned), ("fixed", fixed)):
        torch.manual_seed(1)
        out = model(image, meta)
        terms[name] = model.loss(out, {"image": image, "meta": meta}, CBVAE_WEIGHTS)
    assert {"noise_sigma_0", "noise_sigma_1"} <= set(terms["learned"]) and "noise_sigma_0" not in terms["fixed"]
    # Same weights, same draws: the squared error agrees; the fixed likelihood's recon is that error.
    torch.testing.assert_close(terms["learned"]["recon_se"], terms["fixed"]["recon_se"])
    torch.testing.assert_close(terms["fixed"]["recon"], terms["fixed"]["recon_se"])
    assert float(terms["learned"]["recon"].detach()) != pytest.approx(float(terms["learned"]["recon_se"]))


def test_the_prior_network_learns_faster_than_the_trunk() -> None:
    model = build_model(tiny_config("cbvae", prior_lr_scale=7.0))
    groups = model.parameter_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 7.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.prior_net.parameters()}
    standard = build_model(tiny_config("cbvae", prior="standard"))
    assert [g["lr_scale"] for g in standard.parameter_groups()] == [1.0]
    with pytest.raises(ValueError, match="prior_lr_scale must be positive, got 0"):
        build_model(tiny_config("cbvae", prior_lr_scale=0))


def test_the_imputation_head_is_bounded_so_it_cannot_carry_the_map_around_the_bottleneck() -> None:
    from sematlas.models.cbvae import IMPUTATION_LOGVAR_MIN, IMPUTATION_RANGE

    torch.manual_seed(0)
    model = build_model(tiny_config("cbvae")).eval()
    with torch.no_grad():
        model.imputer[-1].bias.copy_(torch.tensor([50.0, -500.0]))  # a mean of 50 sd, a log-variance of -500
        out = model(*batch(2))
    assert float(out["imputed_mu"].abs().max()) <= IMPUTATION_RANGE
    assert float(out["imputed_logvar"].min()) >= IMPUTATION_LOGVAR_MIN - 1e-6  # float32 of the floor
