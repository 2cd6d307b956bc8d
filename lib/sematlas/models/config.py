"""Typed configuration of the volumetric models: one shared part, one class per variant.

:class:`ModelConfig` holds what every network has (grid, channels, latent size,
widths, the metadata sizes of the data contract); each variant's config adds
its own choices and validates them: :class:`CBVAEConfig` the conditional
atlas's DenseNet, conditioning, imputation and adversary, :class:`HVAEConfig`
the hierarchy's level sizes, :class:`TCVAEConfig` the Spatial Broadcast Decoder
and the total-correlation decomposition's weights. The baseline needs nothing
more than :class:`ModelConfig`.

Parameters arrive from YAML profiles through papermill, which neither
validates names nor types, so :meth:`ModelConfig.from_dict` rejects unknown
keys and ``__post_init__`` checks every value before a network is built.
Profiles differ only in these numbers, never in code paths. Which class a
variant name stands for is the registry's business
(:mod:`sematlas.models.registry`); a config only carries its name (``variant``)
so that its plain-data form (:meth:`ModelConfig.to_dict`, what checkpoints
save) says which network to rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from sematlas.core.grid import NETWORK_MULTIPLE

if TYPE_CHECKING:
    from sematlas.core.params import Params

CONDITIONINGS: tuple[str, ...] = ("film", "concat")
DECODERS: tuple[str, ...] = ("conv", "sbd")
PRIORS: tuple[str, ...] = ("conditional", "standard")
LIKELIHOODS: tuple[str, ...] = ("learned", "fixed")

# Spatial side at which the convolutional trunks hand over to dense layers or
# heads: the cbvae encoder's first dense block runs where the largest side is at
# most 16 (12^3 on the 48^3 grid of 4 mm).
DENSE_ENTRY_SIDE = 16

_Config = TypeVar("_Config", bound="ModelConfig")


def _check_at_least(config: ModelConfig, names: tuple[str, ...], minimum: int) -> None:
    """Raise ``ValueError`` for the first of ``names`` whose value is under ``minimum``."""
    for name in names:
        if int(getattr(config, name)) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {getattr(config, name)!r}")


@dataclass
class ModelConfig:
    """What every volumetric network is built from (and all the ``baseline`` needs).

    The defaults are the CPU-sized ``quick`` models (the 48^3 network grid at 4 mm,
    two kernels); GPU profiles raise ``base_channels`` (and the variants' widths) and
    set ``grid_shape=(80, 96, 80)`` (2 mm).

    Parameters
    ----------
    in_channels : int
        Channels of the input and output maps: one per density kernel
        (default 2: 6 mm and 12 mm FWHM).
    grid_shape : tuple of int
        Shape ``(d, h, w)`` of the network grid (:attr:`sematlas.core.grid.Grid.network_shape`):
        every side a multiple of :data:`~sematlas.core.grid.NETWORK_MULTIPLE`.
    z_dim : int
        Latent dimensionality.
    base_channels : int
        Width of the first (highest-resolution) feature maps; deeper stages
        use multiples (x2, x4, x8).
    cond_dim : int
        Width of ``meta["cond"]``: the complete, already-encoded metadata
        (task one-hot, standardised year and log peak count, space one-hot).
        Read by conditional variants only, like the two sizes below.
    n_sparse : int
        Width of ``meta["sparse"]``: standardised sparse fields (default 1:
        log sample size).
    n_year_bins : int
        Classes of ``meta["year_bin"]`` (the ``cbvae``'s adversarial year head).
    dropout : float
        Dropout probability on the encoder's flattened features and channel
        dropout after each decoder upsampling block; kept > 0 at test time it
        gives MC-dropout samples.
    gradient_checkpointing : bool
        Recompute encoder residual/dense blocks and decoder upsampling blocks
        in the backward pass (``torch.utils.checkpoint``, non-reentrant):
        less activation memory for more compute; outputs are unchanged.
    hidden_dim : int
        Width of the small MLPs (FiLM generators, heads, conditional priors).
    output_init : float
        Initial value of every output voxel, in (0, 1): the output layer's
        bias starts at ``logit(output_init)``. The maps are sparse, so a
        decoder starting at the sigmoid's 0.5 spends its first hundreds of
        steps unlearning the background (and then sits in the sigmoid's flat
        tail); about the training-set mean inside the brain is right.

    Attributes
    ----------
    variant : str
        The registered name of the network this config builds (a class
        constant; ``"baseline"`` here).
    """

    variant: ClassVar[str] = "baseline"

    in_channels: int = 2
    grid_shape: tuple[int, int, int] = (48, 48, 48)
    z_dim: int = 32
    base_channels: int = 16
    cond_dim: int = 0
    n_sparse: int = 1
    n_year_bins: int = 10
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    hidden_dim: int = 64
    output_init: float = 0.05

    def __post_init__(self) -> None:
        # Saved configs hold lists (YAML, JSON): the network grid is a tuple from here on.
        shape = tuple(int(side) for side in self.grid_shape)
        if len(shape) != 3 or any(side <= 0 or side % NETWORK_MULTIPLE for side in shape):
            raise ValueError(
                f"grid_shape must be three positive multiples of {NETWORK_MULTIPLE}, got {self.grid_shape!r}"
            )
        self.grid_shape = (shape[0], shape[1], shape[2])
        _check_at_least(self, ("in_channels", "z_dim", "base_channels", "n_year_bins", "hidden_dim"), 1)
        _check_at_least(self, ("cond_dim", "n_sparse"), 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.output_init < 1.0:
            raise ValueError(f"output_init must be in (0, 1), got {self.output_init!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields a mapping may set (``variant`` aside)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls: type[_Config], values: Mapping[str, Any]) -> _Config:
        """Build a config from a parameter mapping, rejecting unknown keys.

        Parameters
        ----------
        values : mapping
            Field names to values (e.g. a saved :meth:`to_dict`); a ``variant``
            key, if there, must be this class's.

        Returns
        -------
        ModelConfig
            An instance of ``cls``.

        Raises
        ------
        ValueError
            Unknown keys (naming them and the known ones), another variant's
            name, or a bad value.
        """
        values = dict(values)
        variant = values.pop("variant", cls.variant)
        if variant != cls.variant:
            raise ValueError(f"{cls.__name__} is the config of {cls.variant!r}, got variant={variant!r}")
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown model config keys {unknown} for {cls.variant!r}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def choices(cls, params: Params) -> dict[str, Any]:
        """The fields a profile chooses for this variant: those of the ``model`` section it has.

        Variants whose choices live elsewhere in the parameters (the
        ``hvae``'s ``hierarchical`` section) add them here.
        """
        return {key: value for key, value in params.model.items() if key in cls.field_names()}

    @classmethod
    def from_params(cls: type[_Config], params: Params, **sizes: Any) -> _Config:
        """The config of a profile's model of this variant.

        Parameters
        ----------
        params : Params
            Validated profile parameters (:meth:`choices` reads them).
        **sizes : int
            What the data decides: ``in_channels``, ``grid_shape``, ``cond_dim``,
            ``n_sparse``, ``n_year_bins``.
        """
        return cls.from_dict({**cls.choices(params), **sizes})

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists for tuples, ``variant`` first) for YAML, JSON and checkpoints."""
        plain = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return {"variant": self.variant, **plain}

    @property
    def meta_dim(self) -> int:
        """Width of the complete metadata vector ``m = concat(cond, sparse_filled)``."""
        return self.cond_dim + self.n_sparse


@dataclass
class SBDConfig(ModelConfig):
    """A model with (or with the choice of) a Spatial Broadcast Decoder (Watters et al. 2019).

    Parameters
    ----------
    sbd_channels : int or None
        Width of the decoder's last (full-resolution) stage; its stages use 8x,
        4x, 2x, 1x this width. ``None`` uses ``base_channels``; the default 4
        keeps the full-resolution stage affordable on a CPU.
    sbd_blocks : int
        Stride-1 residual blocks on the 8^3 broadcast grid, before upsampling
        (see :class:`~sematlas.models.tcvae.SpatialBroadcastDecoder`).
    **shared
        See :class:`ModelConfig`.
    """

    sbd_channels: int | None = 4
    sbd_blocks: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_at_least(self, ("sbd_blocks",), 0)
        if self.sbd_channels is not None and self.sbd_channels < 1:
            raise ValueError(f"sbd_channels must be >= 1 or None, got {self.sbd_channels!r}")


@dataclass
class TCVAEConfig(SBDConfig):
    """``tcvae_sbd``: the baseline's encoder, a Spatial Broadcast Decoder, the beta-TCVAE objective.

    Parameters
    ----------
    alpha, gamma : float
        Weights of the index-code mutual information and the dimension-wise KL
        in the objective (Chen et al. 2018); the total correlation's weight
        ``beta_tc`` is scheduled in training (``training.beta_tc_target``).
    **sbd
        See :class:`SBDConfig` and :class:`ModelConfig`.
    """

    variant: ClassVar[str] = "tcvae_sbd"

    alpha: float = 1.0
    gamma: float = 1.0


@dataclass
class ConditionalDecoderConfig(SBDConfig):
    """A model whose decoder is FiLM-conditioned (``cbvae`` on the metadata, ``hvae`` on its top level).

    Parameters
    ----------
    decoder : {"conv", "sbd"}
        The transposed-convolution decoder from a 4^3 cube, or a
        FiLM-conditioned Spatial Broadcast Decoder (Watters et al. 2019).
    **sbd
        See :class:`SBDConfig` and :class:`ModelConfig`.
    """

    decoder: Literal["conv", "sbd"] = "conv"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")


@dataclass
class CBVAEConfig(ConditionalDecoderConfig):
    """``cbvae``, the conditional atlas: DenseNet encoder, FiLM, imputation head, adversarial year head.

    Parameters
    ----------
    growth_rate : int
        Channels each dense layer adds (Huang et al. 2017).
    dense_layers : tuple of int
        Dense layers per dense block; block ``i`` runs at side ``16 / 2**i``
        voxels, so at most 2 blocks fit before the 4^3 head.
    dilations : tuple of int
        Dilation of each 3x3x3 conv of the last dense block (length
        ``dense_layers[-1]``); widens the receptive field without further
        downsampling (Yu & Koltun 2016).
    grl_lambda : float
        Initial gradient-reversal factor (a callback may ramp it).
    aleatoric : bool
        The decoder also predicts a per-voxel log-variance (``x_logvar``) and
        the reconstruction term becomes the Gaussian NLL (heteroscedastic
        aleatoric uncertainty, Kendall & Gal 2017). Off, the network and its
        objective are exactly stage 02's.
    conditioning : {"film", "concat"}
        How the metadata vector ``m`` enters the networks. ``film`` modulates
        the encoder's dense blocks and the decoder's upsampling blocks (Perez
        et al. 2018); ``concat`` appends ``m`` to the encoder's flattened
        features before the posterior head and to ``z`` at the decoder's input,
        the classic conditional VAE (Sohn et al. 2015): the ablation of FiLM.
    imputation : bool
        Predict missing sparse fields (sample size) from the image with the
        amortised imputation head. Off, a missing field takes its training mean
        (0 once standardised) and the objective has no imputation terms.
    prior : {"conditional", "standard"}
        ``conditional``: a prior network ``p(z | m) = N(mu(m), diag sigma(m)^2)`` learned
        jointly (the CVAE's prior network, Sohn et al. 2015); the KL is to it, generation
        samples from it and the year adversary reads the residual ``(z - mu(m)) / sigma(m)``.
        ``standard``: ``N(0, I)`` for every study (the ablation).
    likelihood : {"learned", "fixed"}
        ``learned``: a Gaussian decoder with one noise scale per channel, at its optimum for
        the batch's error (the sigma-VAE, Rybkin et al. 2021), so the objective is an ELBO
        and ``beta`` weighs a KL against a calibrated likelihood. ``fixed``: the squared
        error summed over voxels (variance 1/2), the ablation. An aleatoric decoder
        learns its variance per voxel and ignores this.
    prior_lr_scale : float
        The prior network's learning rate as a multiple of the rest's (``prior="conditional"``):
        its only gradient is the KL's, small against codes far from 0.
    **decoder
        ``decoder``, ``sbd_channels``, ``sbd_blocks``: see
        :class:`ConditionalDecoderConfig`; the shared fields: :class:`ModelConfig`.
    """

    variant: ClassVar[str] = "cbvae"

    growth_rate: int = 8
    dense_layers: tuple[int, ...] = (2, 3)
    dilations: tuple[int, ...] = (1, 2, 4)
    grl_lambda: float = 1.0
    aleatoric: bool = False
    conditioning: Literal["film", "concat"] = "film"
    imputation: bool = True
    prior: Literal["conditional", "standard"] = "conditional"
    likelihood: Literal["learned", "fixed"] = "learned"
    prior_lr_scale: float = 10.0

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable and printable.
        self.dense_layers = tuple(int(n) for n in self.dense_layers)
        self.dilations = tuple(int(d) for d in self.dilations)
        super().__post_init__()
        _check_at_least(self, ("growth_rate",), 1)
        if not 1 <= len(self.dense_layers) <= 2 or min(self.dense_layers) < 1:
            raise ValueError(f"dense_layers must hold 1 or 2 positive counts, got {self.dense_layers!r}")
        if len(self.dilations) != self.dense_layers[-1] or min(self.dilations) < 1:
            raise ValueError(
                f"dilations must give one positive dilation per layer of the last dense block "
                f"({self.dense_layers[-1]}), got {self.dilations!r}"
            )
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if not self.prior_lr_scale > 0:
            raise ValueError(f"prior_lr_scale must be positive, got {self.prior_lr_scale!r}")
        if self.decoder == "sbd" and self.aleatoric:
            raise ValueError("the Spatial Broadcast Decoder has no aleatoric head: use decoder='conv' with aleatoric")


@dataclass
class HVAEConfig(ConditionalDecoderConfig):
    """``hvae``: a global top level over a local lower level (:class:`~sematlas.models.hvae.HierarchicalVAE`).

    Parameters
    ----------
    top_dim : int
        Units of the global top level, in ``[1, z_dim - 1]``; the lower level
        has the other ``z_dim - top_dim``.
    top_beta : float
        KL weight of the top level (the lower level's is ``training.beta``); it
        follows the same schedule as ``beta``.
    **decoder
        See :class:`ConditionalDecoderConfig` and :class:`ModelConfig`.

    Notes
    -----
    Both come from the profile's ``hierarchical`` section (:meth:`choices`).
    """

    variant: ClassVar[str] = "hvae"

    top_dim: int = 8
    top_beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_dim < self.z_dim:
            raise ValueError(f"hvae needs 1 <= top_dim < z_dim ({self.z_dim}), got top_dim={self.top_dim!r}")

    @classmethod
    def choices(cls, params: Params) -> dict[str, Any]:
        """The ``model`` choices and the level sizes and top-level weight of ``hierarchical``."""
        hierarchical = params.hierarchical
        return {**super().choices(params), "top_dim": hierarchical.top_dim, "top_beta": hierarchical.top_beta}

    @property
    def lower_dim(self) -> int:
        """Units of the lower level: ``z_dim - top_dim``."""
        return self.z_dim - self.top_dim


__all__ = [
    "CONDITIONINGS",
    "DECODERS",
    "DENSE_ENTRY_SIDE",
    "LIKELIHOODS",
    "PRIORS",
    "CBVAEConfig",
    "ConditionalDecoderConfig",
    "HVAEConfig",
    "ModelConfig",
    "SBDConfig",
    "TCVAEConfig",
]
