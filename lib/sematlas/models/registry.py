"""The one table of model variants: name -> (network class, config class).

Adding a variant is its module (a :class:`~sematlas.models.base.VolumetricVAE`
subclass with its ``loss``) and its config (a :class:`~sematlas.models.config.ModelConfig`
subclass naming it in ``variant``), registered in one call::

    register("toy", ToyVAE, ToyConfig)

after which training (``train_variant(params, "toy", paths)``), checkpoints,
:class:`~sematlas.inference.atlas.AtlasModel` and the evaluation take it like the
built-in ones: nothing else in the library branches on a variant's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sematlas.core.params import ParameterError
from sematlas.models.base import VolumetricVAE
from sematlas.models.baseline import BaselineVAE
from sematlas.models.cbvae import ConditionalBetaVAE
from sematlas.models.config import CBVAEConfig, HVAEConfig, ModelConfig, TCVAEConfig
from sematlas.models.hvae import HierarchicalVAE
from sematlas.models.tcvae import TCVAE

if TYPE_CHECKING:
    from sematlas.core.params import Params


class ModelEntry(NamedTuple):
    """A registered variant: its network and the config it is built from."""

    network: type[VolumetricVAE]
    config: type[ModelConfig]


#: The roles the stages and the manuscript refer to, so that no module outside models/ spells a name.
#: The conditional atlas: the model the downstream stages (ensembles, widgets, ablations) build on.
MAIN_VARIANT = "cbvae"
#: The plain VAE every other model is compared with (stage 02's sprint criterion).
REFERENCE_VARIANT = "baseline"
#: The disentangling model (beta-TCVAE with a Spatial Broadcast Decoder).
DISENTANGLED_VARIANT = "tcvae_sbd"
#: The two-level model that stage 05 trains and gates.
HIERARCHICAL_VARIANT = "hvae"

#: Every registered variant, in registration order (the built-in ones first).
MODELS: dict[str, ModelEntry] = {
    "baseline": ModelEntry(BaselineVAE, ModelConfig),
    "cbvae": ModelEntry(ConditionalBetaVAE, CBVAEConfig),
    "tcvae_sbd": ModelEntry(TCVAE, TCVAEConfig),
    "hvae": ModelEntry(HierarchicalVAE, HVAEConfig),
}

#: The built-in variants, in order (what the profiles and the command line may name).
VARIANTS: tuple[str, ...] = tuple(MODELS)


def register(name: str, network: type[VolumetricVAE], config: type[ModelConfig]) -> None:
    """Add a variant to the registry.

    Parameters
    ----------
    name : str
        The variant's name (run folders, checkpoints, ``model.variants``).
    network : type
        A :class:`VolumetricVAE` subclass, built as ``network(config)``.
    config : type
        Its :class:`ModelConfig` subclass, whose ``variant`` is ``name``.

    Raises
    ------
    ValueError
        A name already registered, or a config class that names another variant.
    """
    if name in MODELS:
        raise ValueError(f"model variant {name!r} is already registered ({MODELS[name].network.__name__})")
    if config.variant != name:
        raise ValueError(
            f"{config.__name__}.variant is {config.variant!r}: set `variant: ClassVar[str] = {name!r}` to register it"
        )
    MODELS[name] = ModelEntry(network, config)


def unregister(name: str) -> None:
    """Remove a variant added by :func:`register` (the built-in ones stay).

    Raises
    ------
    ValueError
        A built-in or an unknown variant.
    """
    if name in VARIANTS or name not in MODELS:
        raise ValueError(f"only variants added by register() can be removed, got {name!r}")
    del MODELS[name]


def model_entry(variant: str) -> ModelEntry:
    """The registered network and config classes of ``variant``.

    Raises
    ------
    ValueError
        An unregistered name (listing the registered ones).
    """
    if variant not in MODELS:
        raise ValueError(f"variant must be one of {tuple(MODELS)}, got {variant!r}")
    return MODELS[variant]


def config_from_dict(values: Mapping[str, Any]) -> ModelConfig:
    """The config a plain mapping describes (e.g. a checkpoint's saved ``config``), of the class of its ``variant``.

    Raises
    ------
    ValueError
        No or an unregistered ``variant``, unknown keys, or a bad value.
    """
    if "variant" not in values:
        raise ValueError(f"a model config names its variant (one of {tuple(MODELS)}), got keys {sorted(values)}")
    return model_entry(str(values["variant"])).config.from_dict(values)


def build_model(config: ModelConfig) -> VolumetricVAE:
    """Build the network of ``config.variant``.

    Parameters
    ----------
    config : ModelConfig
        An instance of the variant's registered config class.

    Returns
    -------
    VolumetricVAE
        The registered network class of ``config.variant``, built from ``config``.

    Raises
    ------
    TypeError
        A config of another class than the variant's.
    """
    entry = model_entry(config.variant)
    if type(config) is not entry.config:
        raise TypeError(f"{config.variant!r} is built from a {entry.config.__name__}, got a {type(config).__name__}")
    return entry.network(config)


def check_variants(params: Params) -> None:
    """Check that ``model.variants`` of a profile lists registered variants only.

    Raises
    ------
    ParameterError
        An empty list or an unknown name, naming ``model.variants`` and the profile.
    """
    variants = list(params.model.variants)
    if not variants or any(v not in MODELS for v in variants):
        raise ParameterError(
            f"'model.variants' must list some of {', '.join(MODELS)}, got {variants} (profile {params.profile!r})"
        )


__all__ = [
    "DISENTANGLED_VARIANT",
    "HIERARCHICAL_VARIANT",
    "REFERENCE_VARIANT",
    "MAIN_VARIANT",
    "MODELS",
    "VARIANTS",
    "ModelEntry",
    "build_model",
    "check_variants",
    "config_from_dict",
    "model_entry",
    "register",
    "unregister",
]
