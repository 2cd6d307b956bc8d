"""The interface every volumetric network implements: its networks, its objective, its generation.

:class:`VolumetricVAE` declares what :class:`~sematlas.training.module.AtlasModule`,
:class:`~sematlas.inference.atlas.AtlasModel` and the evaluation code call on a
network, so that none of them asks which variant it holds:

- the networks: :meth:`~VolumetricVAE.forward`, :meth:`~VolumetricVAE.encode`,
  :meth:`~VolumetricVAE.decode`, and :meth:`~VolumetricVAE.generate` (prior samples decoded);
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
#: cycles) and the KL controller's multiplier; ``"tc"`` ramps linearly over
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

    def generate(self, meta: Mapping[str, Tensor] | None, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Maps decoded from ``n`` prior samples ``z ~ N(0, I)`` per study of ``meta``.

        Sample ``k`` draws one ``(B, z_dim)`` block from ``generator`` (on the
        generator's device, then moved to the model's), so equal seeds give equal
        maps whatever device the model is on.

        Parameters
        ----------
        meta : mapping or None
            Metadata tensors of ``B`` studies (the data contract); ``None`` for one
            study of an unconditional model.
        n : int
            Samples per study.
        generator : torch.Generator, optional
            The random stream; the global one when ``None``.

        Returns
        -------
        Tensor, shape (n, B, C, d, h, w)
        """
        rows = next(iter(meta.values())).shape[0] if meta else 1
        device = next(self.parameters()).device
        draw_on = generator.device if generator is not None else None
        samples = [
            self.decode(torch.randn(rows, self.config.z_dim, generator=generator, device=draw_on).to(device), meta)
            for _ in range(n)
        ]
        return torch.stack(samples)

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
        """The KL's share of the reconstruction + weighted-KL objective, detached (what the KL controller watches).

        ``share = weighted_kl / (recon + weighted_kl)``, with :meth:`weighted_kl`.
        A Gaussian NLL can be negative, so an objective that reports its squared
        error beside it (``recon_se``) is measured against that.
        """
        weighted_kl = self.weighted_kl(terms, weights)
        reconstruction = terms.get("recon_se", terms["recon"])
        return (weighted_kl / (reconstruction + weighted_kl).clamp_min(1e-12)).detach()

    def logged_scalars(self) -> dict[str, float]:
        """State of the network worth logging every training step (e.g. a gradient-reversal factor)."""
        return {}


__all__ = ["ACTIVE_UNIT_THRESHOLD", "KLSchedule", "VolumetricVAE"]
