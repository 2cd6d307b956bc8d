"""The conditional atlas's encoder: a 3D DenseNet with dilated convolutions in its last dense block.

:class:`DenseEncoder` runs in two parts so that the ``cbvae`` can impute missing
metadata from unmodulated features before FiLM modulates the rest
(see :mod:`sematlas.models.cbvae`): :meth:`DenseEncoder.features` (stem and first
dense block) and :meth:`DenseEncoder.posterior` (the FiLM-modulated remainder
and the posterior head).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sematlas.models.blocks import channels_last, film, group_norm, halved, run_block
from sematlas.models.config import DENSE_ENTRY_SIDE, CBVAEConfig


class DenseLayer3d(nn.Module):
    """Pre-activation bottleneck dense layer (DenseNet-BC, Huang et al. 2017).

    ``new = Conv3x3_d(SiLU(GN(Conv1x1(SiLU(GN(x))))))``; returns ``x ++ new``
    along channels, so every later layer sees every earlier feature map.

    Parameters
    ----------
    in_channels : int
        Input channels.
    growth_rate : int
        Channels added (``new``); the bottleneck is ``4 * growth_rate`` wide.
    dilation : int
        Dilation of the 3x3x3 conv (padding keeps the size).
    """

    def __init__(self, in_channels: int, growth_rate: int, dilation: int = 1) -> None:
        super().__init__()
        bottleneck = 4 * growth_rate
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv3d(in_channels, bottleneck, 1, bias=False)
        self.norm2 = group_norm(bottleneck)
        self.conv2 = nn.Conv3d(bottleneck, growth_rate, 3, padding=dilation, dilation=dilation, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, S, S, S) to (B, C + growth_rate, S, S, S)."""
        new = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return torch.cat([x, new], dim=1)


class DenseBlock3d(nn.Module):
    """A dense block: dense layers applied in sequence, one per dilation.

    Parameters
    ----------
    in_channels : int
        Input channels.
    growth_rate : int
        Channels each layer adds.
    dilations : sequence of int
        Dilation of each layer's 3x3x3 conv; its length is the number of layers.
    """

    def __init__(self, in_channels: int, growth_rate: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DenseLayer3d(in_channels + i * growth_rate, growth_rate, d) for i, d in enumerate(dilations))
        )
        self.out_channels = in_channels + len(dilations) * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, S, S, S) to (B, out_channels, S, S, S)."""
        return self.layers(x)

    def conv_path(self) -> list[nn.Conv3d]:
        """Convolutions in input-to-output order (each layer feeds all later ones)."""
        layers = [layer for layer in self.layers if isinstance(layer, DenseLayer3d)]  # all of them
        return [conv for layer in layers for conv in (layer.conv1, layer.conv2)]


class Transition3d(nn.Module):
    """DenseNet transition: GN -> SiLU -> strided 3x3x3 conv (halves the side, compresses channels).

    The strided conv replaces DenseNet's average pooling, whose CPU backward is
    not deterministic-safe.

    Parameters
    ----------
    in_channels, out_channels : int
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = group_norm(in_channels)
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, S, S, S) to (B, C_out, S/2, S/2, S/2)."""
        return self.conv(F.silu(self.norm(x)))


class DenseEncoder(nn.Module):
    """3D DenseNet encoder with dilated convolutions in its last dense block.

    ``stem (stride 2) -> strided convs down to 16^3 -> [dense block -> FiLM ->
    transition] x len(dense_layers) -> flatten -> linear (mu, logvar)``.
    Widths: stem ``c``, then ``2c`` entering the first dense block; each
    transition halves the channels (DenseNet-BC compression 0.5).

    Parameters
    ----------
    config : CBVAEConfig
        Uses ``in_channels``, ``grid_shape``, ``base_channels``, ``growth_rate``,
        ``dense_layers``, ``dilations``, ``z_dim``, ``dropout``, ``gradient_checkpointing``;
        with ``conditioning="concat"`` the head also reads the metadata vector
        (``meta_dim`` more inputs).
    """

    def __init__(self, config: CBVAEConfig) -> None:
        super().__init__()
        c = config.base_channels
        self.gradient_checkpointing = config.gradient_checkpointing
        shape = halved(config.grid_shape, 1)
        stem: list[nn.Module] = [nn.Conv3d(config.in_channels, c, 3, stride=2, padding=1, bias=False)]
        stem += [group_norm(c), nn.SiLU()]
        channels = c
        while max(shape) > DENSE_ENTRY_SIDE:
            stem += [nn.Conv3d(channels, 2 * c, 3, stride=2, padding=1, bias=False), group_norm(2 * c), nn.SiLU()]
            channels, shape = 2 * c, halved(shape, 1)
        self.stem = nn.Sequential(*stem)

        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        block_channels: list[int] = []
        for i, n_layers in enumerate(config.dense_layers):
            last = i == len(config.dense_layers) - 1
            block = DenseBlock3d(channels, config.growth_rate, config.dilations if last else (1,) * n_layers)
            self.blocks.append(block)
            block_channels.append(block.out_channels)
            channels = max(block.out_channels // 2, 1)
            self.transitions.append(Transition3d(block.out_channels, channels))
            shape = halved(shape, 1)
        self.block_channels = block_channels
        self.dropout = nn.Dropout(config.dropout)
        self.head_meta_dim = config.meta_dim if config.conditioning == "concat" else 0
        self.head = nn.Linear(channels * math.prod(shape) + self.head_meta_dim, 2 * config.z_dim)

    def features(self, image: Tensor) -> Tensor:
        """Unmodulated trunk: stem and first dense block.

        Parameters
        ----------
        image : Tensor, shape (B, in_channels, d, h, w)

        Returns
        -------
        Tensor, shape (B, block_channels[0], *entry)
            ``entry``: the grid halved until no side exceeds 16 (12^3 on the 48^3 grid).
        """
        return run_block(self.blocks[0], self.stem(channels_last(image)), enabled=self.gradient_checkpointing)

    def posterior(
        self,
        features: Tensor,
        film_params: Sequence[tuple[Tensor, Tensor] | None],
        m: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The remainder of the encoder, FiLM-modulated or reading ``m`` at its head.

        Parameters
        ----------
        features : Tensor, shape (B, block_channels[0], *entry)
            Output of :meth:`features`.
        film_params : sequence of (delta_gamma, beta) or None
            One entry per dense block, shapes (B, block_channels[i]); ``None``
            leaves that block unmodulated.
        m : Tensor, shape (B, meta_dim), optional
            The metadata vector, appended to the flattened features when the
            head reads it (``conditioning="concat"``).

        Returns
        -------
        mu, logvar : Tensor, shape (B, z_dim)
        """
        h = _modulate(features, film_params[0])
        for block, transition, params in zip(self.blocks[1:], self.transitions[:-1], film_params[1:], strict=True):
            h = _modulate(run_block(block, transition(h), enabled=self.gradient_checkpointing), params)
        h = self.dropout(self.transitions[-1](h).flatten(1))
        if self.head_meta_dim:
            if m is None:
                raise ValueError("this encoder's head reads the metadata vector: pass m")
            h = torch.cat([h, m], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar

    def conv_path(self) -> list[nn.Conv3d]:
        """Convolutions on the longest input-to-head path, in order."""
        path = [m for m in self.stem if isinstance(m, nn.Conv3d)]
        for block, transition in zip(self.blocks, self.transitions, strict=True):
            assert isinstance(block, DenseBlock3d) and isinstance(transition, Transition3d), "built in __init__"
            path += block.conv_path() + [transition.conv]
        return path


def _modulate(x: Tensor, params: tuple[Tensor, Tensor] | None) -> Tensor:
    """FiLM with ``params = (delta_gamma, beta)``, or ``x`` unchanged when ``None``."""
    return x if params is None else film(x, *params)


__all__ = ["DenseBlock3d", "DenseEncoder", "DenseLayer3d", "Transition3d"]
