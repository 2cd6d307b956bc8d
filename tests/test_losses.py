"""Objectives: beta-TCVAE estimator against a loop-wise reference, each model's loss, reductions, masking, NaN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_config

from sematlas.models import build_model
from sematlas.models.losses import gaussian_kl, gaussian_nll_observed, masked_mse_sum
from sematlas.models.tcvae import beta_tcvae_sums

TC_KEYS = {"loss", "recon", "mi", "tc", "dwkl"}


def tc_inputs(m: int = 4, d: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    """Posterior parameters, samples from them, and small maps with a mask."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, d, generator=g)
    logvar = -1.0 + 0.3 * torch.randn(m, d, generator=g)
    z = mu + torch.randn(m, d, generator=g) * torch.exp(0.5 * logvar)
    x = torch.rand(m, 2, 6, 6, 6, generator=g)
    x_hat = torch.rand(m, 2, 6, 6, 6, generator=g)
    mask = torch.rand(6, 6, 6, generator=g) > 0.4
    return {"x_hat": x_hat, "x": x, "z": z, "mu": mu, "logvar": logvar, "mask": mask}


def reference_beta_tcvae(inp: dict[str, torch.Tensor], n: int, beta_tc: float, alpha: float, gamma: float) -> dict:
    """Slow loop-wise minibatch-weighted-sampling estimator (Chen et al. 2018), in float64."""
    z, mu, logvar = (inp[k].double().tolist() for k in ("z", "mu", "logvar"))
    m, d = len(z), len(z[0])

    def log_normal(v: float, mean: float, log_var: float) -> float:
        return -0.5 * (math.log(2 * math.pi) + log_var + (v - mean) ** 2 / math.exp(log_var))

    def logsumexp(values: list[float]) -> float:
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    log_nm = math.log(n * m)
    mi = tc = dwkl = 0.0
    for i in range(m):
        per_dim = [[log_normal(z[i][k], mu[j][k], logvar[j][k]) for k in range(d)] for j in range(m)]
        log_qz_x = sum(per_dim[i])
        log_qz = logsumexp([sum(per_dim[j]) for j in range(m)]) - log_nm
        log_prod = sum(logsumexp([per_dim[j][k] for j in range(m)]) - log_nm for k in range(d))
        log_pz = sum(log_normal(z[i][k], 0.0, 0.0) for k in range(d))
        mi += log_qz_x - log_qz
        tc += log_qz - log_prod
        dwkl += log_prod - log_pz
    keep = inp["mask"].double()
    recon = 0.0
    for i in range(m):
        recon += float((((inp["x_hat"][i].double() - inp["x"][i].double()) ** 2) * keep).sum())
    loss = recon + alpha * mi + beta_tc * tc + gamma * dwkl
    return {"loss": loss, "recon": recon, "mi": mi, "tc": tc, "dwkl": dwkl}


# ---- beta-TCVAE --------------------------------------------------------------------------------------


def test_beta_tcvae_keys_and_finite_values() -> None:
    out = beta_tcvae_sums(**tc_inputs(m=4, d=128), dataset_size=1000, beta_tc=6.0)
    assert set(out) == TC_KEYS
    for name, value in out.items():
        assert value.dtype == torch.float32 and value.ndim == 0, name
        assert math.isfinite(float(value)), name


@pytest.mark.parametrize(("alpha", "beta_tc", "gamma"), [(1.0, 6.0, 1.0), (0.5, 2.0, 3.0)])
def test_beta_tcvae_matches_loop_reference(alpha: float, beta_tc: float, gamma: float) -> None:
    inp = tc_inputs(m=4, d=128)
    out = beta_tcvae_sums(**inp, dataset_size=1000, beta_tc=beta_tc, alpha=alpha, gamma=gamma)
    ref = reference_beta_tcvae(inp, 1000, beta_tc, alpha, gamma)
    for name in TC_KEYS:
        assert float(out[name]) == pytest.approx(ref[name], rel=1e-4, abs=2e-3), name


def test_beta_tcvae_decomposition_sums_to_the_kl_estimate() -> None:
    # With unit weights, MI + TC + DWKL = sum_i [log q(z_i|x_i) - log p(z_i)].
    inp = tc_inputs(m=5, d=16)
    out = beta_tcvae_sums(**inp, dataset_size=300, beta_tc=1.0)
    normal = torch.distributions.Normal
    log_qz_x = normal(inp["mu"], torch.exp(0.5 * inp["logvar"])).log_prob(inp["z"]).sum()
    log_pz = normal(0.0, 1.0).log_prob(inp["z"]).sum()
    total = float(out["mi"] + out["tc"] + out["dwkl"])
    assert total == pytest.approx(float(log_qz_x - log_pz), rel=1e-5)
    assert float(out["loss"] - out["recon"]) == pytest.approx(total, rel=1e-5)


def test_beta_tcvae_terms_are_sums_over_the_batch() -> None:
    # A batch repeated twice: every per-sample estimate is unchanged (the logsumexp
    # gains log 2, log(NM) too), so every batch SUM doubles; a mean would not.
    inp = tc_inputs(m=4, d=32)
    doubled = {k: (v if k == "mask" else torch.cat([v, v])) for k, v in inp.items()}
    once = beta_tcvae_sums(**inp, dataset_size=1000, beta_tc=6.0)
    twice = beta_tcvae_sums(**doubled, dataset_size=1000, beta_tc=6.0)
    for name in TC_KEYS:
        assert float(twice[name]) == pytest.approx(2 * float(once[name]), rel=1e-5, abs=1e-3), name


@pytest.mark.parametrize(("field", "term"), [("x", "recon"), ("z", "mi"), ("logvar", "mi")])
def test_beta_tcvae_raises_on_nan_naming_the_term(field: str, term: str) -> None:
    inp = tc_inputs()
    inp[field] = inp[field].clone()
    inp[field].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=f"'{term}'"):
        beta_tcvae_sums(**inp, dataset_size=1000, beta_tc=6.0)


def test_beta_tcvae_runs_in_float32_under_autocast() -> None:
    inp = {k: (v.bfloat16() if v.is_floating_point() else v) for k, v in tc_inputs().items()}
    as_float = {k: (v.float() if v.is_floating_point() else v) for k, v in inp.items()}
    reference = beta_tcvae_sums(**as_float, dataset_size=1000, beta_tc=6.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = beta_tcvae_sums(**inp, dataset_size=1000, beta_tc=6.0)
    for name in TC_KEYS:
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name], reference[name])


def test_beta_tcvae_rejects_bad_dataset_size() -> None:
    with pytest.raises(ValueError, match="dataset_size"):
        beta_tcvae_sums(**tc_inputs(), dataset_size=0, beta_tc=1.0)


def test_tcvae_loss_is_the_estimator_per_study_with_the_analytic_kl() -> None:
    model = build_model(tiny_config("tcvae_sbd", z_dim=16))
    inp = tc_inputs(m=4, d=16)
    inp["x_hat"], inp["x"] = torch.rand(4, 2, 6, 6, 6), torch.rand(4, 2, 6, 6, 6)
    out = {"x_hat": inp["x_hat"], "z": inp["z"], "mu": inp["mu"], "logvar": inp["logvar"]}
    weights = {"beta_tc": 6.0, "alpha": 0.5, "gamma": 2.0}
    terms = model.loss(out, {"image": inp["x"]}, weights, mask=inp["mask"], dataset_size=1000)
    sums = beta_tcvae_sums(**inp, dataset_size=1000, beta_tc=6.0, alpha=0.5, gamma=2.0)
    assert set(terms) == TC_KEYS | {"kl"}
    for name in TC_KEYS:
        torch.testing.assert_close(terms[name], sums[name] / 4, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(terms["kl"], gaussian_kl(inp["mu"], inp["logvar"]).mean())
    # Every term but the reconstruction is part of the KL.
    torch.testing.assert_close(model.weighted_kl(terms, weights), terms["loss"] - terms["recon"])
    with pytest.raises(ValueError, match="tcvae_sbd needs dataset_size"):
        model.loss(out, {"image": inp["x"]}, weights)


# ---- shared terms ----------------------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(3, 7), torch.randn(3, 7)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1))


def test_masked_mse_sum_counts_only_mask_voxels_and_averages_over_batch() -> None:
    x, x_hat = torch.rand(3, 2, 8, 8, 8), torch.rand(3, 2, 8, 8, 8)
    mask = torch.zeros(8, 8, 8, dtype=torch.bool)
    mask[2:5, 1:7, 3:4] = True
    expected = (((x_hat - x) ** 2) * mask).sum() / 3
    torch.testing.assert_close(masked_mse_sum(x_hat, x, mask), expected)
    torch.testing.assert_close(masked_mse_sum(x_hat, x), ((x_hat - x) ** 2).sum() / 3)
    # Errors outside the mask do not count; the batch mean does not grow with the batch.
    noisy = x_hat.clone()
    noisy[:, :, ~mask] += 5.0
    torch.testing.assert_close(masked_mse_sum(noisy, x, mask), expected)
    torch.testing.assert_close(masked_mse_sum(torch.cat([x_hat, x_hat]), torch.cat([x, x]), mask), expected)


def test_gaussian_nll_ignores_missing_entries() -> None:
    value = torch.tensor([[0.5], [float("nan")], [-1.0], [3.0]])
    observed = torch.tensor([[True], [False], [True], [False]])
    mu = torch.zeros(4, 1, requires_grad=True)
    logvar = torch.zeros(4, 1, requires_grad=True)
    nll = gaussian_nll_observed(value, mu, logvar, observed)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = -(normal.log_prob(torch.tensor(0.5)) + normal.log_prob(torch.tensor(-1.0))) / 4
    torch.testing.assert_close(nll, expected)
    nll.backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(logvar.grad).all()
    assert float(mu.grad[~observed].abs().sum()) == 0.0 and float(logvar.grad[~observed].abs().sum()) == 0.0
    assert float(mu.grad[observed].abs().sum()) > 0.0
    # Whatever a missing entry holds, the value is the same; with nothing observed it is 0.
    torch.testing.assert_close(gaussian_nll_observed(value.nan_to_num(7.0), mu, logvar, observed), nll)
    assert float(gaussian_nll_observed(value, mu, logvar, torch.zeros_like(observed)).detach()) == 0.0


def test_baseline_loss_terms() -> None:
    model = build_model(tiny_config("baseline", z_dim=5))
    x, x_hat = torch.rand(2, 2, 4, 4, 4), torch.rand(2, 2, 4, 4, 4)
    mu, logvar = torch.randn(2, 5), torch.randn(2, 5)
    out = model.loss({"x_hat": x_hat, "mu": mu, "logvar": logvar}, {"image": x}, {"beta": 0.3})
    assert set(out) == {"loss", "recon", "kl"}
    torch.testing.assert_close(out["recon"], masked_mse_sum(x_hat, x))
    torch.testing.assert_close(out["kl"], gaussian_kl(mu, logvar).mean())
    torch.testing.assert_close(out["loss"], out["recon"] + 0.3 * out["kl"])
    torch.testing.assert_close(model.kl_share(out, {"beta": 0.3}), 0.3 * out["kl"] / out["loss"])
    with pytest.raises(ValueError, match="'kl'"):
        broken = {"x_hat": x_hat, "mu": mu, "logvar": torch.full_like(logvar, float("inf"))}
        model.loss(broken, {"image": x}, {"beta": 0.3})


def test_cbvae_loss_terms() -> None:
    model = build_model(tiny_config("cbvae", z_dim=5))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 2, 4, 4, 4, generator=g)
    out = {
        "x_hat": torch.rand(4, 2, 4, 4, 4, generator=g),
        "mu": torch.randn(4, 5, generator=g),
        "logvar": torch.randn(4, 5, generator=g),
        "imputed_mu": torch.randn(4, 1, generator=g),
        "imputed_logvar": torch.randn(4, 1, generator=g),
        "year_logits": torch.randn(4, 10, generator=g),
        "prior_mu": torch.randn(4, 5, generator=g),
        "prior_logvar": torch.randn(4, 5, generator=g),
    }
    meta = {
        "sparse": torch.randn(4, 1, generator=g),
        "sparse_mask": torch.tensor([[True], [False], [False], [True]]),
        "year_bin": torch.tensor([0, 3, 9, 3]),
    }
    weights = {"beta": 0.5, "imputation_weight": 2.0, "year_weight": 0.1}
    terms = model.loss(out, {"image": x, "meta": meta}, weights)
    assert set(terms) == {
        "loss",
        "recon",
        "kl",
        "imputation_kl",
        "imputation_nll",
        "year_ce",
        "recon_se",
        "noise_sigma_0",
        "noise_sigma_1",
    }
    # KL(q || p(z | m)) per study, with the prior network's Gaussian.
    var_q, var_p = out["logvar"].exp(), out["prior_logvar"].exp()
    kl = 0.5 * (out["prior_logvar"] - out["logvar"] + (var_q + (out["mu"] - out["prior_mu"]) ** 2) / var_p - 1)
    torch.testing.assert_close(terms["kl"], kl.sum(1).mean())
    # The calibrated likelihood: one noise scale per channel at the batch's root mean squared error.
    squared = ((out["x_hat"] - x) ** 2).sum(dim=(2, 3, 4))
    torch.testing.assert_close(terms["noise_sigma_1"], (squared[:, 1].mean() / 64).sqrt())
    torch.testing.assert_close(terms["recon_se"], squared.sum(1).mean())
    torch.testing.assert_close(terms["year_ce"], F.cross_entropy(out["year_logits"], meta["year_bin"]))
    nll = gaussian_nll_observed(meta["sparse"], out["imputed_mu"], out["imputed_logvar"], meta["sparse_mask"])
    torch.testing.assert_close(terms["imputation_nll"], nll)
    # Missing entries (rows 1 and 2) are latent: KL to the N(0, 1) prior, per study.
    missing = [1, 2]
    kl_missing = gaussian_kl(out["imputed_mu"][missing], out["imputed_logvar"][missing]).sum() / 4
    torch.testing.assert_close(terms["imputation_kl"], kl_missing)
    expected = terms["recon"] + 0.5 * (terms["kl"] + terms["imputation_kl"])
    expected = expected + 2.0 * terms["imputation_nll"] + 0.1 * terms["year_ce"]
    torch.testing.assert_close(terms["loss"], expected)
    # The KL share counts the latent KL only, against the squared error (the NLL can be negative).
    share = 0.5 * terms["kl"] / (terms["recon_se"] + 0.5 * terms["kl"])
    torch.testing.assert_close(model.kl_share(terms, weights), share)
