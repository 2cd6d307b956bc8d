"""Building blocks shared by the volumetric models.

Every block runs under ``torch.use_deterministic_algorithms(True)`` (Lightning's
``deterministic=True``): downsampling is a strided convolution and upsampling
a ``ConvTranspose3d``, never average pooling or trilinear interpolation (whose
CPU backward raises in deterministic mode).
Normalisation is GroupNorm, so behaviour does not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def channels_last(x: Tensor) -> Tensor:
    """Channels-last (NDHWC) layout of a 5-D tensor; same values.

    oneDNN's 3-D (transposed) convolutions run about twice as fast on CPU in
    this layout, and it is the layout cuDNN prefers under mixed precision.
    """
    return x.contiguous(memory_format=torch.channels_last_3d)


def halved(shape: Sequence[int], times: int) -> tuple[int, ...]:
    """Spatial shape after ``times`` stride-2, padding-1 convolutions (each side ``ceil(n / 2)``)."""
    for _ in range(times):
        shape = tuple(-(-side // 2) for side in shape)
    return tuple(shape)


def coarse_shape(shape: Sequence[int], factor: int) -> tuple[int, int, int]:
    """The shape a decoder that upsamples ``factor`` times per side starts from, ``shape / factor``.

    Raises
    ------
    ValueError
        A side that ``factor`` does not divide: the decoder would not land on the grid.
    """
    if len(shape) != 3 or any(side % factor for side in shape):
        raise ValueError(f"every side of the grid {tuple(shape)} must be a multiple of {factor}")
    return (shape[0] // factor, shape[1] // factor, shape[2] // factor)


def group_count(channels: int, max_groups: int = 8) -> int:
    """Number of GroupNorm groups: the largest divisor of ``channels`` <= ``max_groups``."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with (up to) 8 groups that divide ``channels`` exactly."""
    return nn.GroupNorm(group_count(channels), channels)


def run_block(block: Callable[..., Tensor], *args: Tensor, enabled: bool) -> Tensor:
    """Call ``block(*args)``, recomputing it in the backward pass when ``enabled``.

    Checkpointing only pays off when a graph is recorded, so it is skipped under
    ``torch.no_grad()``. The non-reentrant implementation restores the RNG
    state on recomputation, so dropout masks (and outputs) are unchanged.

    Parameters
    ----------
    block : callable
        Module or function to run.
    *args : Tensor
        Its inputs.
    enabled : bool
        Whether to checkpoint.

    Returns
    -------
    Tensor
        ``block(*args)``.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def film(x: Tensor, delta_gamma: Tensor, beta: Tensor) -> Tensor:
    """Feature-wise linear modulation (Perez et al. 2018), ``x * (1 + delta_gamma) + beta``.

    Parameters
    ----------
    x : Tensor, shape (B, C, D, H, W)
        Feature maps.
    delta_gamma, beta : Tensor, shape (B, C)
        Per-sample, per-channel scale offset and shift; ``gamma = 1 + delta_gamma``
        so zero parameters are the identity.

    Returns
    -------
    Tensor, shape (B, C, D, H, W)
    """
    return x * (1.0 + delta_gamma[:, :, None, None, None]) + beta[:, :, None, None, None]


class FiLMGenerator(nn.Module):
    """MLP from the metadata vector to FiLM parameters of several feature maps.

    The last layer starts at zero, so every modulation starts as the identity
    and conditioning is learned from there.

    Parameters
    ----------
    meta_dim : int
        Width of the metadata vector ``m``.
    channels : sequence of int
        Channels of each modulated feature map, in order of use.
    hidden_dim : int
        Hidden width.
    """

    def __init__(self, meta_dim: int, channels: Sequence[int], hidden_dim: int) -> None:
        super().__init__()
        self.channels = tuple(channels)
        # Layers built in order, so the random initialisation draws as before.
        first = nn.Linear(meta_dim, hidden_dim)
        last = nn.Linear(hidden_dim, 2 * sum(self.channels))
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(first, nn.SiLU(), last)

    def forward(self, m: Tensor) -> list[tuple[Tensor, Tensor]]:
        """FiLM parameters for each feature map.

        Parameters
        ----------
        m : Tensor, shape (B, meta_dim)

        Returns
        -------
        list of (delta_gamma, beta), each Tensor of shape (B, C_i)
        """
        params = self.mlp(m)
        delta_gamma, beta = params.split(sum(self.channels), dim=1)
        return list(zip(delta_gamma.split(self.channels, dim=1), beta.split(self.channels, dim=1), strict=True))


class ResidualBlock3d(nn.Module):
    """Basic 3D ResNet block (He et al. 2016) with GroupNorm and SiLU.

    ``SiLU(GN(conv3(SiLU(GN(conv3_s(x))))) + shortcut(x))``; the shortcut is a
    strided 1x1x1 conv + GroupNorm when the shape changes, else the identity.

    Parameters
    ----------
    in_channels, out_channels : int
        Input and output channels.
    stride : int
        Stride of the first conv (2 halves each side).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), group_norm(out_channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, S, S, S)`` to ``(B, C_out, S / stride, ...)``."""
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.shortcut(x))

    def conv_path(self) -> list[nn.Conv3d]:
        """Convolutions on the longest input-output path (the shortcut is shorter)."""
        return [self.conv1, self.conv2]


class UpBlock3d(nn.Module):
    """Stride-2 upsampling: ``ConvTranspose3d(s=2)`` -> GroupNorm -> [FiLM] -> SiLU -> Dropout3d.

    Kernel 4 (padding 1) gives every output voxel the same number of
    contributing taps (no checkerboard from uneven overlap, Odena et al. 2016).
    Kernel 2 maps each input voxel to its own 2x2x2 patch: no overlap, and
    eight times fewer taps, for the finest grid where cost matters most.

    Parameters
    ----------
    in_channels, out_channels : int
        Input and output channels.
    dropout : float
        Channel-dropout probability after the activation.
    kernel_size : {4, 2}
        Transposed-convolution kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, kernel_size: int = 4) -> None:
        super().__init__()
        if kernel_size not in (2, 4):
            raise ValueError(f"kernel_size must be 2 or 4, got {kernel_size!r}")
        padding = (kernel_size - 2) // 2
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size, stride=2, padding=padding, bias=False)
        self.norm = group_norm(out_channels)
        self.dropout = nn.Dropout3d(dropout)

    def forward(self, x: Tensor, delta_gamma: Tensor | None = None, beta: Tensor | None = None) -> Tensor:
        """Map ``(B, C_in, S, S, S)`` to ``(B, C_out, 2S, 2S, 2S)``, FiLM-modulated when given parameters."""
        h = self.norm(self.conv(x))
        if delta_gamma is not None and beta is not None:
            h = film(h, delta_gamma, beta)
        return self.dropout(F.silu(h))


def run_upsampling(
    blocks: nn.ModuleList,
    h: Tensor,
    film_generator: FiLMGenerator | None,
    m: Tensor | None,
    checkpointing: bool,
) -> Tensor:
    """Run upsampling blocks in order, each FiLM-modulated by ``m`` when a generator is given.

    Parameters
    ----------
    blocks : ModuleList of UpBlock3d
    h : Tensor, shape (B, C, S, S, S)
    film_generator : FiLMGenerator or None
        One (delta_gamma, beta) pair per block from ``m``; ``None`` for an unconditional decoder.
    m : Tensor, shape (B, meta_dim), optional
        The metadata vector; required with a generator.
    checkpointing : bool
        Checkpoint each block (see :func:`run_block`).

    Returns
    -------
    Tensor, shape (B, C_last, S * 2**len(blocks), ...)
    """
    if film_generator is None:
        for block in blocks:
            h = run_block(block, h, enabled=checkpointing)
        return h
    if m is None:
        raise ValueError("this decoder is conditional: pass the metadata vector m")
    for block, (delta_gamma, beta) in zip(blocks, film_generator(m), strict=True):
        h = run_block(block, h, delta_gamma, beta, enabled=checkpointing)
    return h


class ConvDecoder(nn.Module):
    """Latent vector -> map: a linear layer to a small cube, then stride-2 upsampling.

    ``z -> Linear -> (widths[0], s, s, s) -> UpBlock x (len(widths) - 1) ->
    ConvTranspose3d(k=2, s=2) -> sigmoid``. The last layer goes straight to
    the output channels and is a linear "unpatchify" (each feature vector
    becomes a 2x2x2 patch, as in the pixel decoders of MAE, He et al. 2022):
    at the finest grid a wider block or an overlapping kernel costs more than
    the rest of the model on a CPU (few output channels vectorise badly), and
    the overlapping k=4 blocks below already make the features smooth. The
    sigmoid matches the peak-normalised targets in [0, 1].

    Parameters
    ----------
    z_dim : int
        Latent dimensionality.
    out_channels : int
        Output map channels.
    start_shape : tuple of int
        Spatial shape ``(d, h, w)`` of the first feature map; the output is
        ``2**len(widths)`` times larger per side.
    widths : sequence of int
        Channels of the first cube and after each upsampling block.
    dropout : float
        Channel dropout after each upsampling block.
    gradient_checkpointing : bool
        Checkpoint each upsampling block.
    film_meta_dim : int or None
        If given, each upsampling block is FiLM-modulated by a metadata vector of
        this width (see :class:`FiLMGenerator`).
    hidden_dim : int
        Hidden width of the FiLM generator.
    output_init : float
        Initial output value (see :func:`init_output_bias`).
    aleatoric : bool
        Add a second output layer for a per-voxel log-variance (see :meth:`predict`).
    """

    def __init__(
        self,
        z_dim: int,
        out_channels: int,
        start_shape: Sequence[int],
        widths: Sequence[int],
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        film_meta_dim: int | None = None,
        hidden_dim: int = 64,
        output_init: float = 0.05,
        aleatoric: bool = False,
    ) -> None:
        super().__init__()
        self.start_shape = (widths[0], *start_shape)
        self.gradient_checkpointing = gradient_checkpointing
        self.fc = nn.Linear(z_dim, widths[0] * math.prod(start_shape))
        self.fc_norm = group_norm(widths[0])
        self.blocks = nn.ModuleList(UpBlock3d(a, b, dropout) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.ConvTranspose3d(widths[-1], out_channels, 2, stride=2)
        init_output_bias(self.out, output_init)
        self.film = FiLMGenerator(film_meta_dim, widths[1:], hidden_dim) if film_meta_dim is not None else None
        # Built last, and only when asked, so a decoder without it draws the same
        # initial weights from the same seed as before the option existed.
        self.out_logvar = nn.ConvTranspose3d(widths[-1], out_channels, 2, stride=2) if aleatoric else None

    def forward(self, z: Tensor, m: Tensor | None = None) -> Tensor:
        """Decode the mean map.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        m : Tensor, shape (B, meta_dim), optional
            Metadata vector; required when the decoder is FiLM-conditioned.

        Returns
        -------
        Tensor, shape (B, out_channels, d, h, w)
            ``start_shape * 2**len(widths)``; values in (0, 1).
        """
        # Standard (contiguous) layout out, whatever the layout inside.
        return torch.sigmoid(self.out(self._features(z, m))).contiguous()

    def predict(self, z: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode the mean map and the per-voxel log-variance of an aleatoric decoder.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        m : Tensor, shape (B, meta_dim), optional

        Returns
        -------
        mean : Tensor, shape (B, out_channels, d, h, w)
            As :meth:`forward`.
        logvar : Tensor, shape (B, out_channels, d, h, w)
            In ``(LOGVAR_MIN, LOGVAR_MAX)`` (see :func:`bounded_logvar`).

        Raises
        ------
        ValueError
            If the decoder was built without ``aleatoric``.
        """
        if self.out_logvar is None:
            raise ValueError("this decoder has no aleatoric head (build it with aleatoric=True)")
        h = self._features(z, m)
        return torch.sigmoid(self.out(h)).contiguous(), bounded_logvar(self.out_logvar(h)).contiguous()

    def _features(self, z: Tensor, m: Tensor | None) -> Tensor:
        """Features before the output layer(s), shape (B, widths[-1], G/2, G/2, G/2)."""
        h = channels_last(F.silu(self.fc_norm(self.fc(z).view(-1, *self.start_shape))))
        return run_upsampling(self.blocks, h, self.film, m, self.gradient_checkpointing)


#: Bounds of a predicted per-voxel log-variance. Maps are peak-normalised to [0, 1]:
#: a standard deviation above 1 is meaningless, and one under 0.005 (half a percent
#: of a peak) would let the Gaussian NLL run to -inf on the many voxels that are
#: exactly 0 far from every peak.
LOGVAR_MIN = 2.0 * math.log(0.005)
LOGVAR_MAX = 0.0


def bounded_logvar(raw: Tensor) -> Tensor:
    """Squash an unbounded output into ``(LOGVAR_MIN, LOGVAR_MAX)``: ``min + (max - min) * sigmoid(raw)``.

    A smooth bound rather than a clamp, so the gradient never vanishes at the edges.

    Parameters
    ----------
    raw : Tensor, any shape

    Returns
    -------
    Tensor, same shape
    """
    return LOGVAR_MIN + (LOGVAR_MAX - LOGVAR_MIN) * torch.sigmoid(raw)


def init_output_bias(layer: nn.Conv3d | nn.ConvTranspose3d, value: float) -> None:
    """Start a sigmoid output layer at ``value`` everywhere: ``bias = logit(value)``.

    Parameters
    ----------
    layer : nn.Conv3d or nn.ConvTranspose3d
        The layer before the sigmoid (with a bias).
    value : float
        Initial output in (0, 1).
    """
    if layer.bias is None:
        raise ValueError("init_output_bias needs a layer with a bias")
    nn.init.constant_(layer.bias, math.log(value / (1.0 - value)))


def reparameterise(mu: Tensor, logvar: Tensor, sample: bool) -> Tensor:
    """Latent code ``z = mu + eps * exp(0.5 * logvar)``, ``eps ~ N(0, I)`` (Kingma & Welling 2014).

    Parameters
    ----------
    mu, logvar : Tensor, shape (B, d)
        Posterior mean and log-variance.
    sample : bool
        Draw ``eps`` (training); otherwise return ``mu`` so that reconstructions
        in eval mode are deterministic.

    Returns
    -------
    Tensor, shape (B, d)
    """
    if not sample:
        return mu
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
