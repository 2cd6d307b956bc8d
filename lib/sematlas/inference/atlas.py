"""Inference on a trained atlas model: encode maps, decode latents with metadata, write NIfTI.

>>> atlas = AtlasModel.load("data/models/quick/cbvae/checkpoints/best.ckpt")   # doctest: +SKIP
>>> maps = atlas.generate({"task": "working_memory", "year": 2012})             # doctest: +SKIP
>>> atlas.to_nifti(maps[0]).to_filename("working_memory_2012.nii.gz")           # doctest: +SKIP

Everything needed is in the checkpoint: the architecture (the saved model
config among the training hyperparameters), the network's weights, and under
``checkpoint["sematlas"]`` the metadata encoder fitted on the training split, the
grid and the kernels. Loading rebuilds the network through the model registry
(:mod:`sematlas.models.registry`): neither Lightning nor the renderer is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from sematlas.core.errors import CheckpointError
from sematlas.core.grid import Grid
from sematlas.core.metadata import MetadataEncoder
from sematlas.models import ModelConfig, VolumetricVAE, build_model, config_from_dict

Metadata = Mapping[str, Any] | Sequence[Mapping[str, Any]]

# The training module keeps the network as its `model`: the prefix of the network's weights in a checkpoint.
_NETWORK_PREFIX = "model."


class AtlasModel:
    """A trained volumetric model ready for inference (eval mode, CPU by default).

    Parameters
    ----------
    network : VolumetricVAE
        The trained network.
    encoder : MetadataEncoder
    payload : mapping
        ``checkpoint["sematlas"]``: profile, variant, voxel size, kernels.
    hparams : mapping, optional
        The hyperparameters the network was trained with (``checkpoint["hyper_parameters"]``:
        ``config``, the ``training`` section, run options such as ``lr_schedule``); by
        default only the network's ``config``.

    Use :meth:`load` rather than the constructor.

    Attributes
    ----------
    network : VolumetricVAE
    encoder : MetadataEncoder
    payload : dict
    hparams : dict
        Plain data, as saved.
    """

    def __init__(
        self,
        network: VolumetricVAE,
        encoder: MetadataEncoder,
        payload: Mapping[str, Any],
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.encoder = encoder
        self.payload = dict(payload)
        self.hparams = dict(hparams) if hparams is not None else {"config": network.config.to_dict()}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, checkpoint: str | Path, map_location: str = "cpu", voxel_size: int | None = None) -> AtlasModel:
        """Load a checkpoint written by :func:`sematlas.training.run.train_variant`.

        Parameters
        ----------
        checkpoint : path
        map_location : str
        voxel_size : int, optional
            The grid the caller works on; a checkpoint trained on another grid raises.

        Raises
        ------
        CheckpointError
            Not a sematlas checkpoint; a saved config that builds no registered
            network; weights that do not match the architecture (listing missing
            and unexpected keys); a grid other than ``voxel_size``.
        """
        checkpoint = Path(checkpoint)
        state = torch.load(checkpoint, map_location=map_location, weights_only=False)
        if "sematlas" not in state or "hyper_parameters" not in state:
            raise CheckpointError(f"{checkpoint} was not written by sematlas.training.run (no 'sematlas' payload)")
        payload = state["sematlas"]
        if voxel_size is not None and int(payload["voxel_size"]) != int(voxel_size):
            raise CheckpointError(
                f"{checkpoint} was trained on the {Grid(payload['voxel_size']).shape} grid at "
                f"{payload['voxel_size']} mm (profile '{payload['profile']}'), not the {Grid(voxel_size).shape} grid "
                f"at {voxel_size} mm"
            )
        hparams = dict(state["hyper_parameters"])
        try:
            network = build_model(config_from_dict(hparams["config"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{checkpoint}: its saved model config builds no network ({error})") from error
        weights = {
            key.removeprefix(_NETWORK_PREFIX): value
            for key, value in state["state_dict"].items()
            if key.startswith(_NETWORK_PREFIX)
        }
        result = network.load_state_dict(weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{checkpoint}: weights do not match the '{network.config.variant}' architecture "
                f"saved with them; missing keys: {[_NETWORK_PREFIX + key for key in result.missing_keys]}; "
                f"unexpected keys: {[_NETWORK_PREFIX + key for key in result.unexpected_keys]}"
            )
        encoder = MetadataEncoder.from_dict(payload["metadata_encoder"])
        return cls(network.to(map_location), encoder, payload, hparams)

    # --------------------------------------------------------------- properties
    @property
    def variant(self) -> str:
        return str(self.payload["variant"])

    @property
    def config(self) -> ModelConfig:
        """The network's architecture."""
        return self.network.config

    @property
    def grid(self) -> Grid:
        return Grid(int(self.payload["voxel_size"]))

    @property
    def z_dim(self) -> int:
        return int(self.config.z_dim)

    @property
    def is_conditional(self) -> bool:
        """Whether the decoder uses the metadata (the network's ``is_conditional``)."""
        return self.network.is_conditional

    @property
    def is_aleatoric(self) -> bool:
        """Whether the decoder predicts a per-voxel variance (the network's ``is_aleatoric``)."""
        return self.network.is_aleatoric

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ------------------------------------------------------------------- metadata
    def encode_metadata(self, metadata: Metadata, n: int | None = None) -> dict[str, torch.Tensor]:
        """Metadata dict(s) -> the tensors of the data contract (one row per dict, or ``n`` copies of one)."""
        requests = [metadata] if isinstance(metadata, Mapping) else list(metadata)
        if n is not None and len(requests) == 1:
            requests = requests * n
        rows = [self.encoder.request(r) for r in requests]
        return {key: torch.cat([row[key] for row in rows]).to(self.device) for key in rows[0]}

    def _meta(self, metadata: Metadata | Mapping[str, torch.Tensor] | None, n: int) -> dict[str, torch.Tensor]:
        if metadata is None:
            if self.is_conditional:
                raise ValueError(
                    f"the '{self.variant}' model is conditional: pass metadata, e.g. "
                    f"{{'task': '{self.encoder.categories[0]}', 'year': 2012}}"
                )
            metadata = {"task": self.encoder.categories[-1]}
        if isinstance(metadata, Mapping) and metadata and all(isinstance(v, torch.Tensor) for v in metadata.values()):
            return {key: value.to(self.device) for key, value in metadata.items()}
        return self.encode_metadata(metadata, n)

    # ------------------------------------------------------------------ inference
    def to_native(self, volume: torch.Tensor) -> torch.Tensor:
        """Network-grid maps ``(..., d, h, w)`` on the native grid ``(..., D, H, W)``, zero outside the brain."""
        return self.grid.to_native(volume) * torch.from_numpy(self.grid.mask()).to(volume.device)

    def to_network(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps on the native or the network grid, as float32 on the network grid and the model's device."""
        maps = maps.float().to(self.device)
        return maps if tuple(maps.shape[-3:]) == self.grid.network_shape else self.grid.to_network(maps)

    @torch.no_grad()
    def encode(self, maps: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Posterior means of maps.

        Parameters
        ----------
        maps : Tensor, shape (n, C, D, H, W)
            On the native or the network grid of the model.
        metadata : dict, list of dicts or encoded tensors
            Required by conditional models (their encoder is FiLM-modulated).

        Returns
        -------
        Tensor, shape (n, z_dim)
        """
        image = self.to_network(maps)
        mu, _ = self.network.encode(image, self._meta(metadata, image.shape[0]))
        return mu

    @torch.no_grad()
    def decode(self, z: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Maps from latents.

        Parameters
        ----------
        z : Tensor, shape (n, z_dim)
        metadata : dict or list of dicts
            ``task`` (a category name), ``year`` (1997-2018), ``sample_size``; a
            missing sample size takes the training mean (no image to impute
            from). Ignored by unconditional variants.

        Returns
        -------
        Tensor, shape (n, C, D, H, W)
            On the native grid, zero outside the brain.

        Raises
        ------
        ValueError
            Unknown category (listing the allowed ones), year out of range, bad key.
        """
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        meta = self._meta(metadata, z.shape[0])
        return self.to_native(self.network.decode(z, meta))

    @torch.no_grad()
    def decode_distribution(
        self, z: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps from latents with their aleatoric variance.

        Parameters
        ----------
        z : Tensor, shape (n, z_dim)
        metadata : dict, list of dicts or encoded tensors
            As in :meth:`decode`.

        Returns
        -------
        mean : Tensor, shape (n, C, D, H, W)
            Equal to :meth:`decode`.
        variance : Tensor, shape (n, C, D, H, W)
            The decoder's predicted per-voxel variance; zero for a model without an
            aleatoric head. Both on the native grid, zero outside the brain.
        """
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        meta = self._meta(metadata, z.shape[0])
        if not self.is_aleatoric:
            mean = self.to_native(self.network.decode(z, meta))
            return mean, torch.zeros_like(mean)
        mean, logvar = self.network.decode_distribution(z, meta)
        return self.to_native(mean), self.to_native(logvar.exp())

    @torch.no_grad()
    def traverse(
        self, z: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None, dim: int, values: Sequence[float]
    ) -> torch.Tensor:
        """Maps along one latent axis: ``z`` with dimension ``dim`` set to each of ``values``.

        Parameters
        ----------
        z : Tensor, shape (z_dim,) or (1, z_dim)
            The starting code (e.g. a study's :meth:`encode`).
        metadata : dict or encoded tensors of one study
        dim : int
        values : sequence of float
            In prior standard deviations.

        Returns
        -------
        Tensor, shape (len(values), C, D, H, W)
        """
        codes = torch.as_tensor(z, dtype=torch.float32).reshape(1, -1).repeat(len(values), 1)
        codes[:, dim] = torch.as_tensor(list(values), dtype=torch.float32)
        meta = self._meta(metadata, 1)
        repeated = {key: value[:1].repeat(len(values), *[1] * (value.dim() - 1)) for key, value in meta.items()}
        return self.decode(codes, repeated)

    @torch.no_grad()
    def prior_codes(
        self, metadata: Metadata | Mapping[str, torch.Tensor] | None, eps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Codes drawn from the prior ``p(z | m)``: ``z = mu(m) + sigma(m) * eps``; the prior mean without ``eps``.

        Parameters
        ----------
        metadata : dict, list of dicts or encoded tensors
            ``n`` requests (as in :meth:`decode`).
        eps : Tensor, shape (n, z_dim) or (k, z_dim) for one request, optional
            Standard-normal draws; the same ``eps`` under other metadata is the same
            study moved there (common random numbers, as a counterfactual keeps it).

        Returns
        -------
        Tensor, shape (n, z_dim) (or (k, z_dim)), on the CPU
        """
        n = 1 if eps is None else eps.shape[0]
        mu, logvar = self.network.prior(self._meta(metadata, n), n)
        if eps is None:
            return mu.cpu()
        return (mu + torch.exp(0.5 * logvar) * eps.to(mu.device)).cpu()

    @torch.no_grad()
    def generate(self, metadata: Metadata, n_samples: int = 0, seed: int = 0) -> torch.Tensor:
        """Maps from metadata alone: decode the prior mean ``mu(m)`` (``n_samples=0``) or average prior samples.

        Parameters
        ----------
        metadata : dict or list of dicts
            As in :meth:`decode`.
        n_samples : int
            Samples of ``p(z | m)`` per request (the network's
            :meth:`~sematlas.models.base.VolumetricVAE.generate`), drawn from a generator
            seeded with ``seed``; 0 decodes the prior mean.
        seed : int

        Returns
        -------
        Tensor, shape (n_requests, C, D, H, W)
        """
        if n_samples == 0:
            meta = self._meta(metadata, 1)
            return self.to_native(self.network.generate_mean(meta, meta["cond"].shape[0]))
        return self.generate_spread(metadata, n_samples, seed)[0]

    @torch.no_grad()
    def generate_spread(
        self, metadata: Metadata, n_samples: int = 32, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps from metadata alone with their spread over samples of the prior ``p(z | m)``.

        Parameters
        ----------
        metadata : dict or list of dicts
            As in :meth:`decode`.
        n_samples : int
            Prior samples per request, at least 2.
        seed : int

        Returns
        -------
        mean, sd : Tensor, shape (n_requests, C, D, H, W)
            The average decoded map and the voxel-wise standard deviation of the samples
            (how much the map depends on what the metadata leaves open), on the native grid.
        """
        if n_samples < 2:
            raise ValueError(f"a spread needs at least 2 prior samples, got {n_samples}")
        meta = self._meta(metadata, 1)
        n = meta["cond"].shape[0]
        generator = torch.Generator().manual_seed(seed)
        total = torch.zeros(n, self.config.in_channels, *self.grid.shape, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        # One sample at a time, so memory stays at one batch of maps on the network grid.
        for _ in range(n_samples):
            sample = self.to_native(self.network.generate(meta, 1, generator)[0]).cpu().double()
            total += sample
            total_sq += sample.square()
        mean = total / n_samples
        variance = (total_sq - n_samples * mean.square()).clamp_min(0.0) / (n_samples - 1)
        return mean.float(), variance.sqrt().float()

    @torch.no_grad()
    def move_codes(
        self,
        z: torch.Tensor,
        metadata: Metadata | Mapping[str, torch.Tensor],
        new_metadata: Metadata | Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """Codes of studies as they would be under other metadata: keep each study's residual, change ``m``.

        Abduction, then action (Pearl 2009): ``eps = (z - mu(m)) / sigma(m)``, then
        ``z' = mu(m') + sigma(m') * eps`` (:meth:`~sematlas.models.base.VolumetricVAE.counterfactual`);
        with the standard prior ``N(0, I)`` the code is unchanged.

        Parameters
        ----------
        z : Tensor, shape (n, z_dim)
            Codes (e.g. :meth:`encode`) of studies with metadata ``metadata``.
        metadata, new_metadata : dict, list of dicts or encoded tensors
            The studies' own metadata and the metadata to move them to (one request or ``n``).

        Returns
        -------
        Tensor, shape (n, z_dim), on the CPU
        """
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        n = z.shape[0]
        return self.network.counterfactual(z, self._meta(metadata, n), self._meta(new_metadata, n)).cpu()

    @torch.no_grad()
    def counterfactual(
        self,
        maps: torch.Tensor,
        metadata: Metadata | Mapping[str, torch.Tensor],
        new_metadata: Metadata | Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """Maps of studies under other metadata: their codes moved by :meth:`move_codes`, decoded with ``new_metadata``.

        Parameters
        ----------
        maps : Tensor, shape (n, C, D, H, W)
            On the native or the network grid.
        metadata, new_metadata : dict, list of dicts or encoded tensors
            As in :meth:`move_codes`.

        Returns
        -------
        Tensor, shape (n, C, D, H, W), on the native grid
        """
        z = self.encode(maps, metadata)
        return self.decode(self.move_codes(z, metadata, new_metadata), new_metadata)

    def to_nifti(self, volume: torch.Tensor | np.ndarray, channel: int = -1) -> nib.Nifti1Image:
        """A map as a NIfTI image in MNI152 space (the model's grid and affine).

        Parameters
        ----------
        volume : array, shape (D, H, W) or (C, D, H, W)
            A channel is picked from a multi-channel map (default: the widest kernel).
        """
        data = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume, dtype=np.float32)
        if data.ndim == 4:
            data = data[channel]
        if data.shape != self.grid.shape:
            raise ValueError(f"expected a map on the {self.grid.shape} grid, got shape {data.shape}")
        image = nib.Nifti1Image(data, self.grid.affine)
        image.header.set_xyzt_units("mm")
        image.header["descrip"] = f"sematlas {self.variant} ({self.payload['profile']})".encode()[:79]
        image.set_qform(self.grid.affine, code=4)  # 4 = MNI152
        image.set_sform(self.grid.affine, code=4)
        return image
