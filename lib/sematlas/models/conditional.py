"""The decoders of the conditional models, all called as ``decoder(z, m)``.

The ``cbvae`` conditions its decoder on the metadata vector, the ``hvae`` on its
top level: :func:`conditional_decoder` builds either, FiLM-modulated or fed
``z ++ m`` (:class:`ConcatConditioned`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sematlas.models.blocks import ConvDecoder, coarse_shape
from sematlas.models.config import ConditionalDecoderConfig
from sematlas.models.tcvae import SpatialBroadcastDecoder

# Side of the cube the conditional decoder starts from.
# The transposed-convolution decoder doubles four times: it starts from 1/16 of the grid.
_DECODER_UPSAMPLING = 16


class ConcatConditioned(nn.Module):
    """Conditioning by concatenation: ``decoder(z ++ m)`` (the conditional VAE of Sohn et al. 2015).

    Keeps the ``(z, m)`` call of a FiLM-conditioned decoder, so the model's
    ``decode`` and the release graphs need not know how ``m`` enters.

    Parameters
    ----------
    decoder : ConvDecoder or SpatialBroadcastDecoder
        Built for ``z_dim + meta_dim`` inputs and no FiLM.
    """

    def __init__(self, decoder: ConvDecoder | SpatialBroadcastDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: Tensor, m: Tensor) -> Tensor:
        """Maps (B, C, d, h, w) from latents (B, z_dim) and metadata vectors (B, meta_dim)."""
        return self.decoder(torch.cat([z, m], dim=1))

    def predict(self, z: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and log-variances, each (B, C, d, h, w), of an aleatoric decoder."""
        if not isinstance(self.decoder, ConvDecoder):
            raise ValueError("the Spatial Broadcast Decoder has no aleatoric head")
        return self.decoder.predict(torch.cat([z, m], dim=1))


def conditional_decoder(
    config: ConditionalDecoderConfig, meta_dim: int, concat: bool = False, aleatoric: bool = False
) -> ConvDecoder | SpatialBroadcastDecoder | ConcatConditioned:
    """The decoder of a conditional model, called as ``decoder(z, m)``.

    ``config.decoder="conv"``: from 1/16 of the grid, widths ``8c, 4c, 2c, c`` up
    to the grid; ``"sbd"``: a Spatial Broadcast Decoder of width ``sbd_channels``.
    FiLM modulates every upsampling block by ``m``, or with ``concat`` an
    unconditioned decoder reads ``z ++ m`` instead.

    Parameters
    ----------
    config : ConditionalDecoderConfig
    meta_dim : int
        Width of ``m``: the metadata vector (``cbvae``) or the top level (``hvae``).
    concat : bool
        Condition by concatenation instead of FiLM.
    aleatoric : bool
        Give the (transposed-convolution) decoder a per-voxel log-variance head.
    """
    z_dim = config.z_dim + meta_dim if concat else config.z_dim
    film_dim = None if concat else meta_dim
    decoder: ConvDecoder | SpatialBroadcastDecoder
    if config.decoder == "sbd":
        decoder = SpatialBroadcastDecoder.from_config(config, z_dim=z_dim, film_meta_dim=film_dim)
    else:
        c = config.base_channels
        n_blocks = _DECODER_UPSAMPLING.bit_length() - 2
        decoder = ConvDecoder(
            z_dim=z_dim,
            out_channels=config.in_channels,
            start_shape=coarse_shape(config.grid_shape, _DECODER_UPSAMPLING),
            widths=[max(8 * c >> i, c) for i in range(n_blocks + 1)],
            dropout=config.dropout,
            gradient_checkpointing=config.gradient_checkpointing,
            film_meta_dim=film_dim,
            hidden_dim=config.hidden_dim,
            output_init=config.output_init,
            aleatoric=aleatoric,
        )
    return ConcatConditioned(decoder) if concat else decoder


__all__ = ["ConcatConditioned", "conditional_decoder"]
