"""The one table of model variants: name -> network class.

Adding a variant is an entry here plus its module and config; nothing else in
the library branches on a variant's name.
"""

from __future__ import annotations

from sematlas.models.base import VolumetricVAE
from sematlas.models.baseline import BaselineVAE
from sematlas.models.cbvae import ConditionalBetaVAE
from sematlas.models.config import ModelConfig
from sematlas.models.hvae import HierarchicalVAE
from sematlas.models.tcvae import TCVAE

#: The conditional atlas: the model the downstream stages (ensembles, widgets, ablations) build on.
MAIN_VARIANT = "cbvae"

MODELS: dict[str, type[VolumetricVAE]] = {
    "baseline": BaselineVAE,
    "cbvae": ConditionalBetaVAE,
    "tcvae_sbd": TCVAE,
    "hvae": HierarchicalVAE,
}


def build_model(config: ModelConfig) -> VolumetricVAE:
    """Build the network of ``config.variant``.

    Parameters
    ----------
    config : ModelConfig
        Architecture (see :class:`ModelConfig`).

    Returns
    -------
    VolumetricVAE
        The registered network class of ``config.variant``, built from ``config``.
    """
    return MODELS[config.variant](config)


__all__ = ["MAIN_VARIANT", "MODELS", "build_model"]
