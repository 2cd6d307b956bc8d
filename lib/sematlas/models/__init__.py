"""Volumetric generative models of brain maps, built from one :class:`ModelConfig`.

Variants (``ModelConfig.variant``):

- ``baseline``: 3D ResNet-10-style VAE (:class:`BaselineVAE`).
- ``cbvae``: Conditional beta-VAE, DenseNet encoder with dilation, FiLM,
  amortised imputation, adversarial year head (:class:`ConditionalBetaVAE`).
- ``tcvae_sbd``: beta-TCVAE network with a Spatial Broadcast Decoder (:class:`TCVAE`).
- ``hvae``: two-level hierarchical VAE, a global top level over a local lower
  level with a gradient-stopped top-down skip (:class:`HierarchicalVAE`).

Every model maps ``forward(image, meta) -> dict`` with at least ``x_hat``,
``mu``, ``logvar`` and ``z``, and has ``encode(image, meta) -> (mu, logvar)``
and ``decode(z, meta) -> x_hat``: the interface of their base class
:class:`VolumetricVAE`. In eval mode ``z = mu``, so
reconstructions are deterministic. Objectives live in :mod:`sematlas.models.losses`.
"""

from __future__ import annotations

from sematlas.models.base import VolumetricVAE
from sematlas.models.baseline import BaselineVAE, ResNetEncoder
from sematlas.models.cbvae import ConditionalBetaVAE, GradientReversal, grad_reverse, receptive_field_mm
from sematlas.models.config import VARIANTS, ModelConfig
from sematlas.models.hvae import HierarchicalVAE
from sematlas.models.registry import MAIN_VARIANT, MODELS, build_model
from sematlas.models.tcvae import TCVAE, SpatialBroadcastDecoder, coordinate_grid

__all__ = [
    "MAIN_VARIANT",
    "MODELS",
    "VARIANTS",
    "BaselineVAE",
    "ConditionalBetaVAE",
    "GradientReversal",
    "HierarchicalVAE",
    "ModelConfig",
    "ResNetEncoder",
    "SpatialBroadcastDecoder",
    "TCVAE",
    "VolumetricVAE",
    "build_model",
    "coordinate_grid",
    "grad_reverse",
    "receptive_field_mm",
]
