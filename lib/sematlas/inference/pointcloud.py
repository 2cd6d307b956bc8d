"""Inference on a trained point-cloud C-VAE, in MNI millimetres (:class:`PointCloudModel`).

>>> model = PointCloudModel.load("data/models/quick/pointcloud/checkpoints/best.ckpt")  # doctest: +SKIP
>>> points = model.generate({"task": "working_memory", "year": 2012}, n_samples=4)     # doctest: +SKIP
>>> points.shape                                                                        # doctest: +SKIP
torch.Size([1, 4, 30, 3])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sematlas.core.errors import CheckpointError
from sematlas.core.metadata import MetadataEncoder
from sematlas.models.pointcloud import PointCloudConfig, PointCloudVAE

Metadata = Mapping[str, Any] | Sequence[Mapping[str, Any]]


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
        """Rebuild a model from a checkpoint written by :func:`sematlas.training.pointcloud.train_pointcloud`.

        Raises
        ------
        CheckpointError
            Not a point-cloud checkpoint of sematlas, or weights that do not match
            the architecture saved with them (listing missing and unexpected keys).
        """
        state = torch.load(Path(checkpoint), map_location=map_location, weights_only=False)
        payload = state.get("sematlas", {})
        if payload.get("variant") != "pointcloud" or "hyper_parameters" not in state:
            raise CheckpointError(f"{checkpoint} is not a point-cloud checkpoint of sematlas")
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


__all__ = ["PointCloudModel"]
