"""The typed interface shared by every volumetric network.

:class:`VolumetricVAE` declares what :class:`~sematlas.training.module.AtlasModule`,
:class:`~sematlas.inference.atlas.AtlasModel` and the evaluation code call on a network,
so that they are type-checked against one interface instead of
``nn.Module.__getattr__`` (typed ``Tensor | Module``). It adds no parameters,
buffers or sub-modules: state dicts are those of the subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from sematlas.models.config import ModelConfig


class VolumetricVAE(nn.Module):
    """Base class of the volumetric VAEs (``baseline``, ``cbvae``, ``tcvae_sbd``, ``hvae``).

    Subclasses set ``config`` in their constructor and implement :meth:`encode`,
    :meth:`decode` and :meth:`forward`. Conditional models (``cbvae``) also
    implement :meth:`meta_vector`, and aleatoric ones :meth:`decode_distribution`;
    here both raise :class:`TypeError`.

    Attributes
    ----------
    config : ModelConfig
        The architecture the network was built from.
    """

    config: ModelConfig

    def encode(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images.

        Parameters
        ----------
        image : Tensor, shape (B, C, G, G, G)
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
        Tensor, shape (B, C, G, G, G), values in (0, 1)
        """
        raise NotImplementedError

    def forward(self, image: Tensor, meta: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, sample (``z = mu`` in eval mode) and decode.

        Parameters
        ----------
        image : Tensor, shape (B, C, G, G, G)
        meta : mapping, optional
            As in :meth:`encode`.

        Returns
        -------
        dict
            At least ``x_hat`` (B, C, G, G, G) and ``mu``, ``logvar``, ``z`` (B, z_dim).
        """
        raise NotImplementedError

    def meta_vector(self, meta: Mapping[str, Tensor]) -> Tensor:
        """Metadata vector ``m`` (B, meta_dim) of a conditional model.

        Raises
        ------
        TypeError
            The model is not conditional.
        """
        raise TypeError(f"{type(self).__name__} is not conditional")

    def decode_distribution(self, z: Tensor, meta: Mapping[str, Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Mean maps and per-voxel log-variances, each (B, C, G, G, G), of an aleatoric model.

        Raises
        ------
        TypeError
            The model has no aleatoric decoder.
        """
        raise TypeError(f"{type(self).__name__} is not aleatoric")


__all__ = ["VolumetricVAE"]
