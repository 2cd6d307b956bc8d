"""Inference on a trained atlas model: encode maps, decode latents with metadata, write NIfTI.

>>> atlas = AtlasModel.load("data/models/quick/cbvae/checkpoints/best.ckpt")   # doctest: +SKIP
>>> maps = atlas.generate({"task": "working_memory", "year": 2012})             # doctest: +SKIP
>>> atlas.to_nifti(maps[0]).to_filename("working_memory_2012.nii.gz")           # doctest: +SKIP

Everything needed is in the checkpoint: the architecture (the LightningModule's
hyperparameters), the weights and brain mask, and under ``checkpoint["sematlas"]``
the metadata encoder fitted on the training split, the grid and the kernels.
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
from sematlas.data.datamodule import pad_to
from sematlas.training.module import AtlasModule

Metadata = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class AtlasModel:
    """A trained volumetric model ready for inference (eval mode, CPU by default).

    Parameters
    ----------
    module : AtlasModule
    encoder : MetadataEncoder
    payload : mapping
        ``checkpoint["sematlas"]``: profile, variant, voxel size, kernels.

    Use :meth:`load` rather than the constructor.
    """

    def __init__(self, module: AtlasModule, encoder: MetadataEncoder, payload: Mapping[str, Any]) -> None:
        self.module = module.eval()
        self.encoder = encoder
        self.payload = dict(payload)

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
            Not a sematlas checkpoint; weights that do not match the architecture
            (listing missing and unexpected keys); a grid other than ``voxel_size``.
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
        module = AtlasModule(**hparams)
        result = module.load_state_dict(state["state_dict"], strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{checkpoint}: weights do not match the '{hparams['config']['variant']}' architecture "
                f"saved with them; missing keys: {list(result.missing_keys)}; "
                f"unexpected keys: {list(result.unexpected_keys)}"
            )
        return cls(module.to(map_location), MetadataEncoder.from_dict(payload["metadata_encoder"]), payload)

    # --------------------------------------------------------------- properties
    @property
    def variant(self) -> str:
        return str(self.payload["variant"])

    @property
    def grid(self) -> Grid:
        return Grid(int(self.payload["voxel_size"]))

    @property
    def z_dim(self) -> int:
        return int(self.module.config.z_dim)

    @property
    def is_conditional(self) -> bool:
        """Whether the decoder uses the metadata (``cbvae``)."""
        return self.variant == "cbvae"

    @property
    def is_aleatoric(self) -> bool:
        """Whether the decoder predicts a per-voxel variance (``ModelConfig.aleatoric``)."""
        return bool(self.module.config.aleatoric)

    @property
    def device(self) -> torch.device:
        return self.module.mask.device

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
        """Crop ``(..., G, G, G)`` padded maps to the native grid ``(..., D, H, W)`` and zero them outside the brain."""
        d, h, w = self.grid.shape
        return volume[..., :d, :h, :w] * torch.from_numpy(self.grid.mask()).to(volume.device)

    @torch.no_grad()
    def encode(self, maps: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Posterior means of maps.

        Parameters
        ----------
        maps : Tensor, shape (n, C, D, H, W)
            On the native or the padded grid of the model.
        metadata : dict, list of dicts or encoded tensors
            Required by conditional models (their encoder is FiLM-modulated).

        Returns
        -------
        Tensor, shape (n, z_dim)
        """
        image = pad_to(maps.float().to(self.device), self.grid.padded_shape)
        mu, _ = self.module.model.encode(image, self._meta(metadata, image.shape[0]))
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
        return self.to_native(self.module.model.decode(z, meta))

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
            mean = self.to_native(self.module.model.decode(z, meta))
            return mean, torch.zeros_like(mean)
        mean, logvar = self.module.model.decode_distribution(z, meta)
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
    def generate(self, metadata: Metadata, n_samples: int = 0, seed: int = 0) -> torch.Tensor:
        """Maps from metadata alone: decode the prior mean (``n_samples=0``) or average prior samples.

        Returns
        -------
        Tensor, shape (n_requests, C, D, H, W)
        """
        meta = self._meta(metadata, 1)
        n = meta["cond"].shape[0]
        if n_samples == 0:
            return self.decode(torch.zeros(n, self.z_dim), meta)
        generator = torch.Generator().manual_seed(seed)
        total = torch.zeros(n, self.module.config.in_channels, *self.grid.shape)
        for _ in range(n_samples):
            total += self.decode(torch.randn(n, self.z_dim, generator=generator), meta).cpu()
        return total / n_samples

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
