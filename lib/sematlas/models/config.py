"""The one typed configuration every volumetric model is built from.

Parameters arrive from YAML profiles through papermill, which neither
validates names nor types, so :meth:`ModelConfig.from_dict` rejects unknown
keys and :meth:`ModelConfig.__post_init__` checks every value before a network
is built. Profiles differ only in these numbers, never in code paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Variant = Literal["baseline", "cbvae", "tcvae_sbd", "hvae"]
VARIANTS: tuple[str, ...] = ("baseline", "cbvae", "tcvae_sbd", "hvae")
CONDITIONINGS: tuple[str, ...] = ("film", "concat")
DECODERS: tuple[str, ...] = ("conv", "sbd")

# Spatial side at which the convolutional trunks hand over to dense layers or
# heads: the cbvae encoder's first dense block runs at 16^3 whatever the grid.
DENSE_ENTRY_SIDE = 16


@dataclass
class ModelConfig:
    """Architecture of one volumetric generative model.

    The defaults are the CPU-sized ``quick`` models (64^3 grid at 4 mm, two
    kernels); GPU profiles raise ``base_channels``/``growth_rate`` and set
    ``grid_size=128``.

    Parameters
    ----------
    variant : {"baseline", "cbvae", "tcvae_sbd", "hvae"}
        ``baseline``: 3D ResNet-10-style VAE. ``cbvae``: conditional beta-VAE
        (DenseNet + dilation, FiLM, imputation head, adversarial year head).
        ``tcvae_sbd``: beta-TCVAE with a Spatial Broadcast Decoder.
        ``hvae``: two-level hierarchical VAE (global top level over a local
        lower level, :class:`~sematlas.models.hvae.HierarchicalVAE`).
    in_channels : int
        Channels of the input and output maps: one per density kernel
        (default 2: 6 mm and 12 mm FWHM).
    grid_size : int
        Side of the padded cubic grid: 64 (4 mm) or 128 (2 mm).
    z_dim : int
        Latent dimensionality.
    base_channels : int
        Width of the first (highest-resolution) feature maps; deeper stages
        use multiples (x2, x4, x8).
    cond_dim : int
        Width of ``meta["cond"]``: the complete, already-encoded metadata
        (task one-hot, standardised year and log peak count, space one-hot).
        Used by ``cbvae`` only.
    n_sparse : int
        Width of ``meta["sparse"]``: standardised sparse fields (default 1:
        log sample size). Used by ``cbvae`` only.
    n_year_bins : int
        Classes of the adversarial publication-year head (``cbvae``).
    dropout : float
        Dropout probability on the encoder's flattened features and channel
        dropout after each decoder upsampling block; kept > 0 at test time it
        gives MC-dropout samples.
    gradient_checkpointing : bool
        Recompute encoder residual/dense blocks and decoder upsampling blocks
        in the backward pass (``torch.utils.checkpoint``, non-reentrant):
        less activation memory for more compute; outputs are unchanged.
    growth_rate : int
        ``cbvae``: channels each dense layer adds (Huang et al. 2017).
    dense_layers : tuple of int
        ``cbvae``: dense layers per dense block; block ``i`` runs at side
        ``16 / 2**i`` voxels, so at most 2 blocks fit before the 4^3 head.
    dilations : tuple of int
        ``cbvae``: dilation of each 3x3x3 conv of the last dense block
        (length ``dense_layers[-1]``); widens the receptive field without
        further downsampling (Yu & Koltun 2016).
    hidden_dim : int
        Width of the small MLPs: FiLM generators, imputation and year heads.
    grl_lambda : float
        ``cbvae``: initial gradient-reversal factor (a callback may ramp it).
    sbd_channels : int or None
        ``tcvae_sbd``: width of the Spatial Broadcast Decoder's last
        (full-resolution) stage; its stages use 8x, 4x, 2x, 1x this width.
        ``None`` uses ``base_channels``; the default 4 keeps the
        full-resolution stage affordable on a CPU.
    sbd_blocks : int
        ``tcvae_sbd``: stride-1 residual blocks on the 8^3 broadcast grid,
        before upsampling (see :class:`~sematlas.models.tcvae.SpatialBroadcastDecoder`).
    output_init : float
        Initial value of every output voxel, in (0, 1): the output layer's
        bias starts at ``logit(output_init)``. The maps are sparse, so a
        decoder starting at the sigmoid's 0.5 spends its first hundreds of
        steps unlearning the background (and then sits in the sigmoid's flat
        tail); about the training-set mean inside the brain is right.
    aleatoric : bool
        ``cbvae``: the decoder also predicts a per-voxel log-variance
        (``x_logvar``) and the reconstruction term becomes the Gaussian NLL
        (heteroscedastic aleatoric uncertainty, Kendall & Gal 2017). Off, the
        network and its objective are exactly stage 02's.
    top_dim : int
        ``hvae``: units of the global top level, in ``[1, z_dim - 1]``; the
        lower level has the other ``z_dim - top_dim``. 0 (the default) for
        every other variant, so configs saved before the field existed load
        unchanged.
    conditioning : {"film", "concat"}
        ``cbvae``: how the metadata vector ``m`` enters the networks. ``film``
        modulates the encoder's dense blocks and the decoder's upsampling
        blocks (Perez et al. 2018); ``concat`` appends ``m`` to the encoder's
        flattened features before the posterior head and to ``z`` at the
        decoder's input, the classic conditional VAE (Sohn et al. 2015): the
        ablation of FiLM.
    decoder : {"conv", "sbd"}
        ``cbvae``/``hvae``: the transposed-convolution decoder from a 4^3 cube,
        or a FiLM-conditioned Spatial Broadcast Decoder (Watters et al. 2019).
    imputation : bool
        ``cbvae``: predict missing sparse fields (sample size) from the image
        with the amortised imputation head. Off, a missing field takes its
        training mean (0 once standardised) and the objective has no
        imputation terms.
    """

    variant: Variant = "baseline"
    in_channels: int = 2
    grid_size: int = 64
    z_dim: int = 32
    base_channels: int = 16
    cond_dim: int = 0
    n_sparse: int = 1
    n_year_bins: int = 10
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    growth_rate: int = 8
    dense_layers: tuple[int, ...] = (2, 3)
    dilations: tuple[int, ...] = (1, 2, 4)
    hidden_dim: int = 64
    grl_lambda: float = 1.0
    sbd_channels: int | None = 4
    sbd_blocks: int = 2
    output_init: float = 0.05
    aleatoric: bool = False
    top_dim: int = 0
    conditioning: Literal["film", "concat"] = "film"
    decoder: Literal["conv", "sbd"] = "conv"
    imputation: bool = True

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable and printable.
        self.dense_layers = tuple(int(n) for n in self.dense_layers)
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.grid_size not in (64, 128):
            raise ValueError(f"grid_size must be 64 or 128, got {self.grid_size!r}")
        for name in ("in_channels", "z_dim", "base_channels", "n_year_bins", "growth_rate", "hidden_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("cond_dim", "n_sparse", "sbd_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 1 <= len(self.dense_layers) <= 2 or min(self.dense_layers) < 1:
            raise ValueError(f"dense_layers must hold 1 or 2 positive counts, got {self.dense_layers!r}")
        if len(self.dilations) != self.dense_layers[-1] or min(self.dilations) < 1:
            raise ValueError(
                f"dilations must give one positive dilation per layer of the last dense block "
                f"({self.dense_layers[-1]}), got {self.dilations!r}"
            )
        if not 0.0 < self.output_init < 1.0:
            raise ValueError(f"output_init must be in (0, 1), got {self.output_init!r}")
        if self.aleatoric and self.variant != "cbvae":
            raise ValueError(f"aleatoric decoders are built for the 'cbvae' variant only, got {self.variant!r}")
        if self.variant == "hvae" and not 1 <= self.top_dim < self.z_dim:
            raise ValueError(f"hvae needs 1 <= top_dim < z_dim ({self.z_dim}), got top_dim={self.top_dim!r}")
        if self.variant != "hvae" and self.top_dim != 0:
            raise ValueError(f"top_dim is a level size of the 'hvae' variant only, got {self.variant!r}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if (self.conditioning != "film" or not self.imputation) and self.variant != "cbvae":
            raise ValueError(
                f"conditioning={self.conditioning!r} and imputation={self.imputation!r} are choices of the "
                f"'cbvae' variant only (the defaults 'film' and True elsewhere), got {self.variant!r}"
            )
        if self.decoder == "sbd" and self.variant not in ("cbvae", "hvae"):
            raise ValueError(f"decoder='sbd' is a conditional decoder of 'cbvae' or 'hvae', got {self.variant!r}")
        if self.decoder == "sbd" and self.aleatoric:
            raise ValueError("the Spatial Broadcast Decoder has no aleatoric head: use decoder='conv' with aleatoric")
        if self.sbd_channels is not None and self.sbd_channels < 1:
            raise ValueError(f"sbd_channels must be >= 1 or None, got {self.sbd_channels!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build a config from a parameter mapping, rejecting unknown keys.

        Parameters
        ----------
        values : mapping
            Field names to values (e.g. the ``model`` section of a profile).

        Returns
        -------
        ModelConfig
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists for tuples) for YAML, JSON and checkpoints."""
        out = asdict(self)
        out["dense_layers"] = list(self.dense_layers)
        out["dilations"] = list(self.dilations)
        return out

    @property
    def lower_dim(self) -> int:
        """Units of the ``hvae``'s lower level: ``z_dim - top_dim``."""
        return self.z_dim - self.top_dim

    @property
    def meta_dim(self) -> int:
        """Width of the complete metadata vector ``m = concat(cond, sparse_filled)``."""
        return self.cond_dim + self.n_sparse
