"""The interface every volumetric network implements: its networks, its objective, its generation.

:class:`VolumetricVAE` declares what :class:`~sematlas.training.module.AtlasModule`,
:class:`~sematlas.inference.atlas.AtlasModel` and the evaluation code call on a
network, so that none of them asks which variant it holds:

- the networks: :meth:`~VolumetricVAE.forward`, :meth:`~VolumetricVAE.encode`,
  :meth:`~VolumetricVAE.decode`, the prior :meth:`~VolumetricVAE.prior` (``N(0, I)`` unless the
  network learns ``p(z | m)``) and what is drawn from it: :meth:`~VolumetricVAE.generate`,
  :meth:`~VolumetricVAE.generate_mean`, :meth:`~VolumetricVAE.counterfactual`;
- the objective: :meth:`~VolumetricVAE.loss` with one signature for every variant
  (per-study terms), the weights it reads (:attr:`~VolumetricVAE.kl_weights`,
  :meth:`~VolumetricVAE.loss_weights`), whether it needs the training-set size,
  its KL share and the scalars it logs;
- what a caller may rely on: :attr:`~VolumetricVAE.is_conditional`,
  :attr:`~VolumetricVAE.is_aleatoric`.

It adds no parameters, buffers or sub-modules: state dicts are those of the subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from sematlas.models.config import ModelConfig

if TYPE_CHECKING:
    from sematlas.core.params import TrainingParams

#: How training schedules a KL weight: ``"beta"`` follows ``training.beta_schedule`` (warm-up or
#: cycles); ``"tc"`` ramps linearly over
#: ``training.beta_tc_annealing_epochs``. Validation always uses the end-of-schedule value.
KLSchedule = Literal["beta", "tc"]


#: A latent unit is active when its posterior mean varies across the data by more than this
#: (Burda et al. 2016): training logs and held-out evaluation count active units the same way.
ACTIVE_UNIT_THRESHOLD = 0.01


class VolumetricVAE(nn.Module):
    """Base class of the volumetric VAEs.

    Subclasses set ``config`` in their constructor and implement :meth:`encode`,
    :meth:`decode`, :meth:`forward` and :meth:`loss`; the class attributes below
    declare what training needs to know about the objective. Conditional models
    also implement :meth:`meta_vector`, and aleatoric ones :meth:`decode_distribution`;
    here both raise :class:`TypeError`.

    Attributes
    ----------
    config : ModelConfig
        The architecture the network was built from.
    is_conditional : bool
        Whether :meth:`decode` (and so :meth:`generate`) reads the metadata.
    kl_weights : mapping of str to {"beta", "tc"}
        The KL weights :meth:`loss` reads from ``weights``, in the order they are
        logged, each with the schedule training gives it (see :data:`KLSchedule`).
    needs_dataset_size : bool
        Whether :meth:`loss` needs ``dataset_size``, the number of training studies.
    """

    config: ModelConfig
    is_conditional: ClassVar[bool] = False
    kl_weights: ClassVar[Mapping[str, KLSchedule]] = {"beta": "beta"}
    needs_dataset_size: ClassVar[bool] = False

    # ---- networks ------------------------------------------------------------------------------

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images.

        Parameters
        ----------
        image : Tensor, shape (B, C, d, h, w)
        meta : mapping, optional
            Metadata tensors of the data contract (``cond``, ``sparse``,
            ``sparse_mask``, each (B, ...)); required by conditional models,
            ignored by the others.

        Returns
        -------
        mu, logvar : Tensor, shape (B, z_dim)
        """
        raise NotImplementedError

    def decode(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None = None) -> Tensor:
        """Maps from latents.

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
        meta : mapping or Tensor of shape (B, meta_dim), optional
            Metadata (a mapping, or the metadata vector ``m``); required by
            conditional models, ignored by the others.

        Returns
        -------
        Tensor, shape (B, C, d, h, w), values in (0, 1)
        """
        raise NotImplementedError

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, sample (``z = mu`` in eval mode) and decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, d, h, w)
        meta : mapping, optional
            As in :meth:`encode`.

        Returns
        -------
        dict
            At least ``x_hat`` (B, C, d, h, w) and ``mu``, ``logvar``, ``z`` (B, z_dim).
        """
        raise NotImplementedError

    def prior(self, meta: Mapping[str, Tensor] | Tensor | None, rows: int = 1) -> tuple[Tensor, Tensor]:
        """Prior ``p(z | m) = N(mu, diag exp(logvar))`` of studies: here ``N(0, I)`` whatever ``meta`` says.

        A model with a learned conditional prior (the ``cbvae``) overrides it; every
        sampler (:meth:`generate`, the ensembles, the forecasts, the widgets) draws from it.

        Parameters
        ----------
        meta : mapping, Tensor of shape (B, meta_dim), or None
            Metadata of ``B`` studies (the data contract, or the metadata vector ``m``);
            ``None`` for ``rows`` studies of an unconditional model.
        rows : int
            Studies when ``meta`` is ``None``.

        Returns
        -------
        mu, logvar : Tensor, shape (B, z_dim), on the model's device
        """
        if meta is not None:
            rows = meta.shape[0] if isinstance(meta, Tensor) else next(iter(meta.values())).shape[0]
        device = next(self.parameters()).device
        zeros = torch.zeros(rows, self.config.z_dim, device=device)
        return zeros, zeros.clone()

    def prior_sample(
        self, meta: Mapping[str, Tensor] | Tensor | None, generator: torch.Generator | None = None, rows: int = 1
    ) -> Tensor:
        """One draw ``z = mu + sigma * eps`` per study from :meth:`prior`, ``eps ~ N(0, I)``.

        ``eps`` is drawn from ``generator`` on the generator's device, then moved to the
        model's, so equal seeds give equal draws whatever device the model is on.

        Returns
        -------
        Tensor, shape (B, z_dim)
        """
        mu, logvar = self.prior(meta, rows)
        draw_on = generator.device if generator is not None else None
        eps = torch.randn(mu.shape, generator=generator, device=draw_on).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def generate(self, meta: Mapping[str, Tensor] | None, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Maps decoded from ``n`` samples of :meth:`prior` per study of ``meta``.

        Parameters
        ----------
        meta : mapping or None
            Metadata tensors of ``B`` studies (the data contract); ``None`` for one
            study of an unconditional model.
        n : int
            Samples per study.
        generator : torch.Generator, optional
            The random stream; the global one when ``None``. Sample ``k`` draws one
            ``(B, z_dim)`` block from it (:meth:`prior_sample`).

        Returns
        -------
        Tensor, shape (n, B, C, d, h, w)
        """
        return torch.stack([self.decode(self.prior_sample(meta, generator), meta) for _ in range(n)])

    def generate_mean(self, meta: Mapping[str, Tensor] | None, rows: int = 1) -> Tensor:
        """Maps decoded from the prior mean, ``decode(mu(m), m)``: the point prediction from metadata alone.

        One decode instead of an average over samples: the map of the most probable
        code rather than the expected map. Stage 02 scores both on held-out studies
        (``conditional_generation.estimators`` of its results).

        Returns
        -------
        Tensor, shape (B, C, d, h, w)
        """
        mu, _ = self.prior(meta, rows)
        return self.decode(mu, meta)

    def residual(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None) -> Tensor:
        """Standardised residual ``eps = (z - mu(m)) / sigma(m)`` of codes under :meth:`prior`, (B, z_dim).

        What a code holds beyond its metadata: a counterfactual keeps it and changes ``m``
        (:meth:`counterfactual`).
        """
        mu, logvar = self.prior(meta, z.shape[0])
        return (z - mu) * torch.exp(-0.5 * logvar)

    def counterfactual(
        self, z: Tensor, meta: Mapping[str, Tensor] | Tensor | None, new_meta: Mapping[str, Tensor] | Tensor | None
    ) -> Tensor:
        """Codes of the same studies under other metadata: abduction, then action (Pearl 2009).

        ``z' = mu(m') + sigma(m') * eps`` with ``eps = (z - mu(m)) / sigma(m)`` (:meth:`residual`).

        Parameters
        ----------
        z : Tensor, shape (B, z_dim)
            Codes (e.g. posterior means) of studies with metadata ``meta``.
        meta, new_meta : mapping or Tensor of shape (B, meta_dim)
            Their metadata, and the metadata to move them to.

        Returns
        -------
        Tensor, shape (B, z_dim)
        """
        mu, logvar = self.prior(new_meta, z.shape[0])
        return mu + torch.exp(0.5 * logvar) * self.residual(z, meta)

    def meta_vector(self, meta: Mapping[str, Tensor]) -> Tensor:
        """Metadata vector ``m`` (B, meta_dim) of a conditional model.

        Raises
        ------
        TypeError
            The model is not conditional.
        """
        raise TypeError(f"{type(self).__name__} is not conditional")

    @property
    def is_aleatoric(self) -> bool:
        """Whether the decoder predicts a per-voxel variance (:meth:`decode_distribution`)."""
        return False

    def decode_distribution(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and per-voxel log-variances, each (B, C, d, h, w), of an aleatoric model.

        Raises
        ------
        TypeError
            The model has no aleatoric decoder.
        """
        raise TypeError(f"{type(self).__name__} is not aleatoric")

    # ---- objective -----------------------------------------------------------------------------

    def loss(
        self,
        out: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        weights: Mapping[str, float],
        *,
        mask: Tensor | None = None,
        dataset_size: int | None = None,
    ) -> dict[str, Tensor]:
        """The objective's terms, per study (summed over voxels and latent units, mean over the batch).

        Parameters
        ----------
        out : mapping
            :meth:`forward`'s output on ``batch``.
        batch : mapping
            The data contract's batch: ``image`` (B, C, d, h, w) and ``meta``.
        weights : mapping
            Every weight the objective reads (:meth:`loss_weights`, with the
            :attr:`kl_weights` at their scheduled values).
        mask : Tensor of bool, shape (d, h, w), optional
            Voxels that count in the reconstruction (the brain); all when ``None``.
        dataset_size : int, optional
            Training studies ``N``; required when :attr:`needs_dataset_size`.

        Returns
        -------
        dict of scalar float32 Tensors
            ``loss`` (what is minimised), ``recon`` and every other term, by name.

        Raises
        ------
        ValueError
            A term that is not finite (naming it).
        """
        raise NotImplementedError

    def loss_weights(self, training: TrainingParams) -> dict[str, float]:
        """The weights :meth:`loss` reads, at the end of their schedules.

        Parameters
        ----------
        training : TrainingParams
            The profile's ``training`` section.

        Returns
        -------
        dict
            Here ``{"beta": training.beta}``.
        """
        return {"beta": training.beta}

    def weighted_kl(self, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """The weighted KL part of the objective (here ``beta * kl``): the numerator of :meth:`kl_share`."""
        return weights["beta"] * terms["kl"]

    def kl_share(self, terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """The KL's share of the reconstruction + weighted-KL objective, detached (a logged diagnostic).

        ``share = weighted_kl / (recon + weighted_kl)``, with :meth:`weighted_kl`.
        A Gaussian NLL can be negative, so an objective that reports its squared
        error beside it (``recon_se``) is measured against that.
        """
        weighted_kl = self.weighted_kl(terms, weights)
        reconstruction = terms.get("recon_se", terms["recon"])
        return (weighted_kl / (reconstruction + weighted_kl).clamp_min(1e-12)).detach()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each with an ``lr_scale`` (its multiple of the learning rate).

        Here one group of every parameter at scale 1; a network whose parts learn at other
        rates (the ``cbvae``'s prior network) overrides it.
        """
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    def logged_scalars(self) -> dict[str, float]:
        """State of the network worth logging every training step (e.g. a gradient-reversal factor)."""
        return {}


__all__ = ["ACTIVE_UNIT_THRESHOLD", "KLSchedule", "VolumetricVAE"]
