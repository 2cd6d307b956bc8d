"""Two-level hierarchical VAE: a global top level over a local lower level.

Data flow of :meth:`HierarchicalVAE.forward` (sides for the 48^3 grid of 4 mm)::

    image -> stem (24^3) -> 3 residual stages -> h_local (4c, 3^3) -> global stage -> h_global (8c, 2^3)
                                                    |                                  |
                                                    |                   top head: q(z_top | x)
                                                    |                                  |
                          bottom-up skip: h_local ++ z_top -> lower head: q(u | x, z_top)
                                                                                       |
    generative path:   z_top -> conditional prior (m, s) -> z_low = m(z_top) + s(z_top) * u
                       z_top ++ z_low -> decoder (linear to 3^3, upsampling blocks, output layer) -> x_hat
    protected skip:    z_top -- stop-gradient --> FiLM of every upsampling block -------------^

The objective is :meth:`HierarchicalVAE.loss`; per-level KLs come from
:func:`hierarchical_kl`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from sematlas.models.base import KLSchedule, VolumetricVAE
from sematlas.models.blocks import ResidualBlock3d, channels_last, group_norm, halved, reparameterise, run_block
from sematlas.models.conditional import conditional_decoder
from sematlas.models.config import HVAEConfig
from sematlas.models.losses import check_finite, gaussian_kl_per_dim, masked_mse_sum, no_autocast

if TYPE_CHECKING:
    from sematlas.core.params import TrainingParams

# The stem and three stages halve the side down to the local features (1/16 of the grid);
# a fourth stage reaches the global features.
_LOCAL_HALVINGS = 4


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


class HierarchicalVAE(VolumetricVAE):
    """Two-level VAE with a learned conditional prior and a gradient-stopped top-down skip.

    Latents (``z_dim = top_dim + lower_dim``), always reported top level first:

    - ``z_top`` (batch, top_dim): global, prior ``N(0, I)``, posterior
      ``q(z_top | x)`` from the deepest (``G/32``) encoder features.
    - ``u`` (batch, lower_dim): the local level in the standardised coordinates of
      its conditional prior ``p(z_low | z_top) = N(m(z_top), diag(s(z_top)^2))``:
      ``z_low = m + s * u``. Its posterior ``q(u | x, z_top)`` is a residual normal
      relative to the prior (Vahdat & Kautz, NVAE 2020), so ``KL(q(z_low|x,z_top) ||
      p(z_low|z_top)) = KL(q(u|x,z_top) || N(0, I))`` and the whole code ``[z_top, u]``
      has the prior ``N(0, I)``: prior samples, the active-unit count and the
      traversals of :class:`~sematlas.inference.atlas.AtlasModel` mean what they mean for a
      flat model.

    Generative model: ``p(z_top) p(z_low | z_top) p(x | z_top, z_low)`` (a
    two-level Ladder VAE, Sønderby et al. 2016, whose decoder reads both levels,
    as NVAE's): the decoder's main input ``[z_top, z_low]`` enters through its
    ``4^3`` bottleneck, and one skip from ``z_top`` reaches every later stage. At
    generation the decoder sees only ``z``.

    Skip paths and why they are built this way:

    - **Bottom-up skip (inference)**: the lower posterior reads the encoder's
      ``G/16`` features directly, around the global stage and the top bottleneck,
      together with the sampled ``z_top`` (a ladder connection). It is part of the
      encoder; its output ``u`` is sampled and priced by ``KL_lower``, so no
      stop-gradient is needed: nothing reaches the decoder around a latent.
    - **Top-down skip (generative, protected)**: ``z_top`` drives FiLM scale and
      shift of every upsampling block of the decoder, down to the features of the
      output layer (a generative skip as in Dieng et al. 2019), so the global level
      acts at every scale, not only through the coarse ``4^3`` code.
      Its input is ``z_top.detach()``: the skip reads the top level but passes no
      gradient back into it. Without the stop, the shortest route from the image to
      the output voxels would be encoder -> ``z_top`` -> FiLM of the last block: a
      trivial, nearly identity-like path that lets the top units learn voxel
      contrast for the output stage instead of global structure. With it, what the
      top level encodes is learnt only through the bottleneck path (the decoder's
      ``4^3`` trunk, which every latent shares) and the conditional prior of the
      lower level, and priced by its KL; the skip's own weights still learn to use it.

    The model is unconditional (``meta`` is ignored): metadata given to the decoder
    would make the task category free, and the stage gate asks the top level to
    carry it.

    Parameters
    ----------
    config : HVAEConfig
        Uses ``in_channels``, ``grid_shape``, ``z_dim``, ``top_dim``,
        ``base_channels`` (encoder widths ``c, c, 2c, 4c, 8c``, decoder as the
        cbvae's: ``8c`` at 1/16 of the grid, halving to ``c``), ``hidden_dim`` (conditional
        prior and FiLM MLPs), ``dropout``, ``gradient_checkpointing``,
        ``output_init``, ``decoder`` and, in the objective, ``top_beta``.
    """

    config: HVAEConfig
    # Both levels' weights follow beta's schedule: the same fraction of each one's maximum.
    kl_weights: ClassVar[Mapping[str, KLSchedule]] = {"beta": "beta", "top_beta": "beta"}

    def __init__(self, config: HVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.top_dim, self.lower_dim = config.top_dim, config.lower_dim
        c = config.base_channels
        self.gradient_checkpointing = config.gradient_checkpointing
        self.stem = nn.Sequential(
            nn.Conv3d(config.in_channels, c, 3, stride=2, padding=1, bias=False), group_norm(c), nn.SiLU()
        )
        widths = (c, c, 2 * c, 4 * c)
        self.local_stages = nn.ModuleList(
            ResidualBlock3d(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.global_stage = ResidualBlock3d(4 * c, 8 * c, stride=2)
        local_voxels = math.prod(halved(config.grid_shape, _LOCAL_HALVINGS))
        global_voxels = math.prod(halved(config.grid_shape, _LOCAL_HALVINGS + 1))
        self.dropout = nn.Dropout(config.dropout)
        self.top_head = nn.Linear(8 * c * global_voxels, 2 * self.top_dim)
        self.lower_head = nn.Linear(4 * c * local_voxels + self.top_dim, 2 * self.lower_dim)
        # p(z_low | z_top): starts at N(0, I) (zero last layer), so z_low = u at initialisation.
        # Layers built in order, so the random initialisation draws as before.
        prior_in = nn.Linear(self.top_dim, config.hidden_dim)
        prior_out = nn.Linear(config.hidden_dim, 2 * self.lower_dim)
        nn.init.zeros_(prior_out.weight)
        nn.init.zeros_(prior_out.bias)
        self.lower_prior = nn.Sequential(prior_in, nn.SiLU(), prior_out)
        self.decoder = conditional_decoder(config, self.top_dim)
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    # ---- inference -----------------------------------------------------------------------------

    def features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Bottom-up features.

        Parameters
        ----------
        image : Tensor, shape (B, in_channels, d, h, w)

        Returns
        -------
        local : Tensor, shape (B, 4c, d/16, h/16, w/16)
        global_ : Tensor, shape (B, 8c, ceil(d/32), ceil(h/32), ceil(w/32))
        """
        h = self.stem(channels_last(image))
        for stage in self.local_stages:
            h = run_block(stage, h, enabled=self.gradient_checkpointing)
        return h, run_block(self.global_stage, h, enabled=self.gradient_checkpointing)

    def _infer(self, image: Tensor, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior ``(mu, logvar)`` of ``[z_top, u]`` and the code ``z``, each (B, z_dim).

        The lower posterior is conditioned on ``z_top``: a sample when ``sample``, else its mean.
        """
        local, global_ = self.features(image)
        mu_top, logvar_top = self.top_head(self.dropout(global_.flatten(1))).chunk(2, dim=1)
        z_top = reparameterise(mu_top, logvar_top, sample=sample)
        lower_input = torch.cat([self.dropout(local.flatten(1)), z_top], dim=1)
        mu_u, logvar_u = self.lower_head(lower_input).chunk(2, dim=1)
        u = reparameterise(mu_u, logvar_u, sample=sample)
        return torch.cat([mu_top, mu_u], 1), torch.cat([logvar_top, logvar_u], 1), torch.cat([z_top, u], 1)

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, logvar)`` of ``[z_top, u]``, each (B, z_dim), of images (B, C, d, h, w).

        Deterministic: the lower level is conditioned on the top level's mean. ``meta`` is unused.
        """
        mu, logvar, _ = self._infer(image, sample=False)
        return mu, logvar

    # ---- generation ----------------------------------------------------------------------------

    def conditional_prior(self, z_top: Tensor) -> tuple[Tensor, Tensor]:
        """``p(z_low | z_top)``: mean and log-variance, each (B, lower_dim), of top codes (B, top_dim)."""
        mean, logvar = self.lower_prior(z_top).chunk(2, dim=1)
        return mean, logvar

    def lower_latent(self, z: Tensor) -> Tensor:
        """The lower level in its own coordinates, ``z_low = m(z_top) + s(z_top) * u``.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
            ``[z_top, u]``, as ``forward(...)["z"]`` or the ``mu`` of :meth:`encode`.

        Returns
        -------
        Tensor, shape (B, lower_dim)
        """
        z_top, u = z.split([self.top_dim, self.lower_dim], dim=1)
        mean, logvar = self.conditional_prior(z_top)
        return mean + torch.exp(0.5 * logvar) * u

    def top_down_skip(self, z_top: Tensor) -> Tensor:
        """Input of the protected skip: ``z_top`` with its gradient stopped, (B, top_dim)."""
        return z_top.detach()

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        """Maps (B, C, d, h, w) in (0, 1) from codes ``[z_top, u]`` (B, z_dim); ``meta`` is unused."""
        z_top = z[:, : self.top_dim]
        return self.decoder(torch.cat([z_top, self.lower_latent(z)], dim=1), self.top_down_skip(z_top))

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode top-down (``z_top``, then ``u`` given ``z_top``), sample (means in eval mode), decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, d, h, w)
        meta : mapping, optional
            Ignored: the model is unconditional.

        Returns
        -------
        dict
            ``x_hat`` (B, C, d, h, w); ``mu``, ``logvar``, ``z`` (B, z_dim), top
            level first; ``kl_top``, ``kl_lower`` (B,): per-study KL of each level
            (:func:`hierarchical_kl`).
        """
        mu, logvar, z = self._infer(image, sample=self.training)
        kl_top, kl_lower = hierarchical_kl(mu, logvar, self.top_dim)
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z, "kl_top": kl_top, "kl_lower": kl_lower}

    # ---- objective -----------------------------------------------------------------------------

    def loss_weights(self, training: TrainingParams) -> dict[str, float]:
        """``beta`` (``training.beta``, the lower level's) and ``top_beta`` (the config's)."""
        return {"beta": training.beta, "top_beta": self.config.top_beta}

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        """Two-level hierarchical VAE objective, per study (Sønderby et al. 2016; Vahdat & Kautz 2020).

        With ``top_beta = beta = 1`` this is the negative two-level ELBO of a decoder
        with fixed variance 1/2; separate weights let the global level be priced
        differently from the local one.

        Parameters
        ----------
        out : mapping
            :meth:`forward`'s output: ``x_hat``, and ``kl_top``, ``kl_lower`` (B,).
        batch : mapping
            ``image`` (B, C, d, h, w).
        weights : mapping
            ``top_beta`` and ``beta``: KL weights of the top and the lower level.
        mask, dataset_size
            As in :meth:`VolumetricVAE.loss` (``dataset_size`` is not used).

        Returns
        -------
        dict of scalar float32 Tensors
            ``loss``, ``recon``, ``kl_top``, ``kl_lower`` and ``kl = kl_top + kl_lower``.

        Raises
        ------
        ValueError
            If a term is not finite.
        """
        # loss     = recon + top_beta * KL_top + beta * KL_lower
        # recon    = sum over brain voxels and channels of (x_hat - x)^2 (masked_mse_sum, as the flat variants)
        # KL_top   = KL(q(z_top | x) || N(0, I))
        # KL_lower = KL(q(z_low | x, z_top) || p(z_low | z_top))   (see hierarchical_kl)
        x = batch["image"]
        with no_autocast(x.device):
            recon = masked_mse_sum(out["x_hat"], x, mask)
            kl_top, kl_lower = out["kl_top"].float().mean(), out["kl_lower"].float().mean()
            loss = recon + weights["top_beta"] * kl_top + weights["beta"] * kl_lower
            terms = {"loss": loss, "recon": recon, "kl_top": kl_top, "kl_lower": kl_lower, "kl": kl_top + kl_lower}
        check_finite(terms)
        return terms

    def weighted_kl(self, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """Both levels' weighted KL: ``loss - recon``."""
        return terms["loss"] - terms["recon"]


__all__ = ["HierarchicalVAE", "hierarchical_kl"]
