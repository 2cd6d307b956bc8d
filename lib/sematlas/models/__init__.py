"""Volumetric generative models of brain maps, each with its config, objective and generation.

Variants (the registry, :mod:`sematlas.models.registry`, maps each name to its
network and config class):

- ``baseline``: 3D ResNet-10-style beta-VAE (:class:`BaselineVAE`, :class:`ModelConfig`).
- ``cbvae``: Conditional beta-VAE, DenseNet encoder with dilation, FiLM,
  amortised imputation, adversarial year head (:class:`ConditionalBetaVAE`, :class:`CBVAEConfig`).
- ``tcvae_sbd``: beta-TCVAE with a Spatial Broadcast Decoder (:class:`TCVAE`, :class:`TCVAEConfig`).
- ``hvae``: two-level hierarchical VAE, a global top level over a local lower
  level with a gradient-stopped top-down skip (:class:`HierarchicalVAE`, :class:`HVAEConfig`).

Every network implements :class:`VolumetricVAE`: ``forward(image, meta) -> dict``
with at least ``x_hat``, ``mu``, ``logvar`` and ``z``; ``encode(image, meta) ->
(mu, logvar)``; ``decode(z, meta) -> x_hat``; ``generate(meta, n, generator)``;
and its objective, ``loss(out, batch, weights, mask=..., dataset_size=...)``, with
class-level declarations of the weights it reads. In eval mode ``z = mu``, so
reconstructions are deterministic. The maths the objectives share is in
:mod:`sematlas.models.losses`. The point-cloud model is :mod:`sematlas.models.pointcloud`.
"""

from __future__ import annotations

from sematlas.models.base import KLSchedule, VolumetricVAE
from sematlas.models.baseline import BaselineVAE, ResNetEncoder
from sematlas.models.cbvae import ConditionalBetaVAE, GradientReversal, grad_reverse, receptive_field_mm
from sematlas.models.config import CBVAEConfig, HVAEConfig, ModelConfig, TCVAEConfig
from sematlas.models.hvae import HierarchicalVAE
from sematlas.models.registry import (
    MAIN_VARIANT,
    MODELS,
    VARIANTS,
    build_model,
    check_variants,
    config_from_dict,
    model_entry,
    register,
    unregister,
)
from sematlas.models.tcvae import TCVAE, SpatialBroadcastDecoder, coordinate_grid

__all__ = [
    "MAIN_VARIANT",
    "MODELS",
    "VARIANTS",
    "BaselineVAE",
    "CBVAEConfig",
    "ConditionalBetaVAE",
    "GradientReversal",
    "HVAEConfig",
    "HierarchicalVAE",
    "KLSchedule",
    "ModelConfig",
    "ResNetEncoder",
    "SpatialBroadcastDecoder",
    "TCVAE",
    "TCVAEConfig",
    "VolumetricVAE",
    "build_model",
    "check_variants",
    "config_from_dict",
    "coordinate_grid",
    "grad_reverse",
    "model_entry",
    "receptive_field_mm",
    "register",
    "unregister",
]
