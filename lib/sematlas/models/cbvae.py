"""Conditional beta-VAE: DenseNet encoder with dilation, FiLM, imputation, year de-biasing.

Data flow of :meth:`ConditionalBetaVAE.forward`::

    image -> stem -> strided convs to 16^3 -> dense block 1 ----------------.
                                                  |                         |
                       mean over space ++ cond -> imputation head           |
                                                  |  (mu, logvar) per sparse field
      m = cond ++ (observed sparse value | imputed sample or mean)          |
                                                  |                         v
                          FiLM generator(m) -> FiLM on dense block 1, transition,
                                                  dense block 2 (dilated), FiLM,
                                                  transition -> (mu, logvar) -> z
      z -> GRL -> year head -> year_logits
      z, FiLM(m) -> decoder -> x_hat

The imputation head reads the output of the first dense block, before any
FiLM: the metadata vector ``m`` that drives the FiLM layers contains the
imputed fields, so it has to exist before the first modulated feature map
(reading modulated features would make ``m`` depend on itself). The decoder is
conditioned on the same filled ``m``, so generation from metadata alone needs
only ``cond`` and, where known, the sparse fields.

Three choices of :class:`~sematlas.models.config.ModelConfig` exist for the
ablation protocol (``params/ablations/``), each removing one component:
``conditioning="concat"`` replaces FiLM by concatenation (``m`` appended to the
encoder's flattened features and to ``z``), ``decoder="sbd"`` swaps the
transposed-convolution decoder for a FiLM-conditioned Spatial Broadcast
Decoder, and ``imputation=False`` drops the imputation head (a missing sparse
field takes its training mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sematlas.models.base import VolumetricVAE
from sematlas.models.baseline import ResNetEncoder
from sematlas.models.blocks import (
    ConvDecoder,
    FiLMGenerator,
    channels_last,
    film,
    group_norm,
    reparameterise,
    run_block,
)
from sematlas.models.config import DENSE_ENTRY_SIDE, ModelConfig
from sematlas.models.tcvae import SpatialBroadcastDecoder

# Side of the cube the conditional decoder starts from.
_DECODER_START_SIDE = 4


class _GradientReversalFunction(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-lambda`` (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_  # type: ignore[attr-defined]  # FunctionCtx declares no attributes; saved for backward
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad_output, None  # type: ignore[attr-defined]  # set in forward


def grad_reverse(x: Tensor, lambda_: float) -> Tensor:
    """Gradient reversal: returns ``x``; in backward, ``dL/dx = -lambda_ * dL/dy``.

    Parameters
    ----------
    x : Tensor, any shape
    lambda_ : float
        Reversal factor (0 blocks the adversary's gradient).

    Returns
    -------
    Tensor, same shape as ``x``
    """
    return _GradientReversalFunction.apply(x, lambda_)


class GradientReversal(nn.Module):
    """Gradient Reversal Layer with a settable factor ``lambda_``.

    The adversarial head below it learns to predict the publication year
    from ``z`` while the encoder receives the reversed gradient, i.e. learns to
    make ``z`` uninformative about the year (domain-adversarial training,
    Ganin et al. 2016). ``lambda_`` is a plain attribute so a callback can ramp it.

    Parameters
    ----------
    lambda_ : float
        Initial reversal factor.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: Tensor) -> Tensor:
        """Identity on ``x`` (any shape); reversed, scaled gradient."""
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


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
    config : ModelConfig
        Uses ``in_channels``, ``grid_size``, ``base_channels``, ``growth_rate``,
        ``dense_layers``, ``dilations``, ``z_dim``, ``dropout``, ``gradient_checkpointing``;
        with ``conditioning="concat"`` the head also reads the metadata vector
        (``meta_dim`` more inputs).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.base_channels
        self.gradient_checkpointing = config.gradient_checkpointing
        side = config.grid_size // 2
        stem: list[nn.Module] = [nn.Conv3d(config.in_channels, c, 3, stride=2, padding=1, bias=False)]
        stem += [group_norm(c), nn.SiLU()]
        channels = c
        while side > DENSE_ENTRY_SIDE:
            stem += [nn.Conv3d(channels, 2 * c, 3, stride=2, padding=1, bias=False), group_norm(2 * c), nn.SiLU()]
            channels, side = 2 * c, side // 2
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
            side //= 2
        self.block_channels = block_channels
        self.dropout = nn.Dropout(config.dropout)
        self.head_meta_dim = config.meta_dim if config.conditioning == "concat" else 0
        self.head = nn.Linear(channels * side**3 + self.head_meta_dim, 2 * config.z_dim)

    def features(self, image: Tensor) -> Tensor:
        """Unmodulated trunk: stem and first dense block.

        Parameters
        ----------
        image : Tensor, shape (B, in_channels, G, G, G)

        Returns
        -------
        Tensor, shape (B, block_channels[0], 16, 16, 16)
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
        features : Tensor, shape (B, block_channels[0], 16, 16, 16)
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
        """Maps (B, C, G, G, G) from latents (B, z_dim) and metadata vectors (B, meta_dim)."""
        return self.decoder(torch.cat([z, m], dim=1))

    def predict(self, z: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and log-variances, each (B, C, G, G, G), of an aleatoric decoder."""
        if not isinstance(self.decoder, ConvDecoder):
            raise ValueError("the Spatial Broadcast Decoder has no aleatoric head")
        return self.decoder.predict(torch.cat([z, m], dim=1))


def conditional_decoder(
    config: ModelConfig, film_meta_dim: int | None = None
) -> ConvDecoder | SpatialBroadcastDecoder | ConcatConditioned:
    """The decoder of a conditional model, called as ``decoder(z, m)``.

    ``config.decoder="conv"``: from a 4^3 cube, widths ``8c, 4c, 2c, c[, c]`` up
    to ``G``; ``"sbd"``: a Spatial Broadcast Decoder of width ``sbd_channels``.
    ``config.conditioning="film"`` modulates every upsampling block by ``m``;
    ``"concat"`` feeds ``z ++ m`` to an unconditioned decoder instead.

    Parameters
    ----------
    config : ModelConfig
    film_meta_dim : int, optional
        Width of ``m`` (default: the metadata vector, ``config.meta_dim``; the
        H-VAE conditions on its top level instead).
    """
    meta_dim = config.meta_dim if film_meta_dim is None else film_meta_dim
    concat = config.conditioning == "concat"
    z_dim = config.z_dim + meta_dim if concat else config.z_dim
    film_dim = None if concat else meta_dim
    decoder: ConvDecoder | SpatialBroadcastDecoder
    if config.decoder == "sbd":
        decoder = SpatialBroadcastDecoder.from_config(config, z_dim=z_dim, film_meta_dim=film_dim)
    else:
        c = config.base_channels
        n_blocks = (config.grid_size // _DECODER_START_SIDE).bit_length() - 2
        decoder = ConvDecoder(
            z_dim=z_dim,
            out_channels=config.in_channels,
            start_side=_DECODER_START_SIDE,
            widths=[max(8 * c >> i, c) for i in range(n_blocks + 1)],
            dropout=config.dropout,
            gradient_checkpointing=config.gradient_checkpointing,
            film_meta_dim=film_dim,
            hidden_dim=config.hidden_dim,
            output_init=config.output_init,
            aleatoric=config.aleatoric,
        )
    return ConcatConditioned(decoder) if concat else decoder


class ConditionalBetaVAE(VolumetricVAE):
    """Conditional beta-VAE with FiLM, amortised imputation and adversarial year de-biasing.

    Parameters
    ----------
    config : ModelConfig
        Architecture; ``variant`` should be ``"cbvae"``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = DenseEncoder(config)
        self.encoder_film = (
            FiLMGenerator(config.meta_dim, self.encoder.block_channels, config.hidden_dim)
            if config.conditioning == "film"
            else None
        )
        self.imputer = (
            nn.Sequential(
                nn.Linear(self.encoder.block_channels[0] + config.cond_dim, config.hidden_dim),
                nn.SiLU(),
                nn.Linear(config.hidden_dim, 2 * config.n_sparse),
            )
            if config.imputation
            else None
        )
        self.grl = GradientReversal(config.grl_lambda)
        self.year_head = nn.Sequential(
            nn.Linear(config.z_dim, config.hidden_dim), nn.SiLU(), nn.Linear(config.hidden_dim, config.n_year_bins)
        )
        self.decoder = conditional_decoder(config)
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def _encode(self, image: Tensor, meta: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Posterior, imputation and filled metadata vector (see :meth:`forward`)."""
        if meta is None:
            raise TypeError(f"{type(self).__name__} is conditional: pass meta (cond, sparse, sparse_mask)")
        cond = meta["cond"].to(image.dtype)
        features = self.encoder.features(image)
        out: dict[str, Tensor] = {}
        if self.imputer is None:
            # Standardised sparse fields: 0 is the training mean, the fill when nothing imputes.
            fill = torch.zeros_like(meta["sparse"], dtype=image.dtype)
        else:
            # Imputation reads pooled trunk features and the complete metadata; a plain
            # mean over space (not AdaptiveAvgPool3d) keeps the backward deterministic-safe.
            pooled = torch.cat([features.mean(dim=(2, 3, 4)), cond], 1)
            out["imputed_mu"], out["imputed_logvar"] = self.imputer(pooled).chunk(2, 1)
            # A reparameterised sample during training lets the reconstruction train the
            # imputation head and exposes the decoder to imputation uncertainty.
            fill = reparameterise(out["imputed_mu"], out["imputed_logvar"], sample=self.training)
        observed = meta["sparse_mask"].bool()
        m = torch.cat([cond, torch.where(observed, meta["sparse"].to(image.dtype), fill)], dim=1)
        film_params = self.encoder_film(m) if self.encoder_film is not None else [None] * len(self.encoder.blocks)
        out["mu"], out["logvar"] = self.encoder.posterior(features, film_params, m)
        out["m"] = m
        return out

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, logvar)``, each (B, z_dim), of images (B, C, G, G, G) given their metadata."""
        out = self._encode(image, meta)
        return out["mu"], out["logvar"]

    def meta_vector(self, meta: Mapping[str, Tensor]) -> Tensor:
        """Metadata vector without an image: ``cond ++ sparse``, 0 where a sparse field is missing.

        Sparse fields are standardised, so 0 is the training mean: the natural
        fill when no image is there to impute from.

        Parameters
        ----------
        meta : mapping
            ``cond`` (B, cond_dim), ``sparse`` (B, n_sparse), ``sparse_mask`` (B, n_sparse).

        Returns
        -------
        Tensor, shape (B, cond_dim + n_sparse)
        """
        sparse = torch.where(meta["sparse_mask"].bool(), meta["sparse"].float(), 0.0)
        return torch.cat([meta["cond"].float(), sparse], dim=1)

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        """Maps from latents and metadata.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        meta : Tensor of shape (B, cond_dim + n_sparse), or mapping
            The metadata vector ``m`` (e.g. ``forward(...)["m"]``), or a meta
            dict, turned into ``m`` by :meth:`meta_vector`.

        Returns
        -------
        Tensor, shape (B, C, G, G, G), values in (0, 1)
        """
        if meta is None:
            raise TypeError(f"{type(self).__name__} is conditional: pass meta (a mapping or the vector m)")
        m = meta if isinstance(meta, Tensor) else self.meta_vector(meta).to(z.device)
        return self.decoder(z, m.to(z.dtype))

    def decode_distribution(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and per-voxel log-variances of an aleatoric model (``config.aleatoric``).

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        meta : Tensor of shape (B, cond_dim + n_sparse), or mapping
            As in :meth:`decode`.

        Returns
        -------
        mean, logvar : Tensor, shape (B, C, G, G, G)
            ``mean`` equals :meth:`decode`; ``logvar`` is bounded (see
            :func:`~sematlas.models.blocks.bounded_logvar`).
        """
        m = meta if isinstance(meta, Tensor) else self.meta_vector(meta).to(z.device)
        return self._predict(z, m.to(z.dtype))

    def _predict(self, z: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and log-variances from the decoder's aleatoric head."""
        if not isinstance(self.decoder, ConvDecoder | ConcatConditioned):
            raise ValueError("this model's decoder has no aleatoric head (build it with aleatoric=True)")
        return self.decoder.predict(z, m)

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, impute, sample (``z = mu`` in eval mode), predict the year adversarially, decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, G, G, G)
        meta : mapping
            ``cond`` (B, cond_dim), ``sparse`` (B, n_sparse), ``sparse_mask``
            (B, n_sparse) bool.

        Returns
        -------
        dict
            ``x_hat`` (B, C, G, G, G); ``mu``, ``logvar``, ``z`` (B, z_dim);
            ``imputed_mu``, ``imputed_logvar`` (B, n_sparse), without them when
            ``config.imputation`` is off; ``m`` (B,
            cond_dim + n_sparse): the metadata vector with missing sparse fields
            filled by an imputed sample (training) or mean (eval);
            ``year_logits`` (B, n_year_bins), computed through the GRL;
            ``x_logvar`` (B, C, G, G, G) when ``config.aleatoric``.
        """
        out = self._encode(image, meta)
        z = reparameterise(out["mu"], out["logvar"], sample=self.training)
        out["z"] = z
        out["year_logits"] = self.year_head(self.grl(z))
        if self.config.aleatoric:
            out["x_hat"], out["x_logvar"] = self._predict(z, out["m"])
        else:
            out["x_hat"] = self.decoder(z, out["m"])
        return out


@runtime_checkable
class _HasConvPath(Protocol):
    """An encoder whose convolutional path can be listed (:class:`ResNetEncoder`, :class:`DenseEncoder`)."""

    def conv_path(self) -> list[nn.Conv3d]: ...


def receptive_field_mm(model_or_config: nn.Module | ModelConfig, voxel_size: float) -> float:
    """Theoretical receptive field of an encoder's convolutional path, in millimetres.

    Standard recurrence over the convolutions in order (Araujo et al. 2019):
    ``r += (k - 1) * d * jump; jump *= s`` from ``r = jump = 1``. The linear
    head after the convolutions sees the whole grid; this is the field of a
    single feature at the last convolutional layer.

    Parameters
    ----------
    model_or_config : nn.Module or ModelConfig
        A model (or encoder) with ``conv_path()``, or a config whose encoder is built.
    voxel_size : float
        Voxel size in millimetres (4 for the 64 grid, 2 for the 128 grid).

    Returns
    -------
    float
        Receptive field side in millimetres.
    """
    if isinstance(model_or_config, ModelConfig):
        encoder: _HasConvPath = (DenseEncoder if model_or_config.variant == "cbvae" else ResNetEncoder)(model_or_config)
    else:
        candidate = getattr(model_or_config, "encoder", model_or_config)
        if not isinstance(candidate, _HasConvPath):
            raise TypeError(f"{type(model_or_config).__name__} has no conv_path() (nor an encoder with one)")
        encoder = candidate
    field, jump = 1, 1
    for conv in encoder.conv_path():
        field += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
        jump *= conv.stride[0]
    return float(field * voxel_size)
