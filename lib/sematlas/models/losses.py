"""The mathematics the objectives share, computed in float32.

Each model owns its objective (:meth:`sematlas.models.base.VolumetricVAE.loss`, written
out in the model's module, e.g. :meth:`sematlas.models.cbvae.ConditionalBetaVAE.loss`);
what the objectives have in common lives here: Gaussian log densities and KL divergences, the masked squared
error and Gaussian likelihoods of a map, the finiteness check, and the point-set
distances of the point-cloud model (Chamfer, Sinkhorn).

Notation: a batch of ``B`` studies ``x_i`` with posterior
``q(z | x_i) = N(mu_i, diag(exp(logvar_i)))``, prior ``p(z) = N(0, I)``, latent
dimension ``d``. The reconstruction terms are *per study*: summed over voxels and
channels, averaged over the batch.

All functions cast their inputs to float32 and disable autocast (:func:`no_autocast`),
so mixed precision never reaches a log-density or a sum over 10^5 voxels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from sematlas.core.grid import mask_box

_LOG_2PI = math.log(2.0 * math.pi)


def no_autocast(device: torch.device) -> torch.autocast:
    """A region where autocast is off on ``device``: the loss maths runs in the inputs' float32."""
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
    with no_autocast(mu.device):
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


def gaussian_kl_between_per_dim(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """``KL(N(mu_q, s_q^2) || N(mu_p, s_p^2))`` per sample and latent dimension.

    ``KL_k = 0.5 * (log s_p^2 - log s_q^2 + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1)``;
    with ``mu_p = 0, s_p = 1`` it is :func:`gaussian_kl_per_dim`.

    Parameters
    ----------
    mu_q, logvar_q, mu_p, logvar_p : Tensor, shape (B, d)

    Returns
    -------
    Tensor, shape (B, d), float32
    """
    with no_autocast(mu_q.device):
        mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
        return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0)


#: Floor of a learned per-channel noise scale, ``log sigma >= -6`` (sigma-VAE, Rybkin et al. 2021):
#: a perfectly fitted batch would otherwise drive the log-likelihood to infinity.
MIN_LOG_SIGMA = -6.0


def optimal_sigma_nll(x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Gaussian NLL with one noise scale per channel at its optimum for the batch (the optimal sigma-VAE).

    Rybkin, Daniilidis & Levine, "Simple and effective VAE training with calibrated
    decoders", ICML 2021: the maximum-likelihood variance of a Gaussian decoder with a
    shared scale is the mean squared error, so it is computed, not learned::

        # sigma_c^2 = (1 / (B N)) sum_{i, v in mask} (x_hat_icv - x_icv)^2     (N: voxels in the mask)
        # NLL_i     = sum_c [ SE_ic / (2 sigma_c^2) + N (log sigma_c + 0.5 log 2 pi) ]

    ``sigma`` keeps its gradient, as in the paper: the objective is then the ELBO of a
    calibrated decoder, so ``beta = 1`` weighs the KL as Bayes' rule does and the KL is
    priced in nats of the data instead of against a variance of 1/2.

    Parameters
    ----------
    x_hat, x : Tensor, shape (B, C, D, H, W)
    mask : Tensor of bool, shape (D, H, W), optional

    Returns
    -------
    nll : Tensor, scalar, float32
        Per study (mean over the batch).
    sigma : Tensor, shape (C,), float32, detached
        The noise scale of each channel.
    """
    with no_autocast(x.device):
        squared = squared_error_per_channel(x_hat, x, mask)  # (B, C)
        n_voxels = float(x[0, 0].numel() if mask is None else mask.sum())
        log_sigma = (0.5 * torch.log(squared.mean(0) / n_voxels + 1e-12)).clamp_min(MIN_LOG_SIGMA)  # (C,)
        nll = squared / (2.0 * torch.exp(2.0 * log_sigma)) + n_voxels * (log_sigma + 0.5 * _LOG_2PI)
        return nll.sum(1).mean(), torch.exp(log_sigma).detach()


def squared_error_per_channel(x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum of squared errors per sample and channel over the voxels in ``mask``.

    ``SE_ic = sum_{v in mask} (x_hat_icv - x_icv)^2``

    The maps are first cropped to the mask's bounding box, which gives the
    same sum for less work.

    Parameters
    ----------
    x_hat, x : Tensor, shape (B, C, D, H, W)
        Reconstruction and target.
    mask : Tensor of bool, shape (D, H, W), optional
        Voxels that count (the brain); all voxels when ``None``.

    Returns
    -------
    Tensor, shape (B, C), float32
    """
    with no_autocast(x.device):
        x_hat, x = x_hat.float(), x.float()
        if mask is None:
            return (x_hat - x).pow(2).sum(dim=(2, 3, 4))
        box = (slice(None), slice(None), *mask_box(mask))
        keep = mask[box[2:]].to(x.dtype)
        return ((x_hat[box] - x[box]).pow(2) * keep).sum(dim=(2, 3, 4))


def squared_error_per_sample(x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum of squared errors per sample over channels and the voxels in ``mask``.

    ``SE_i = sum_c sum_{v in mask} (x_hat_icv - x_icv)^2`` (:func:`squared_error_per_channel` summed).

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
    return squared_error_per_channel(x_hat, x, mask).sum(dim=1)


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
    with no_autocast(x.device):
        nll = -gaussian_log_density(x.float(), mean.float(), logvar.float())
        if mask is not None:
            # Same bounding-box crop as squared_error_per_sample.
            box = (slice(None), slice(None), *mask_box(mask))
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
    with no_autocast(mu.device):
        observed = observed.bool()
        safe = torch.where(observed, value.float(), mu.detach().float())
        nll = -gaussian_log_density(safe, mu.float(), logvar.float())
        return torch.where(observed, nll, 0.0).sum() / max(value.shape[0], 1)


def check_finite(terms: Mapping[str, Tensor]) -> None:
    """Raise ``ValueError`` naming the first non-finite loss term.

    Components are checked before the total ``loss``, which sums them, so the
    message names the term that went wrong.
    """
    for name in sorted(terms, key=lambda n: n == "loss"):
        term = terms[name]
        if not bool(torch.isfinite(term).all()):
            raise ValueError(f"loss term {name!r} is not finite ({term.detach().cpu().tolist()})")


# ================================================================================================================
# Point-set distances of the point-cloud objective (stage 03, :mod:`sematlas.models.pointcloud`).
#
# A study is a set of peaks ``A = {a_i}``, shape (batch, n_points, 3), with point weights ``w_i >= 0`` summing
# to 1 per set, shape (batch, n_points): a peak duplicated k times to reach the fixed set size carries 1/k of
# its mass on each copy, so every original peak counts once. ``None`` weights are uniform (1 / n_points).
# Everything below runs in float32 with autocast off, like the volumetric terms above.
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
    with no_autocast(a.device):
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

    with no_autocast(a.device):
        a, b, weights_a, weights_b = _weighted_sets(a, b, weights_a, weights_b)
        loss = SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, debias=True, backend="tensorized")
        return loss(weights_a, a, weights_b, b)
