"""beta-TCVAE with a Spatial Broadcast Decoder.

The objective (Chen et al., NeurIPS 2018) is :meth:`TCVAE.loss`, built on the
minibatch-weighted-sampling estimator :func:`beta_tcvae_sums`. The encoder is the
baseline's ResNet-10-style encoder. The decoder is a Spatial Broadcast Decoder (Watters et al. 2019): the
latent vector is tiled over a coarse 8^3 grid and concatenated with fixed
coordinate channels, so the decoder need not learn where things are from
the latent alone, which favours disentangled, position-aware latents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sematlas.models.base import KLSchedule
from sematlas.models.baseline import ResNetEncoder, UnconditionalVAE
from sematlas.models.blocks import (
    FiLMGenerator,
    ResidualBlock3d,
    UpBlock3d,
    channels_last,
    coarse_shape,
    init_output_bias,
    run_block,
    run_upsampling,
)
from sematlas.models.config import SBDConfig, TCVAEConfig
from sematlas.models.losses import (
    check_finite,
    gaussian_kl_per_dim,
    gaussian_log_density,
    no_autocast,
    squared_error_per_sample,
)

if TYPE_CHECKING:
    from sematlas.core.params import TrainingParams

# The latent is broadcast onto 1/8 of the grid (6^3 at 4 mm), then doubled three times.
SBD_UPSAMPLING = 8


def coordinate_grid(shape: Sequence[int]) -> Tensor:
    """Coordinate channels on a box, in [-1, 1] along each axis.

    Parameters
    ----------
    shape : sequence of int
        Voxels per axis ``(d, h, w)``.

    Returns
    -------
    Tensor, shape (1, 3, d, h, w)
        Channel 0 varies along depth only, 1 along height only, 2 along width
        only (``meshgrid(..., indexing="ij")`` keeps that order).
    """
    axes = [torch.linspace(-1.0, 1.0, side) for side in shape]
    depth, height, width = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([depth, height, width])[None]


class SpatialBroadcastDecoder(nn.Module):
    """Spatial Broadcast Decoder for volumes (Watters et al. 2019).

    ``z (B, d) -> tile to (B, d, *s) ++ coords (B, 3, *s) -> 1x1x1 conv
    to 8w channels -> n_blocks stride-1 residual 3x3x3 blocks -> three stride-2
    ConvTranspose3d stages halving the channels -> 1x1x1 conv -> sigmoid``, with
    ``s`` the grid divided by 8 (6^3 on the 48^3 grid of 4 mm).

    The residual blocks on the broadcast grid play the role of the stride-1
    convolutions that follow the broadcast in Watters et al.: the coordinates
    enter the 1x1x1 conv linearly, and it takes a few nonlinear layers to turn
    them and ``z`` into localised features. On the coarse grid they cost little.
    The 1x1x1 conv is followed by SiLU only, not by a normalisation: ``z`` is
    constant over the grid, and a norm over space would subtract exactly that.

    Parameters
    ----------
    z_dim : int
        Latent dimensionality ``d``.
    out_channels : int
        Output map channels.
    grid_shape : sequence of int
        Output shape ``(d, h, w)``, every side a multiple of 8.
    width : int
        ``w``: channels of the last stage (the first stage has ``8w``).
    n_blocks : int
        Residual blocks on the broadcast grid.
    dropout : float
        Channel dropout after each upsampling stage.
    gradient_checkpointing : bool
        Checkpoint each residual block and upsampling stage.
    output_init : float
        Initial output value (see :func:`~sematlas.models.blocks.init_output_bias`).
    film_meta_dim : int or None
        If given, each upsampling stage is FiLM-modulated by a metadata vector
        of this width (the conditional decoder of ``cbvae`` with ``decoder="sbd"``).
    hidden_dim : int
        Hidden width of the FiLM generator.
    """

    coords: Tensor  # buffer (1, 3, *grid_shape / 8), see coordinate_grid

    def __init__(
        self,
        z_dim: int,
        out_channels: int,
        grid_shape: Sequence[int],
        width: int,
        n_blocks: int = 2,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        output_init: float = 0.05,
        film_meta_dim: int | None = None,
        hidden_dim: int = 64,
    ) -> None:
        super().__init__()
        n_stages = SBD_UPSAMPLING.bit_length() - 1
        # Halve from 8w each stage.
        widths = [max(8 * width >> i, 1) for i in range(n_stages + 1)]
        self.gradient_checkpointing = gradient_checkpointing
        # Derived constant, rebuilt at construction: not saved in state_dict.
        self.register_buffer("coords", coordinate_grid(coarse_shape(grid_shape, SBD_UPSAMPLING)), persistent=False)
        self.inp = nn.Conv3d(z_dim + 3, widths[0], 1)
        self.mixers = nn.ModuleList(ResidualBlock3d(widths[0], widths[0]) for _ in range(n_blocks))
        # The stage producing the full grid uses the non-overlapping kernel (see UpBlock3d): on a CPU
        # it is the most expensive layer of the whole model, and the coarser stages already overlap.
        kernels = [4] * (n_stages - 1) + [2]
        self.blocks = nn.ModuleList(
            UpBlock3d(a, b, dropout, k) for a, b, k in zip(widths[:-1], widths[1:], kernels, strict=True)
        )
        self.out = nn.Conv3d(widths[-1], out_channels, 1)
        init_output_bias(self.out, output_init)
        # Built last, and only when asked, so the unconditional decoder draws the same initial weights.
        self.film = FiLMGenerator(film_meta_dim, widths[1:], hidden_dim) if film_meta_dim is not None else None

    @classmethod
    def from_config(
        cls, config: SBDConfig, z_dim: int | None = None, film_meta_dim: int | None = None
    ) -> SpatialBroadcastDecoder:
        """The decoder a model config describes (width ``sbd_channels``, else ``base_channels``).

        ``z_dim`` defaults to ``config.z_dim`` (a concatenation-conditioned decoder reads more);
        ``film_meta_dim`` makes it FiLM-conditioned.
        """
        return cls(
            z_dim=config.z_dim if z_dim is None else z_dim,
            out_channels=config.in_channels,
            grid_shape=config.grid_shape,
            width=config.sbd_channels or config.base_channels,
            n_blocks=config.sbd_blocks,
            dropout=config.dropout,
            gradient_checkpointing=config.gradient_checkpointing,
            output_init=config.output_init,
            film_meta_dim=film_meta_dim,
            hidden_dim=config.hidden_dim,
        )

    def broadcast(self, z: Tensor) -> Tensor:
        """Tile ``z`` (B, d) over the coarse grid and append coordinates: (B, d + 3, *grid_shape / 8)."""
        batch, dim = z.shape
        tiled = z[:, :, None, None, None].expand(batch, dim, *self.coords.shape[2:])
        coords = self.coords.to(z.dtype).expand(batch, -1, -1, -1, -1)
        return torch.cat([tiled, coords], dim=1)

    def forward(self, z: Tensor, m: Tensor | None = None) -> Tensor:
        """Decode latents (B, d) into maps (B, out_channels, *grid_shape) in (0, 1).

        ``m`` (B, film_meta_dim), the metadata vector, is required when the decoder is FiLM-conditioned.
        """
        h = channels_last(F.silu(self.inp(self.broadcast(z))))
        for mixer in self.mixers:
            h = run_block(mixer, h, enabled=self.gradient_checkpointing)
        h = run_upsampling(self.blocks, h, self.film, m, self.gradient_checkpointing)
        # Standard (contiguous) layout out, whatever the layout inside.
        return torch.sigmoid(self.out(h)).contiguous()


def beta_tcvae_sums(
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
    """beta-TCVAE terms with the minibatch-weighted sampling estimator (Chen et al., NeurIPS 2018), batch SUMS.

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

    Every term is a SUM over the batch (``recon`` too), as the estimator is
    written; :meth:`TCVAE.loss` divides by ``M``. No term is clamped. The maths
    runs in float32 with autocast disabled.

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
        Exactly ``loss``, ``recon``, ``mi``, ``tc``, ``dwkl``.

    Raises
    ------
    ValueError
        If ``dataset_size < 1``, or naming the term that is not finite.
    """
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be >= 1, got {dataset_size!r}")
    with no_autocast(x.device):
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
        terms = {"loss": loss, "recon": recon, "mi": mi, "tc": tc, "dwkl": dwkl}
    check_finite(terms)
    return terms


class TCVAE(UnconditionalVAE):
    """beta-TCVAE network: ResNet-10-style encoder + Spatial Broadcast Decoder.

    Parameters
    ----------
    config : TCVAEConfig
        Architecture and the objective's ``alpha`` and ``gamma``. The decoder
        width is ``sbd_channels`` (``base_channels`` when ``None``).
    """

    config: TCVAEConfig
    # The total correlation's weight ramps up on its own schedule; the estimator of q(z) needs N.
    kl_weights: ClassVar[Mapping[str, KLSchedule]] = {"beta_tc": "tc"}
    needs_dataset_size: ClassVar[bool] = True

    def __init__(self, config: TCVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResNetEncoder(config)
        self.decoder = SpatialBroadcastDecoder.from_config(config)
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def loss_weights(self, training: TrainingParams) -> dict[str, float]:
        """``beta_tc`` (``training.beta_tc_target``) and the config's ``alpha`` and ``gamma``."""
        return {"beta_tc": training.beta_tc_target, "alpha": self.config.alpha, "gamma": self.config.gamma}

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        """beta-TCVAE objective, per study: :func:`beta_tcvae_sums` divided by the batch size.

        Returns
        -------
        dict of scalar float32 Tensors
            ``loss``, ``recon``, ``mi``, ``tc``, ``dwkl`` (per study) and ``kl``, the
            analytic ``KL(q(z|x) || N(0, I))`` (detached, comparable with the other
            variants'); arguments as in :meth:`VolumetricVAE.loss`.

        Raises
        ------
        ValueError
            Without ``dataset_size``, or a term that is not finite.
        """
        # loss = (1 / M) [recon + alpha * MI + beta_tc * TC + gamma * DWKL]   (sums of beta_tcvae_sums)
        if dataset_size is None:
            raise ValueError(f"{self.config.variant} needs dataset_size (the number of training studies)")
        sums = beta_tcvae_sums(
            out["x_hat"],
            batch["image"],
            out["z"],
            out["mu"],
            out["logvar"],
            dataset_size=dataset_size,
            beta_tc=weights["beta_tc"],
            alpha=weights["alpha"],
            gamma=weights["gamma"],
            mask=mask,
        )
        size = batch["image"].shape[0]
        terms = {name: value / size for name, value in sums.items()}
        terms["kl"] = gaussian_kl_per_dim(out["mu"], out["logvar"]).sum(dim=1).mean().detach()
        return terms

    def weighted_kl(self, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """Every term but the reconstruction is a part of the KL: ``loss - recon``."""
        return terms["loss"] - terms["recon"]


__all__ = ["SBD_UPSAMPLING", "TCVAE", "SpatialBroadcastDecoder", "beta_tcvae_sums", "coordinate_grid"]
