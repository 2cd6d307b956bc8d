"""The point-cloud conditional VAE and its inference wrapper.

:class:`PointCloudVAE` encodes a study's fixed-size peak set with PointNet++
(:mod:`sematlas.pointcloud.pointnet`) and decodes a latent code with an MLP to
``n_points x 3`` coordinates, both conditioned on the study metadata of
:mod:`sematlas.metadata` (the same vector the volumetric models see).

:class:`PointCloudModel` rebuilds a trained model from a checkpoint alone and
speaks millimetres:

>>> model = PointCloudModel.load("data/models/quick/pointcloud/checkpoints/best.ckpt")  # doctest: +SKIP
>>> points = model.generate({"task": "working_memory", "year": 2012}, n_samples=4)     # doctest: +SKIP
>>> points.shape                                                                        # doctest: +SKIP
torch.Size([1, 4, 30, 3])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sematlas.atlas import CheckpointError
from sematlas.metadata import MetadataEncoder
from sematlas.pointcloud.pointnet import PointNetEncoder, shared_mlp

Metadata = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class PointCloudConfig:
    """Architecture of :class:`PointCloudVAE` (the choices of ``params["pointcloud"]``, plus ``cond_dim``).

    Raises
    ------
    ValueError
        Set-abstraction settings that are not pairs or that ask for more points than a level has.
    """

    n_points: int
    cond_dim: int
    fourier_features: int
    fourier_sigma: float
    sa_npoint: tuple[int, int]
    sa_radius: tuple[float, float]
    sa_nsample: tuple[int, int]
    sa_channels: tuple[int, int]
    global_channels: int
    decoder_hidden: tuple[int, ...]
    z_dim: int

    def __post_init__(self) -> None:
        for name in ("sa_npoint", "sa_radius", "sa_nsample", "sa_channels"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"pointcloud.{name} must have two entries (one per level), got {getattr(self, name)}")
        level_sizes = (self.n_points, self.sa_npoint[0])
        for level in range(2):
            if not 0 < self.sa_npoint[level] <= level_sizes[level]:
                raise ValueError(f"pointcloud.sa_npoint[{level}] must be in [1, {level_sizes[level]}]")
            if not 0 < self.sa_nsample[level] <= level_sizes[level]:
                raise ValueError(f"pointcloud.sa_nsample[{level}] must be in [1, {level_sizes[level]}]")
            if not self.sa_radius[level] > 0:
                raise ValueError(f"pointcloud.sa_radius[{level}] must be positive")

    @property
    def meta_dim(self) -> int:
        """Width of the conditioning vector: ``cond`` plus the sample-size value and its known-flag."""
        return self.cond_dim + 2

    @classmethod
    def from_params(cls, section: Mapping[str, Any], cond_dim: int) -> PointCloudConfig:
        """From ``params["pointcloud"]`` and the metadata encoder's ``cond_dim``."""
        return cls.from_dict(
            {
                "cond_dim": cond_dim,
                **{
                    key: section[key]
                    for key in (
                        "n_points",
                        "fourier_features",
                        "fourier_sigma",
                        "sa_npoint",
                        "sa_radius",
                        "sa_nsample",
                        "sa_channels",
                        "global_channels",
                        "decoder_hidden",
                        "z_dim",
                    )
                },
            }
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PointCloudConfig:
        return cls(
            n_points=int(values["n_points"]),
            cond_dim=int(values["cond_dim"]),
            fourier_features=int(values["fourier_features"]),
            fourier_sigma=float(values["fourier_sigma"]),
            sa_npoint=tuple(int(v) for v in values["sa_npoint"]),  # type: ignore[arg-type]
            sa_radius=tuple(float(v) for v in values["sa_radius"]),  # type: ignore[arg-type]
            sa_nsample=tuple(int(v) for v in values["sa_nsample"]),  # type: ignore[arg-type]
            sa_channels=tuple(int(v) for v in values["sa_channels"]),  # type: ignore[arg-type]
            global_channels=int(values["global_channels"]),
            decoder_hidden=tuple(int(v) for v in values["decoder_hidden"]),
            z_dim=int(values["z_dim"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for checkpoints and YAML."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def metadata_vector(meta: Mapping[str, Tensor]) -> Tensor:
    """The conditioning vector ``(batch, cond_dim + 2)``: ``cond``, the standardised sample size
    (0 where unknown) and whether it is known."""
    return torch.cat([meta["cond"].float(), meta["sparse"].float(), meta["sparse_mask"].float()], dim=1)


class PointCloudVAE(nn.Module):
    """Conditional VAE over point sets: PointNet++ encoder, MLP decoder.

    ``q(z | x, c) = N(mu, diag(exp(logvar)))`` from the PointNet++ global
    feature concatenated with the metadata vector ``c``; ``p(x | z, c)``
    decoded by an MLP on ``[z, c]`` to ``(n_points, 3)``.

    Conditioning by concatenation, not FiLM: FiLM pays off when one
    modulation must reach every position of a feature map (the convolutional
    ``cbvae``); here the metadata meets a single global vector on each side,
    where concatenating it into a linear layer already shifts every unit by a
    learnt function of ``c`` and the following nonlinearities let it interact
    with ``z`` (the conditional VAE of Sohn et al., NeurIPS 2015). It is also
    the smaller model on the 1k-study profile.

    Parameters
    ----------
    config : PointCloudConfig
    """

    def __init__(self, config: PointCloudConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = PointNetEncoder(
            config.fourier_features,
            config.fourier_sigma,
            config.sa_npoint,
            config.sa_radius,
            config.sa_nsample,
            config.sa_channels,
            config.global_channels,
        )
        self.posterior = shared_mlp([config.global_channels + config.meta_dim, config.global_channels])
        self.mu = nn.Linear(config.global_channels, config.z_dim)
        self.logvar = nn.Linear(config.global_channels, config.z_dim)
        self.decoder = nn.Sequential(
            shared_mlp([config.z_dim + config.meta_dim, *config.decoder_hidden]),
            nn.Linear(config.decoder_hidden[-1], 3 * config.n_points),
        )

    def encode(self, points: Tensor, meta: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Posterior parameters of ``(batch, n_points, 3)`` scaled points: ``mu``, ``logvar`` ``(batch, z_dim)``."""
        h = self.posterior(torch.cat([self.encoder(points), metadata_vector(meta)], dim=1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor, meta: Mapping[str, Tensor]) -> Tensor:
        """``(batch, z_dim)`` latents -> ``(batch, n_points, 3)`` scaled points."""
        out = self.decoder(torch.cat([z, metadata_vector(meta)], dim=1))
        return out.view(z.shape[0], self.config.n_points, 3)

    def forward(self, points: Tensor, meta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Encode, sample ``z = mu + exp(logvar / 2) * eps`` (Kingma & Welling 2014), decode.

        Returns
        -------
        dict
            ``points_hat`` (batch, n_points, 3), ``mu``, ``logvar``, ``z`` (batch, z_dim).
        """
        mu, logvar = self.encode(points, meta)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return {"points_hat": self.decode(z, meta), "mu": mu, "logvar": logvar, "z": z}


class PointCloudModel:
    """A trained point-cloud model for inference, in MNI millimetres (eval mode, CPU by default).

    Parameters
    ----------
    network : PointCloudVAE
    encoder : MetadataEncoder
        Fitted on the training split (from the checkpoint).
    payload : mapping
        ``checkpoint["sematlas"]``: profile, ``centre_mm``, ``scale_mm``, ``n_points``.

    Use :meth:`load` rather than the constructor.
    """

    def __init__(self, network: PointCloudVAE, encoder: MetadataEncoder, payload: Mapping[str, Any]) -> None:
        self.network = network.eval()
        self.encoder = encoder
        self.payload = dict(payload)

    @classmethod
    def load(cls, checkpoint: str | Path, map_location: str = "cpu") -> PointCloudModel:
        """Rebuild a model from a checkpoint written by :func:`sematlas.pointcloud.train_pointcloud`.

        Raises
        ------
        CheckpointError
            Not a point-cloud checkpoint of sematlas, or weights that do not match
            the architecture saved with them (listing missing and unexpected keys).
        """
        state = torch.load(Path(checkpoint), map_location=map_location, weights_only=False)
        payload = state.get("sematlas", {})
        if payload.get("variant") != "pointcloud" or "hyper_parameters" not in state:
            raise CheckpointError(f"{checkpoint} is not a point-cloud checkpoint of sematlas.pointcloud")
        network = PointCloudVAE(PointCloudConfig.from_dict(state["hyper_parameters"]["config"]))
        weights = {key.removeprefix("model."): value for key, value in state["state_dict"].items()}
        result = network.load_state_dict(weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{checkpoint}: weights do not match the saved architecture; missing keys: "
                f"{list(result.missing_keys)}; unexpected keys: {list(result.unexpected_keys)}"
            )
        return cls(network.to(map_location), MetadataEncoder.from_dict(payload["metadata_encoder"]), payload)

    # ----------------------------------------------------------------------- frame
    @property
    def device(self) -> torch.device:
        return self.network.mu.weight.device

    @property
    def z_dim(self) -> int:
        return self.network.config.z_dim

    @property
    def n_points(self) -> int:
        return self.network.config.n_points

    def _frame(self) -> tuple[Tensor, float]:
        return torch.tensor(self.payload["centre_mm"], dtype=torch.float32, device=self.device), float(
            self.payload["scale_mm"]
        )

    def to_mm(self, points: Tensor) -> Tensor:
        """Scaled points ``(..., 3)`` -> MNI mm."""
        centre, scale = self._frame()
        return points * scale + centre

    def to_unit(self, points_mm: Tensor) -> Tensor:
        """MNI mm ``(..., 3)`` -> the scaled frame the network works in."""
        centre, scale = self._frame()
        return (points_mm.float().to(self.device) - centre) / scale

    # -------------------------------------------------------------------- metadata
    def encode_metadata(self, metadata: Metadata | Mapping[str, Tensor], n: int) -> dict[str, Tensor]:
        """Encoded tensors as they are, or request dict(s) encoded (one row per dict, or ``n`` copies of one).

        Raises
        ------
        ValueError
            From :meth:`MetadataEncoder.request`: unknown key or category, a year out of range.
        """
        if isinstance(metadata, Mapping) and metadata and all(isinstance(v, Tensor) for v in metadata.values()):
            return {key: value.to(self.device) for key, value in metadata.items()}
        requests = [metadata] if isinstance(metadata, Mapping) else list(metadata)
        if len(requests) == 1:
            requests = requests * n
        rows = [self.encoder.request(r) for r in requests]
        return {key: torch.cat([row[key] for row in rows]).to(self.device) for key in rows[0]}

    # ------------------------------------------------------------------- inference
    @torch.no_grad()
    def encode(self, points_mm: Tensor, metadata: Metadata | Mapping[str, Tensor]) -> Tensor:
        """Posterior means of ``(n, n_points, 3)`` point sets in mm: ``(n, z_dim)``."""
        mu, _ = self.network.encode(self.to_unit(points_mm), self.encode_metadata(metadata, len(points_mm)))
        return mu

    @torch.no_grad()
    def decode(self, z: Tensor, metadata: Metadata | Mapping[str, Tensor]) -> Tensor:
        """Latents ``(n, z_dim)`` with metadata (a dict for all, one dict per row, or encoded tensors)
        -> points ``(n, n_points, 3)`` in MNI mm."""
        z = z.float().to(self.device)
        return self.to_mm(self.network.decode(z, self.encode_metadata(metadata, len(z))))

    @torch.no_grad()
    def generate(
        self, metadata: Metadata | Mapping[str, Tensor], n_samples: int = 1, generator: torch.Generator | None = None
    ) -> Tensor:
        """Point sets from metadata alone: prior samples ``z ~ N(0, I)`` decoded with each request.

        Parameters
        ----------
        metadata : dict, list of dicts, or encoded tensors
            ``n_requests`` requests (see :meth:`MetadataEncoder.request`).
        n_samples : int
            Samples per request.
        generator : torch.Generator, optional
            For reproducible samples.

        Returns
        -------
        Tensor, shape (n_requests, n_samples, n_points, 3)
            MNI mm.
        """
        meta = self.encode_metadata(metadata, 1)
        n_requests = len(meta["cond"])
        z = torch.randn(n_requests * n_samples, self.z_dim, generator=generator).to(self.device)
        repeated = {key: value.repeat_interleave(n_samples, dim=0) for key, value in meta.items()}
        return self.decode(z, repeated).view(n_requests, n_samples, self.n_points, 3)
