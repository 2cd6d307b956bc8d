"""Objectives of the volumetric models, in one place, computed in float32.

Notation: a batch of ``M`` studies ``x_i`` with posterior
``q(z | x_i) = N(mu_i, diag(exp(logvar_i)))``, prior ``p(z) = N(0, I)``,
latent dimension ``d``, training-set size ``N``.

Reductions (chosen so terms can be compared across variants and batch sizes):

- :func:`masked_mse_sum`, :func:`gaussian_nll_sum`, :func:`gaussian_nll_observed` and the objectives of
  the baseline, cbvae and hvae (:func:`vae_loss`, :func:`cbvae_loss`, :func:`hvae_loss`) are *per
  study*: summed over voxels / latent dimensions / fields, averaged over the batch.
- :func:`beta_tcvae_loss` returns *sums over the batch*, as its minibatch
  estimator is written (Chen et al. 2018); divide by ``M`` for per-study values.

All functions cast their inputs to float32 and disable autocast, so mixed
precision never reaches a log-density or a sum over 10^5 voxels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def _no_autocast(device: torch.device) -> torch.autocast:
    """A region where autocast is off (the loss math runs in the inputs' float32)."""
    return torch.autocast(device_type=device.type, enabled=False)


def gaussian_log_density(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Element-wise ``log N(x; mu, exp(logvar))``.

    ``log N(x; mu, s^2) = -0.5 * (log(2 pi) + log s^2 + (x - mu)^2 / s^2)``

    Parameters
    ----------
    x, mu, logvar : Tensor
        Broadcastable to a common shape.

    Returns
    -------
    Tensor, the broadcast shape
    """
    return -0.5 * (_LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, s^2) || N(0, 1))`` per sample and latent dimension.

    ``KL_k = 0.5 * (mu_k^2 + s_k^2 - 1 - log s_k^2)`` (Kingma & Welling 2014, app. B)

    Parameters
    ----------
    mu, logvar : Tensor, shape (B, d)

    Returns
    -------
    Tensor, shape (B, d), float32
    """
    with _no_autocast(mu.device):
        mu, logvar = mu.float(), logvar.float()
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(q(z|x) || N(0, I))`` per sample, summed over latent dimensions.

    Parameters
    ----------
    mu, logvar : Tensor, shape (B, d)

    Returns
    -------
    Tensor, shape (B,), float32
    """
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


def _mask_box(mask: Tensor) -> tuple[slice, slice, slice]:
    """Bounding box of a 3-D boolean mask: the slices outside which it is all False."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(mask.any(dim=other)).flatten()
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.numel() else slice(0, 0))
    return box[0], box[1], box[2]


def squared_error_per_sample(x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum of squared errors per sample over channels and the voxels in ``mask``.

    ``SE_i = sum_c sum_{v in mask} (x_hat_icv - x_icv)^2``

    The maps are first cropped to the mask's bounding box (the native grid
    is under half of the padded one), which gives the same sum for less work.

    Parameters
    ----------
    x_hat, x : Tensor, shape (B, C, D, H, W)
        Reconstruction and target.
    mask : Tensor of bool, shape (D, H, W), optional
        Voxels that count (the brain); all voxels when ``None``.

    Returns
    -------
    Tensor, shape (B,), float32
    """
    with _no_autocast(x.device):
        x_hat, x = x_hat.float(), x.float()
        if mask is None:
            return (x_hat - x).pow(2).sum(dim=(1, 2, 3, 4))
        box = (slice(None), slice(None), *_mask_box(mask))
        keep = mask[box[2:]].to(x.dtype)
        return ((x_hat[box] - x[box]).pow(2) * keep).sum(dim=(1, 2, 3, 4))


def masked_mse_sum(x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Reconstruction term: squared error summed over brain voxels and channels, mean over the batch.

    ``recon = (1 / B) * sum_i sum_c sum_{v in mask} (x_hat_icv - x_icv)^2``

    Up to a constant this is the Gaussian negative log-likelihood
    ``-log N(x; x_hat, 1/2)`` summed over voxels, so ``beta = 1`` gives the
    ELBO of a decoder with fixed variance 1/2. Summing (not averaging) over
    voxels keeps the likelihood a likelihood: its balance with the KL term
    then follows from the data, not from the grid size.

    Parameters
    ----------
    x_hat, x : Tensor, shape (B, C, D, H, W)
    mask : Tensor of bool, shape (D, H, W), optional

    Returns
    -------
    Tensor, scalar, float32
    """
    return squared_error_per_sample(x_hat, x, mask).mean()


def gaussian_nll_sum(x: Tensor, mean: Tensor, logvar: Tensor, mask: Tensor | None = None) -> Tensor:
    """Heteroscedastic reconstruction term: Gaussian NLL summed over brain voxels and channels, mean over the batch.

    The decoder predicts a mean and a log-variance per voxel, so the data term
    learns where the maps are inherently noisy (aleatoric uncertainty; Kendall &
    Gal, "What uncertainties do we need in Bayesian deep learning for computer
    vision?", NeurIPS 2017)::

        # NLL = 0.5 * (log sigma^2 + (x - mu)^2 / sigma^2 + log 2 pi)
        # recon = (1 / B) * sum_i sum_c sum_{v in mask} NLL_icv

    It is :func:`masked_mse_sum`'s likelihood with a learned instead of a fixed
    variance; summed over voxels for the same reason (a likelihood, balanced
    against the KL by the data). The full constant ``log 2 pi`` is kept, as in
    ``torch.nn.functional.gaussian_nll_loss(..., full=True)``.

    Parameters
    ----------
    x : Tensor, shape (B, C, D, H, W)
        Target maps.
    mean, logvar : Tensor, shape (B, C, D, H, W)
        Predicted per-voxel mean and log-variance.
    mask : Tensor of bool, shape (D, H, W), optional
        Voxels that count (the brain); all voxels when ``None``.

    Returns
    -------
    Tensor, scalar, float32
    """
    with _no_autocast(x.device):
        nll = -gaussian_log_density(x.float(), mean.float(), logvar.float())
        if mask is not None:
            # Same bounding-box crop as squared_error_per_sample: the native grid is under half the padded one.
            box = (slice(None), slice(None), *_mask_box(mask))
            nll = nll[box] * mask[box[2:]].to(nll.dtype)
        return nll.sum(dim=(1, 2, 3, 4)).mean()


def gaussian_nll_observed(value: Tensor, mu: Tensor, logvar: Tensor, observed: Tensor) -> Tensor:
    """Gaussian negative log-likelihood of the observed entries only, per study.

    ``NLL = (1 / B) * sum_{i, f observed} 0.5 * (log(2 pi) + logvar_if + (v_if - mu_if)^2 / exp(logvar_if))``

    Missing entries contribute exactly zero, whatever ``value`` holds there
    (even NaN), and no gradient. Dividing by the batch size, not by the
    number of observed entries, keeps the term a per-study log-likelihood:
    a batch without observations contributes 0 rather than an undefined mean.

    Parameters
    ----------
    value : Tensor, shape (B, F)
        Sparse fields (standardised).
    mu, logvar : Tensor, shape (B, F)
        Predicted mean and log-variance (the imputation head).
    observed : Tensor of bool, shape (B, F)
        True where ``value`` was observed.

    Returns
    -------
    Tensor, scalar, float32
    """
    with _no_autocast(mu.device):
        observed = observed.bool()
        safe = torch.where(observed, value.float(), mu.detach().float())
        nll = -gaussian_log_density(safe, mu.float(), logvar.float())
        return torch.where(observed, nll, 0.0).sum() / max(value.shape[0], 1)


def _check_finite(terms: Mapping[str, Tensor]) -> None:
    """Raise ``ValueError`` naming the first non-finite term (components before the total, which sums them)."""
    for name in sorted(terms, key=lambda n: n == "loss"):
        term = terms[name]
        if not bool(torch.isfinite(term).all()):
            raise ValueError(f"loss term {name!r} is not finite ({term.detach().cpu().tolist()})")


def vae_loss(
    x_hat: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float, mask: Tensor | None = None
) -> dict[str, Tensor]:
    """beta-VAE objective (Higgins et al. 2017), per study: ``loss = recon + beta * KL``.

    Parameters
    ----------
    x_hat, x : Tensor, shape (B, C, D, H, W)
    mu, logvar : Tensor, shape (B, d)
    beta : float
        KL weight.
    mask : Tensor of bool, shape (D, H, W), optional

    Returns
    -------
    dict of scalar float32 Tensors
        ``loss``, ``recon`` (:func:`masked_mse_sum`), ``kl`` (mean over the batch
        of :func:`gaussian_kl`).

    Raises
    ------
    ValueError
        If a term is not finite.
    """
    with _no_autocast(x.device):
        recon = masked_mse_sum(x_hat, x, mask)
        kl = gaussian_kl(mu, logvar).mean()
        terms = {"loss": recon + beta * kl, "recon": recon, "kl": kl}
    _check_finite(terms)
    return terms


def cbvae_loss(
    out: Mapping[str, Tensor],
    x: Tensor,
    meta: Mapping[str, Tensor],
    beta: float,
    mask: Tensor | None = None,
    imputation_weight: float = 1.0,
    year_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Conditional beta-VAE objective, per study.

    ``loss = recon + beta * (KL + KL_imputed) + w_imp * NLL_observed(sparse) + w_year * CE(year_logits, year_bin)``

    - ``recon``: :func:`masked_mse_sum`, or, for an aleatoric decoder (``out``
      holds ``x_logvar``), the Gaussian NLL :func:`gaussian_nll_sum`.

    - ``KL = KL(q(z|x) || N(0, I))``.
    - ``KL_imputed = sum over missing sparse entries of KL(N(mu_imp, s_imp^2) || N(0, 1))``:
      a missing field is a latent variable with the standardised population
      prior N(0, 1), as in VAEs for incomplete data (Nazabal et al. 2020). The
      imputed sample reaches the decoder (through FiLM) and is trained by the
      reconstruction; without this term it would be a second, unregularised
      channel from encoder to decoder around the KL bottleneck.
    - ``NLL_observed``: Gaussian NLL of the observed entries (:func:`gaussian_nll_observed`).
    - The year head sits behind a gradient reversal layer, so minimising ``CE``
      trains the head to predict the year while the encoder is pushed to
      remove year information from ``z`` (Ganin et al. 2016). The encoder can
      also hide the year by inflating the posterior variance; ``beta > 0`` is
      what prices that, so keep ``beta`` positive when the GRL is on.

    Parameters
    ----------
    out : mapping
        Output of :meth:`ConditionalBetaVAE.forward`: ``x_hat``, ``mu``,
        ``logvar``, ``imputed_mu``, ``imputed_logvar`` (absent without the
        imputation head: both imputation terms are then 0), ``year_logits``, and
        ``x_logvar`` for an aleatoric decoder.
    x : Tensor, shape (B, C, D, H, W)
    meta : mapping
        ``sparse``, ``sparse_mask`` (B, n_sparse) and ``year_bin`` (B,).
    beta : float
        KL weight.
    mask : Tensor of bool, shape (D, H, W), optional
    imputation_weight, year_weight : float
        Weights of the imputation NLL and the adversarial cross-entropy.

    Returns
    -------
    dict of scalar float32 Tensors
        ``loss``, ``recon``, ``kl``, ``imputation_kl``, ``imputation_nll``, ``year_ce``; an
        aleatoric decoder adds ``recon_se`` (detached :func:`masked_mse_sum`, comparable
        with a non-aleatoric run's ``recon``).

    Raises
    ------
    ValueError
        If a term is not finite.
    """
    with _no_autocast(x.device):
        if "x_logvar" in out:
            recon = gaussian_nll_sum(x, out["x_hat"], out["x_logvar"], mask)
        else:
            recon = masked_mse_sum(out["x_hat"], x, mask)
        kl = gaussian_kl(out["mu"], out["logvar"]).mean()
        if "imputed_mu" in out:
            missing = ~meta["sparse_mask"].bool()
            kl_imputed_entries = gaussian_kl_per_dim(out["imputed_mu"], out["imputed_logvar"])
            imputation_kl = torch.where(missing, kl_imputed_entries, 0.0).sum() / max(x.shape[0], 1)
            nll = gaussian_nll_observed(meta["sparse"], out["imputed_mu"], out["imputed_logvar"], meta["sparse_mask"])
        else:
            # A model without the imputation head (ModelConfig.imputation off) has neither term.
            imputation_kl = nll = kl.new_zeros(())
        year_ce = F.cross_entropy(out["year_logits"].float(), meta["year_bin"].long())
        loss = recon + beta * (kl + imputation_kl) + imputation_weight * nll + year_weight * year_ce
        terms = {
            "loss": loss,
            "recon": recon,
            "kl": kl,
            "imputation_kl": imputation_kl,
            "imputation_nll": nll,
            "year_ce": year_ce,
        }
        if "x_logvar" in out:
            terms["recon_se"] = masked_mse_sum(out["x_hat"], x, mask).detach()
    _check_finite(terms)
    return terms


def beta_tcvae_loss(
    x_hat: Tensor,
    x: Tensor,
    z: Tensor,
    mu: Tensor,
    logvar: Tensor,
    dataset_size: int,
    beta_tc: float,
    alpha: float = 1.0,
    gamma: float = 1.0,
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """beta-TCVAE objective with the minibatch-weighted sampling estimator (Chen et al., NeurIPS 2018).

    The KL term of the ELBO, averaged over the data, decomposes as (Chen et al. 2018, eq. 2)::

        E_x KL(q(z|x) || p(z)) = MI + TC + DWKL
        # MI   = I_q(x; z)                 = E_q [log q(z|x) - log q(z)]
        # TC   = KL(q(z) || prod_k q(z_k)) = E_q [log q(z) - log prod_k q(z_k)]
        # DWKL = sum_k KL(q(z_k) || p(z_k)) = E_q [log prod_k q(z_k) - log p(z)]

    The aggregate posterior ``q(z)`` is estimated on the minibatch by
    minibatch-weighted sampling (Chen et al. 2018, eq. S6), with ``N`` the
    training-set size and ``M`` the batch size::

        log q(z_i)           ~ logsumexp_j sum_k log q(z_ik | x_j) - log(N M)
        log prod_k q(z_ik)   ~ sum_k [logsumexp_j log q(z_ik | x_j) - log(N M)]

    Objective (to minimise)::

        loss = recon + alpha * MI + beta_tc * TC + gamma * DWKL

    ``alpha = beta_tc = gamma = 1`` is the plain VAE; ``beta_tc > 1`` penalises
    total correlation, i.e. favours statistically independent latents.

    Every term is a SUM over the batch (``recon`` too), not a mean; no term is
    clamped. The math runs in float32 with autocast disabled.

    Parameters
    ----------
    x_hat, x : Tensor, shape (M, C, D, H, W)
        Reconstruction and target.
    z : Tensor, shape (M, d)
        Latent samples ``z_i ~ q(z | x_i)``.
    mu, logvar : Tensor, shape (M, d)
        Posterior parameters.
    dataset_size : int
        ``N``, the number of training studies.
    beta_tc : float
        Weight of the total correlation.
    alpha, gamma : float
        Weights of the index-code mutual information and the dimension-wise KL.
    mask : Tensor of bool, shape (D, H, W), optional
        Voxels that count in ``recon``.

    Returns
    -------
    dict of scalar float32 Tensors
        Exactly ``loss``, ``recon``, ``mi``, ``tc``, ``dwkl``, ``beta_tc``.

    Raises
    ------
    ValueError
        If ``dataset_size < 1``, or naming the term that is not finite.
    """
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be >= 1, got {dataset_size!r}")
    with _no_autocast(x.device):
        z, mu, logvar = z.float(), mu.float(), logvar.float()
        batch = z.shape[0]
        recon = squared_error_per_sample(x_hat, x, mask).sum()

        # log q(z_i | x_j) per dimension: [M, M, d], row i = sample, column j = posterior.
        log_qz_xj_dims = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])
        log_norm = math.log(dataset_size * batch)
        # log q(z_i | x_i): the diagonal, summed over dimensions: [M].
        log_qz_x = torch.diagonal(log_qz_xj_dims, dim1=0, dim2=1).sum(dim=0)
        # log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(NM), with log q(z_i | x_j) as an [M, M] matrix.
        log_qz = torch.logsumexp(log_qz_xj_dims.sum(dim=2), dim=1) - log_norm
        # log prod_k q(z_ik) ~ sum_k [logsumexp_j log q(z_ik | x_j) - log(NM)]: [M].
        log_prod_qzk = (torch.logsumexp(log_qz_xj_dims, dim=1) - log_norm).sum(dim=1)
        # log p(z_i) under N(0, I): [M].
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=1)

        mi = (log_qz_x - log_qz).sum()  # MI = E[log q(z|x) - log q(z)]
        tc = (log_qz - log_prod_qzk).sum()  # TC = KL(q(z) || prod_k q(z_k))
        dwkl = (log_prod_qzk - log_pz).sum()  # DWKL = sum_k KL(q(z_k) || p(z_k))
        loss = recon + alpha * mi + beta_tc * tc + gamma * dwkl
        terms = {
            "loss": loss,
            "recon": recon,
            "mi": mi,
            "tc": tc,
            "dwkl": dwkl,
            "beta_tc": torch.tensor(float(beta_tc), device=z.device),
        }
    _check_finite(terms)
    return terms


def hierarchical_kl(mu: Tensor, logvar: Tensor, top_dim: int) -> tuple[Tensor, Tensor]:
    """Per-level KL terms of the two-level H-VAE, per study.

    The latent is ``z = [z_top, u]``: the top level with prior ``p(z_top) = N(0, I)``,
    and the lower level in the standardised coordinates of its conditional prior
    ``p(z_low | z_top) = N(m(z_top), diag(s(z_top)^2))``, i.e. ``z_low = m + s * u``.
    The lower posterior is a residual normal relative to that prior (Vahdat &
    Kautz, NVAE, NeurIPS 2020, eq. 2): ``q(z_low | x, z_top) = N(m + s * mu_u, s^2 * exp(logvar_u))``.
    KL divergence is invariant under the same invertible affine map applied to both
    distributions, so::

        KL_top   = KL(q(z_top | x) || N(0, I))
        KL_lower = KL(q(z_low | x, z_top) || p(z_low | z_top))
                 = KL(N(m + s mu_u, s^2 e^logvar_u) || N(m, s^2))
                 = KL(N(mu_u, e^logvar_u) || N(0, I))            # = 0.5 * sum_k (mu_uk^2 + e^lv_uk - 1 - lv_uk)

    ``KL_lower`` is the single-sample estimate at the ``z_top`` drawn in the forward
    pass, as in the Ladder VAE (Sønderby et al., NeurIPS 2016); its sum with
    ``KL_top`` is the KL term of the two-level ELBO.

    Parameters
    ----------
    mu, logvar : Tensor, shape (B, z_dim)
        Posterior parameters of ``[z_top, u]``, top level first.
    top_dim : int
        Units of the top level.

    Returns
    -------
    kl_top, kl_lower : Tensor, shape (B,), float32
    """
    kl = gaussian_kl_per_dim(mu, logvar)
    return kl[:, :top_dim].sum(dim=1), kl[:, top_dim:].sum(dim=1)


def hvae_loss(
    out: Mapping[str, Tensor], x: Tensor, top_beta: float, beta: float, mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Two-level hierarchical VAE objective, per study (Sønderby et al. 2016; Vahdat & Kautz 2020)::

        loss = recon + top_beta * KL_top + beta * KL_lower
        # recon    = sum over brain voxels and channels of (x_hat - x)^2 (masked_mse_sum, as the flat variants)
        # KL_top   = KL(q(z_top | x) || N(0, I))
        # KL_lower = KL(q(z_low | x, z_top) || p(z_low | z_top))   (see hierarchical_kl)

    With ``top_beta = beta = 1`` this is the negative two-level ELBO of a decoder
    with fixed variance 1/2; separate weights let the global level be priced
    differently from the local one.

    Parameters
    ----------
    out : mapping
        Output of :meth:`HierarchicalVAE.forward`: ``x_hat``, and ``kl_top``,
        ``kl_lower`` (B,) from :func:`hierarchical_kl`.
    x : Tensor, shape (B, C, D, H, W)
    top_beta, beta : float
        KL weights of the top and the lower level.
    mask : Tensor of bool, shape (D, H, W), optional

    Returns
    -------
    dict of scalar float32 Tensors
        ``loss``, ``recon``, ``kl_top``, ``kl_lower`` and ``kl = kl_top + kl_lower``.

    Raises
    ------
    ValueError
        If a term is not finite.
    """
    with _no_autocast(x.device):
        recon = masked_mse_sum(out["x_hat"], x, mask)
        kl_top, kl_lower = out["kl_top"].float().mean(), out["kl_lower"].float().mean()
        loss = recon + top_beta * kl_top + beta * kl_lower
        terms = {"loss": loss, "recon": recon, "kl_top": kl_top, "kl_lower": kl_lower, "kl": kl_top + kl_lower}
    _check_finite(terms)
    return terms


# ================================================================================================================
# Point-cloud objectives (stage 03, :mod:`sematlas.models.pointcloud`).
#
# A study is a set of peaks ``A = {a_i}``, shape (batch, n_points, 3), with point weights ``w_i >= 0`` summing
# to 1 per set, shape (batch, n_points): a peak duplicated k times to reach the fixed set size carries 1/k of
# its mass on each copy, so every original peak counts once. ``None`` weights are uniform (1 / n_points).
# Everything below runs in float32 with autocast off, like the volumetric objectives above.
# ================================================================================================================


def _uniform_weights(points: Tensor) -> Tensor:
    """Weights ``1 / n_points`` for every point of ``(batch, n_points, 3)``: shape (batch, n_points)."""
    return torch.full(points.shape[:2], 1.0 / points.shape[1], dtype=torch.float32, device=points.device)


def _weighted_sets(
    a: Tensor, b: Tensor, weights_a: Tensor | None, weights_b: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both point sets and their weights in float32, uniform weights where none are given."""
    a, b = a.float(), b.float()
    weights_a = _uniform_weights(a) if weights_a is None else weights_a.float()
    weights_b = _uniform_weights(b) if weights_b is None else weights_b.float()
    return a, b, weights_a, weights_b


def chamfer_distance(
    a: Tensor, b: Tensor, weights_a: Tensor | None = None, weights_b: Tensor | None = None, squared: bool = True
) -> Tensor:
    """Weighted Chamfer distance between two batches of point sets.

    Fan, Su & Guibas (CVPR 2017, eq. 1), with each set's sum over points
    replaced by its weighted mean so that set sizes and duplicated points do
    not change the scale::

        CD(A, B) = sum_i w_i min_j d(a_i, b_j) + sum_j v_j min_i d(a_i, b_j)
        # d(a, b) = ||a - b||^2 (squared=True, the training loss) or ||a - b|| (a distance, for metrics)

    Symmetric in ``(a, weights_a) <-> (b, weights_b)``; zero for a set with itself.

    Parameters
    ----------
    a : Tensor, shape (batch, n, 3)
    b : Tensor, shape (batch, m, 3)
    weights_a : Tensor, shape (batch, n), optional
    weights_b : Tensor, shape (batch, m), optional
    squared : bool

    Returns
    -------
    Tensor, shape (batch,), float32
    """
    with _no_autocast(a.device):
        a, b, weights_a, weights_b = _weighted_sets(a, b, weights_a, weights_b)
        # Differences, not ||a||^2 + ||b||^2 - 2ab: the expansion cancels catastrophically for nearby points.
        d = (a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(dim=-1)  # (batch, n, m)
        if not squared:
            d = d.sqrt()
        return (weights_a * d.min(dim=2).values).sum(dim=1) + (weights_b * d.min(dim=1).values).sum(dim=1)


def sinkhorn_divergence(
    a: Tensor,
    b: Tensor,
    weights_a: Tensor | None = None,
    weights_b: Tensor | None = None,
    blur: float = 0.05,
    p: int = 2,
    scaling: float = 0.8,
) -> Tensor:
    """Debiased Sinkhorn divergence between two batches of weighted point sets (geomloss, tensorized backend).

    Entropy-regularised optimal transport (Cuturi, NeurIPS 2013) with cost
    ``C(x, y) = ||x - y||^p / p`` and temperature ``eps = blur^p``::

        OT_eps(A, B) = min_{P >= 0, P 1 = w, P^T 1 = v} <P, C> + eps KL(P || w v^T)

    and its debiased form (Feydy et al., AISTATS 2019, eq. 3), which is 0 for
    identical sets, positive otherwise, and tends to the exact transport cost
    (the earth mover's distance for ``p = 1``; ``W_2^2 / 2`` for ``p = 2``) as
    ``blur -> 0``::

        S_eps(A, B) = OT_eps(A, B) - OT_eps(A, A) / 2 - OT_eps(B, B) / 2

    Solved by Sinkhorn iterations in the log domain with eps-scaling
    (``scaling`` is the ratio between successive temperatures; closer to 1 is
    more accurate and slower). The tensorized backend needs no KeOps and is
    exact for the tens of points a study has.

    Parameters
    ----------
    a : Tensor, shape (batch, n, 3)
    b : Tensor, shape (batch, m, 3)
    weights_a : Tensor, shape (batch, n), optional
    weights_b : Tensor, shape (batch, m), optional
    blur : float
        Length scale of the entropic smoothing, in the units of the points.
    p : {1, 2}
        Exponent of the ground cost.
    scaling : float
        eps-scaling ratio in (0, 1).

    Returns
    -------
    Tensor, shape (batch,), float32
    """
    from geomloss import SamplesLoss  # imported here: only the point-cloud stage needs geomloss

    with _no_autocast(a.device):
        a, b, weights_a, weights_b = _weighted_sets(a, b, weights_a, weights_b)
        loss = SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, debias=True, backend="tensorized")
        return loss(weights_a, a, weights_b, b)


def pointcloud_vae_loss(
    points_hat: Tensor,
    points: Tensor,
    weights: Tensor,
    mu: Tensor,
    logvar: Tensor,
    beta: float,
    chamfer_weight: float = 1.0,
    sinkhorn_weight: float = 1.0,
    sinkhorn_blur: float = 0.05,
) -> dict[str, Tensor]:
    """Point-cloud VAE objective, per study (averaged over the batch)::

        loss = chamfer_weight * CD(X_hat, X) + sinkhorn_weight * S_eps(X_hat, X) + beta * KL(q(z|x, c) || N(0, I))
        # CD: squared weighted Chamfer (Fan et al. 2017), see chamfer_distance
        # S_eps: debiased Sinkhorn divergence with p = 2 (Cuturi 2013; Feydy et al. 2019), see sinkhorn_divergence
        # KL = 0.5 * sum_k (mu_k^2 + s_k^2 - 1 - log s_k^2) (Kingma & Welling 2014, app. B)

    Chamfer matches every point to its nearest neighbour and so is blind to
    how many points pile up where; the transport term fixes the densities
    (each target peak must receive its mass), which keeps the decoder from
    collapsing several peaks onto one.

    Parameters
    ----------
    points_hat : Tensor, shape (batch, n_points, 3)
        Decoded points (uniform weights).
    points : Tensor, shape (batch, n_points, 3)
        Target points.
    weights : Tensor, shape (batch, n_points)
        Target point weights (each set sums to 1).
    mu, logvar : Tensor, shape (batch, z_dim)
        Posterior parameters.
    beta, chamfer_weight, sinkhorn_weight : float
        Term weights.
    sinkhorn_blur : float
        Entropic blur of the Sinkhorn term, in the units of the points.

    Returns
    -------
    dict of scalar float32 Tensors
        ``loss``, ``chamfer``, ``sinkhorn``, ``kl``.

    Raises
    ------
    ValueError
        If a term is not finite.
    """
    with _no_autocast(points.device):
        chamfer = chamfer_distance(points_hat, points, weights_b=weights).mean()
        sinkhorn = sinkhorn_divergence(points_hat, points, weights_b=weights, blur=sinkhorn_blur, p=2).mean()
        kl = gaussian_kl(mu, logvar).mean()
        loss = chamfer_weight * chamfer + sinkhorn_weight * sinkhorn + beta * kl
        terms = {"loss": loss, "chamfer": chamfer, "sinkhorn": sinkhorn, "kl": kl}
    _check_finite(terms)
    return terms
