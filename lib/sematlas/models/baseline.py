"""Baseline: a 3D ResNet-10-style VAE.

Encoder: a stride-2 stem conv, then four stages of one basic residual block
each, every stage downsampling by 2 (each side ``ceil(n / 2)`` five times: 48 -> 2
at 4 mm), flattened into a linear head for ``(mu, logvar)``. Every stage
downsamples because on a 2-core CPU the cost of a 3D network is dominated by its
full- and half-resolution feature maps, not by its width. The decoder mirrors
the encoder with transposed convolutions from 1/16 of the grid (3^3 at 4 mm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sematlas.models.base import VolumetricVAE
from sematlas.models.blocks import (
    ConvDecoder,
    ResidualBlock3d,
    channels_last,
    coarse_shape,
    group_norm,
    halved,
    reparameterise,
    run_block,
)
from sematlas.models.config import ModelConfig
from sematlas.models.losses import check_finite, gaussian_kl, masked_mse_sum, no_autocast

# The stem and each of the four stages halve the side.
_ENCODER_HALVINGS = 5
# The decoder doubles four times up to the grid.
_DECODER_UPSAMPLING = 16


class ResNetEncoder(nn.Module):
    """3D ResNet-10-style encoder: stem + 4 one-block stages, all stride 2.

    Widths are ``c, c, 2c, 4c, 8c`` with ``c = base_channels``.

    Parameters
    ----------
    config : ModelConfig
        Uses ``in_channels``, ``grid_shape``, ``base_channels``, ``z_dim``,
        ``dropout`` and ``gradient_checkpointing``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.base_channels
        self.gradient_checkpointing = config.gradient_checkpointing
        self.stem = nn.Conv3d(config.in_channels, c, 3, stride=2, padding=1, bias=False)
        self.stem_norm = group_norm(c)
        widths = (c, c, 2 * c, 4 * c, 8 * c)
        self.stages = nn.ModuleList(
            ResidualBlock3d(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1] * math.prod(halved(config.grid_shape, _ENCODER_HALVINGS)), 2 * config.z_dim)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters.

        Parameters
        ----------
        image : Tensor, shape (B, in_channels, d, h, w)

        Returns
        -------
        mu, logvar : Tensor, shape (B, z_dim)
        """
        h = F.silu(self.stem_norm(self.stem(channels_last(image))))
        for stage in self.stages:
            h = run_block(stage, h, enabled=self.gradient_checkpointing)
        mu, logvar = self.head(self.dropout(h.flatten(1))).chunk(2, dim=1)
        return mu, logvar

    def conv_path(self) -> list[nn.Conv3d]:
        """Convolutions on the longest path from input to head, in order."""
        blocks = [stage for stage in self.stages if isinstance(stage, ResidualBlock3d)]  # all of them
        return [self.stem] + [conv for block in blocks for conv in block.conv_path()]


def resnet_decoder(config: ModelConfig) -> ConvDecoder:
    """Mirror of :class:`ResNetEncoder`: widths ``8c, 4c, 2c, c`` from 1/16 of the grid up to the grid."""
    c = config.base_channels
    return ConvDecoder(
        z_dim=config.z_dim,
        out_channels=config.in_channels,
        start_shape=coarse_shape(config.grid_shape, _DECODER_UPSAMPLING),
        widths=(8 * c, 4 * c, 2 * c, c),
        dropout=config.dropout,
        gradient_checkpointing=config.gradient_checkpointing,
        output_init=config.output_init,
    )


class UnconditionalVAE(VolumetricVAE):
    """A VAE whose encoder and decoder ignore the metadata: shared by ``baseline`` and ``tcvae_sbd``.

    Subclasses set ``encoder`` (image -> ``(mu, logvar)``) and ``decoder`` (z -> map).
    """

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, logvar)``, each (B, z_dim), of images (B, C, d, h, w); ``meta`` is unused."""
        return self.encoder(image)

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        """Maps (B, C, d, h, w) in (0, 1) from latents (B, z_dim); ``meta`` is unused."""
        return self.decoder(z)

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, sample (``z = mu`` in eval mode) and decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, d, h, w)
        meta : mapping, optional
            Ignored: the model is unconditional.

        Returns
        -------
        dict
            ``x_hat`` (B, C, d, h, w); ``mu``, ``logvar``, ``z`` (B, z_dim).
        """
        mu, logvar = self.encode(image)
        z = reparameterise(mu, logvar, sample=self.training)
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z}


class BaselineVAE(UnconditionalVAE):
    """Unconditional beta-VAE with a ResNet-10-style encoder and a mirrored decoder.

    Parameters
    ----------
    config : ModelConfig
        Architecture (the shared fields are all it has).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResNetEncoder(config)
        self.decoder = resnet_decoder(config)
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        """beta-VAE objective (Higgins et al. 2017), per study.

        Returns
        -------
        dict of scalar float32 Tensors
            ``loss``, ``recon`` (:func:`~sematlas.models.losses.masked_mse_sum`) and
            ``kl`` (batch mean of :func:`~sematlas.models.losses.gaussian_kl`);
            arguments as in :meth:`VolumetricVAE.loss`.
        """
        # loss  = recon + beta * KL
        # recon = (1 / B) sum_i sum_c sum_{v in mask} (x_hat_icv - x_icv)^2
        #         (-log N(x; x_hat, 1/2) up to a constant: beta = 1 is the ELBO of a fixed-variance decoder)
        # KL    = (1 / B) sum_i KL(q(z | x_i) || N(0, I)),  KL_k = 0.5 (mu_k^2 + s_k^2 - 1 - log s_k^2)
        x = batch["image"]
        with no_autocast(x.device):
            recon = masked_mse_sum(out["x_hat"], x, mask)
            kl = gaussian_kl(out["mu"], out["logvar"]).mean()
            terms = {"loss": recon + weights["beta"] * kl, "recon": recon, "kl": kl}
        check_finite(terms)
        return terms


__all__ = ["BaselineVAE", "ResNetEncoder", "UnconditionalVAE", "resnet_decoder"]
