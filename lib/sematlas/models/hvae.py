"""Two-level hierarchical VAE: a global top level over a local lower level.

Data flow of :meth:`HierarchicalVAE.forward` (sides for the 64^3 grid)::

    image -> stem (32^3) -> 3 residual stages -> h_local (4c, 4^3) -> global stage -> h_global (8c, 2^3)
                                                    |                                  |
                                                    |                   top head: q(z_top | x)
                                                    |                                  |
                          bottom-up skip: h_local ++ z_top -> lower head: q(u | x, z_top)
                                                                                       |
    generative path:   z_top -> conditional prior (m, s) -> z_low = m(z_top) + s(z_top) * u
                       z_top ++ z_low -> decoder (linear to 4^3, upsampling blocks, output layer) -> x_hat
    protected skip:    z_top -- stop-gradient --> FiLM of every upsampling block -------------^

The objective is :func:`sematlas.models.losses.hvae_loss`; per-level KLs come from
:func:`sematlas.models.losses.hierarchical_kl`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sematlas.models.base import VolumetricVAE
from sematlas.models.blocks import ResidualBlock3d, channels_last, group_norm, reparameterise, run_block
from sematlas.models.cbvae import conditional_decoder
from sematlas.models.config import ModelConfig
from sematlas.models.losses import hierarchical_kl

# The stem and three stages halve the side down to the local features (G / 16);
# a fourth stage reaches the global features (G / 32).
_LOCAL_DOWNSAMPLING = 16


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
    config : ModelConfig
        ``variant="hvae"``; uses ``in_channels``, ``grid_size``, ``z_dim``,
        ``top_dim``, ``base_channels`` (encoder widths ``c, c, 2c, 4c, 8c``,
        decoder as the cbvae's: ``8c`` at ``4^3`` halving to ``c``),
        ``hidden_dim`` (conditional prior and FiLM MLPs), ``dropout``,
        ``gradient_checkpointing``, ``output_init``.
    """

    def __init__(self, config: ModelConfig) -> None:
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
        local_side = config.grid_size // _LOCAL_DOWNSAMPLING
        self.dropout = nn.Dropout(config.dropout)
        self.top_head = nn.Linear(8 * c * (local_side // 2) ** 3, 2 * self.top_dim)
        self.lower_head = nn.Linear(4 * c * local_side**3 + self.top_dim, 2 * self.lower_dim)
        # p(z_low | z_top): starts at N(0, I) (zero last layer), so z_low = u at initialisation.
        # Layers built in order, so the random initialisation draws as before.
        prior_in = nn.Linear(self.top_dim, config.hidden_dim)
        prior_out = nn.Linear(config.hidden_dim, 2 * self.lower_dim)
        nn.init.zeros_(prior_out.weight)
        nn.init.zeros_(prior_out.bias)
        self.prior = nn.Sequential(prior_in, nn.SiLU(), prior_out)
        self.decoder = conditional_decoder(config, film_meta_dim=self.top_dim)
        # Conv weights in the layout of the activations (torch's stubs lack Module.to(memory_format=)).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    # ---- inference -----------------------------------------------------------------------------

    def features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Bottom-up features.

        Parameters
        ----------
        image : Tensor, shape (B, in_channels, G, G, G)

        Returns
        -------
        local : Tensor, shape (B, 4c, G/16, G/16, G/16)
        global_ : Tensor, shape (B, 8c, G/32, G/32, G/32)
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
        """Posterior ``(mu, logvar)`` of ``[z_top, u]``, each (B, z_dim), of images (B, C, G, G, G).

        Deterministic: the lower level is conditioned on the top level's mean. ``meta`` is unused.
        """
        mu, logvar, _ = self._infer(image, sample=False)
        return mu, logvar

    # ---- generation ----------------------------------------------------------------------------

    def conditional_prior(self, z_top: Tensor) -> tuple[Tensor, Tensor]:
        """``p(z_low | z_top)``: mean and log-variance, each (B, lower_dim), of top codes (B, top_dim)."""
        mean, logvar = self.prior(z_top).chunk(2, dim=1)
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
        """Maps (B, C, G, G, G) in (0, 1) from codes ``[z_top, u]`` (B, z_dim); ``meta`` is unused."""
        z_top = z[:, : self.top_dim]
        return self.decoder(torch.cat([z_top, self.lower_latent(z)], dim=1), self.top_down_skip(z_top))

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode top-down (``z_top``, then ``u`` given ``z_top``), sample (means in eval mode), decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, G, G, G)
        meta : mapping, optional
            Ignored: the model is unconditional.

        Returns
        -------
        dict
            ``x_hat`` (B, C, G, G, G); ``mu``, ``logvar``, ``z`` (B, z_dim), top
            level first; ``kl_top``, ``kl_lower`` (B,): per-study KL of each level
            (:func:`~sematlas.models.losses.hierarchical_kl`).
        """
        mu, logvar, z = self._infer(image, sample=self.training)
        kl_top, kl_lower = hierarchical_kl(mu, logvar, self.top_dim)
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z, "kl_top": kl_top, "kl_lower": kl_lower}


__all__ = ["HierarchicalVAE"]
