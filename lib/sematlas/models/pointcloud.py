"""The point-cloud conditional VAE (its inference wrapper is :class:`sematlas.inference.pointcloud.PointCloudModel`).

:class:`PointCloudVAE` encodes a study's fixed-size peak set with PointNet++
(:mod:`sematlas.models.pointnet`) and decodes a latent code with an MLP to
``n_points x 3`` coordinates, both conditioned on the study metadata of
:mod:`sematlas.core.metadata` (the same vector the volumetric models see). Its
objective is :func:`pointcloud_vae_loss` (Chamfer + Sinkhorn + KL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sematlas.models.losses import chamfer_distance, check_finite, gaussian_kl, no_autocast, sinkhorn_divergence
from sematlas.models.pointnet import PointNetEncoder, shared_mlp


@dataclass(frozen=True)
class PointCloudConfig:
    """Architecture of :class:`PointCloudVAE` (the choices of ``params["pointcloud"]``, plus ``cond_dim``).

    Raises
    ------
    ValueError
        Set-abstraction settings that are not pairs or that ask for more points than a level has.
    """

    n_points: int
    cond_dim: int
    fourier_features: int
    fourier_sigma: float
    sa_npoint: tuple[int, int]
    sa_radius: tuple[float, float]
    sa_nsample: tuple[int, int]
    sa_channels: tuple[int, int]
    global_channels: int
    decoder_hidden: tuple[int, ...]
    z_dim: int

    def __post_init__(self) -> None:
        for name in ("sa_npoint", "sa_radius", "sa_nsample", "sa_channels"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"pointcloud.{name} must have two entries (one per level), got {getattr(self, name)}")
        level_sizes = (self.n_points, self.sa_npoint[0])
        for level in range(2):
            if not 0 < self.sa_npoint[level] <= level_sizes[level]:
                raise ValueError(f"pointcloud.sa_npoint[{level}] must be in [1, {level_sizes[level]}]")
            if not 0 < self.sa_nsample[level] <= level_sizes[level]:
                raise ValueError(f"pointcloud.sa_nsample[{level}] must be in [1, {level_sizes[level]}]")
            if not self.sa_radius[level] > 0:
                raise ValueError(f"pointcloud.sa_radius[{level}] must be positive")

    @property
    def meta_dim(self) -> int:
        """Width of the conditioning vector: ``cond`` plus the sample-size value and its known-flag."""
        return self.cond_dim + 2

    @classmethod
    def from_params(cls, section: Mapping[str, Any], cond_dim: int) -> PointCloudConfig:
        """From ``params["pointcloud"]`` and the metadata encoder's ``cond_dim``."""
        return cls.from_dict(
            {
                "cond_dim": cond_dim,
                **{
                    key: section[key]
                    for key in (
                        "n_points",
                        "fourier_features",
                        "fourier_sigma",
                        "sa_npoint",
                        "sa_radius",
                        "sa_nsample",
                        "sa_channels",
                        "global_channels",
                        "decoder_hidden",
                        "z_dim",
                    )
                },
            }
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PointCloudConfig:
        return cls(
            n_points=int(values["n_points"]),
            cond_dim=int(values["cond_dim"]),
            fourier_features=int(values["fourier_features"]),
            fourier_sigma=float(values["fourier_sigma"]),
            sa_npoint=tuple(int(v) for v in values["sa_npoint"]),  # type: ignore[arg-type]
            sa_radius=tuple(float(v) for v in values["sa_radius"]),  # type: ignore[arg-type]
            sa_nsample=tuple(int(v) for v in values["sa_nsample"]),  # type: ignore[arg-type]
            sa_channels=tuple(int(v) for v in values["sa_channels"]),  # type: ignore[arg-type]
            global_channels=int(values["global_channels"]),
            decoder_hidden=tuple(int(v) for v in values["decoder_hidden"]),
            z_dim=int(values["z_dim"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for checkpoints and YAML."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def metadata_vector(meta: Mapping[str, Tensor]) -> Tensor:
    """The conditioning vector ``(batch, cond_dim + 2)``: ``cond``, the standardised sample size
    (0 where unknown) and whether it is known."""
    return torch.cat([meta["cond"].float(), meta["sparse"].float(), meta["sparse_mask"].float()], dim=1)


class PointCloudVAE(nn.Module):
    """Conditional VAE over point sets: PointNet++ encoder, MLP decoder.

    ``q(z | x, c) = N(mu, diag(exp(logvar)))`` from the PointNet++ global
    feature concatenated with the metadata vector ``c``; ``p(x | z, c)``
    decoded by an MLP on ``[z, c]`` to ``(n_points, 3)``.

    Conditioning by concatenation, not FiLM: FiLM pays off when one
    modulation must reach every position of a feature map (the convolutional
    ``cbvae``); here the metadata meets a single global vector on each side,
    where concatenating it into a linear layer already shifts every unit by a
    learnt function of ``c`` and the following nonlinearities let it interact
    with ``z`` (the conditional VAE of Sohn et al., NeurIPS 2015). It is also
    the smaller model on the 1k-study profile.

    Parameters
    ----------
    config : PointCloudConfig
    """

    def __init__(self, config: PointCloudConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PointNetEncoder(
            config.fourier_features,
            config.fourier_sigma,
            config.sa_npoint,
            config.sa_radius,
            config.sa_nsample,
            config.sa_channels,
            config.global_channels,
        )
        self.posterior = shared_mlp([config.global_channels + config.meta_dim, config.global_channels])
        self.mu = nn.Linear(config.global_channels, config.z_dim)
        self.logvar = nn.Linear(config.global_channels, config.z_dim)
        self.decoder = nn.Sequential(
            shared_mlp([config.z_dim + config.meta_dim, *config.decoder_hidden]),
            nn.Linear(config.decoder_hidden[-1], 3 * config.n_points),
        )

    def encode(self, points: Tensor, meta: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Posterior parameters of ``(batch, n_points, 3)`` scaled points: ``mu``, ``logvar`` ``(batch, z_dim)``."""
        h = self.posterior(torch.cat([self.encoder(points), metadata_vector(meta)], dim=1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor, meta: Mapping[str, Tensor]) -> Tensor:
        """``(batch, z_dim)`` latents -> ``(batch, n_points, 3)`` scaled points."""
        out = self.decoder(torch.cat([z, metadata_vector(meta)], dim=1))
        return out.view(z.shape[0], self.config.n_points, 3)

    def forward(self, points: Tensor, meta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Encode, sample ``z = mu + exp(logvar / 2) * eps`` (Kingma & Welling 2014), decode.

        Returns
        -------
        dict
            ``points_hat`` (batch, n_points, 3), ``mu``, ``logvar``, ``z`` (batch, z_dim).
        """
        mu, logvar = self.encode(points, meta)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return {"points_hat": self.decode(z, meta), "mu": mu, "logvar": logvar, "z": z}


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
    with no_autocast(points.device):
        chamfer = chamfer_distance(points_hat, points, weights_b=weights).mean()
        sinkhorn = sinkhorn_divergence(points_hat, points, weights_b=weights, blur=sinkhorn_blur, p=2).mean()
        kl = gaussian_kl(mu, logvar).mean()
        loss = chamfer_weight * chamfer + sinkhorn_weight * sinkhorn + beta * kl
        terms = {"loss": loss, "chamfer": chamfer, "sinkhorn": sinkhorn, "kl": kl}
    check_finite(terms)
    return terms
