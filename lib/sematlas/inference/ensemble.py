"""Deep-ensemble predictions of the main volumetric model: mean, aleatoric and epistemic maps.

An :class:`AtlasEnsemble` holds the members that stage 04 trained
(:mod:`sematlas.training.ensemble`): the snapshots of one cyclical run, K
independently seeded runs, or one model run ``S`` times with dropout on (MC
dropout). Every member has an aleatoric decoder (per-voxel mean and variance).
For ``P`` passes with means ``mu_p`` and variances ``s2_p`` the predictive
distribution is the Gaussian with the mixture's first two moments
(Lakshminarayanan et al. 2017; :func:`combine`)::

    mean      = (1/P) sum_p mu_p
    aleatoric = (1/P) sum_p s2_p                 # noise the models expect in the data
    epistemic = (1/P) sum_p (mu_p - mean)^2      # disagreement between the models
    variance  = aleatoric + epistemic

>>> ensemble = AtlasEnsemble.load("data/models/quick/ensemble/snapshot/snapshots")  # doctest: +SKIP
>>> prediction = ensemble.generate({"task": "pain"})                                # doctest: +SKIP
>>> ensemble.to_nifti(prediction.epistemic[0]).to_filename("pain_epistemic.nii.gz") # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from sematlas.core.errors import CheckpointError
from sematlas.core.grid import Grid
from sematlas.core.io import write_nifti
from sematlas.inference.atlas import AtlasModel, Metadata


@dataclass(frozen=True)
class EnsemblePrediction:
    """Predictive moments of an ensemble, each of shape ``(n, C, D, H, W)`` on the native grid.

    Attributes
    ----------
    mean : Tensor
        Mean over passes of the predicted mean maps.
    aleatoric : Tensor
        Mean over passes of the predicted per-voxel variances.
    epistemic : Tensor
        Variance over passes of the predicted mean maps (population variance:
        zero for identical members).
    """

    mean: torch.Tensor
    aleatoric: torch.Tensor
    epistemic: torch.Tensor

    @property
    def variance(self) -> torch.Tensor:
        """Total predictive variance ``aleatoric + epistemic``."""
        return self.aleatoric + self.epistemic


def combine(means: torch.Tensor, variances: torch.Tensor) -> EnsemblePrediction:
    """Moments of an equally weighted Gaussian mixture (see the module docstring).

    Parameters
    ----------
    means, variances : Tensor, shape (P, n, C, D, H, W)
        Each pass's predicted mean and aleatoric variance.

    Returns
    -------
    EnsemblePrediction
    """
    if means.shape != variances.shape:
        raise ValueError(f"means {tuple(means.shape)} and variances {tuple(variances.shape)} differ in shape")
    return EnsemblePrediction(mean=means.mean(0), aleatoric=variances.mean(0), epistemic=means.var(0, unbiased=False))


_DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@contextlib.contextmanager
def _stochastic_pass(model: nn.Module, seed: int) -> Iterator[None]:
    """Dropout layers in training mode (everything else as it was), with a seeded global RNG.

    Only the dropout modules change mode: the VAE keeps ``z = mu`` and the
    imputation head its mean (both follow the model's own ``training`` flag).
    """
    dropouts = [m for m in model.modules() if isinstance(m, _DROPOUT_LAYERS)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in dropouts:
            module.train()
        try:
            yield
        finally:
            for module in dropouts:
                module.eval()


class AtlasEnsemble:
    """Members of an ensemble of trained atlas models, predicting mean, aleatoric and epistemic maps.

    Each member is an :class:`~sematlas.inference.atlas.AtlasModel` (same loading rules and
    errors). Members have their own latent spaces, so :meth:`encode` returns one
    code per pass and :meth:`decode` takes them back; :meth:`reconstruct` chains both.

    Parameters
    ----------
    members : sequence of AtlasModel
        One or more models on the same grid, with the same channels, variant and task categories.
    mc_samples : int
        0: each member predicts once, deterministically. ``S > 0``: MC dropout,
        each member predicts ``S`` times with dropout on (pass ``s`` seeded ``seed + s``).
    seed : int
        Seeds the MC-dropout passes, so predictions are reproducible.

    Raises
    ------
    CheckpointError
        Members that do not fit together (naming the first mismatch).
    ValueError
        No members, or MC dropout on a model trained without dropout.
    """

    def __init__(self, members: Sequence[AtlasModel], mc_samples: int = 0, seed: int = 0) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0, got {mc_samples!r}")
        first = members[0]
        for k, member in enumerate(members[1:], start=2):
            checks = {
                "grid (voxel size, mm)": (first.grid.voxel_size, member.grid.voxel_size),
                "variant": (first.variant, member.variant),
                "channels": (first.config.in_channels, member.config.in_channels),
                "task categories": (list(first.encoder.categories), list(member.encoder.categories)),
            }
            for name, (expected, got) in checks.items():
                if expected != got:
                    raise CheckpointError(
                        f"ensemble member {k} does not match member 1: {name} {got!r} instead of {expected!r}"
                    )
        if mc_samples and any(member.config.dropout == 0 for member in members):
            raise ValueError("MC dropout needs members trained with dropout > 0 (ModelConfig.dropout)")
        self.members = list(members)
        self.mc_samples = mc_samples
        self.seed = seed

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        mc_samples: int = 0,
        seed: int = 0,
        map_location: str = "cpu",
        voxel_size: int | None = None,
    ) -> AtlasEnsemble:
        """Load members from checkpoint files or from a folder of them.

        Parameters
        ----------
        source : path or sequence of paths
            A folder (its ``*.ckpt`` files in name order; a run folder's
            ``snapshots/`` when it has one), one checkpoint, or a list of checkpoints.
        mc_samples, seed : int
            See :class:`AtlasEnsemble`.
        map_location : str
        voxel_size : int, optional
            The grid the caller works on (see :meth:`AtlasModel.load`).

        Raises
        ------
        CheckpointError
            No checkpoint found, or any error of :meth:`AtlasModel.load`, or members that do not fit together.
        """
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                folder = path / "snapshots" if (path / "snapshots").is_dir() else path
                paths = sorted(folder.glob("*.ckpt"))
                if not paths:
                    raise CheckpointError(f"no checkpoints (*.ckpt) in {folder}")
            else:
                paths = [path]
        else:
            paths = [Path(p) for p in source]
        members = [AtlasModel.load(p, map_location=map_location, voxel_size=voxel_size) for p in paths]
        return cls(members, mc_samples=mc_samples, seed=seed)

    # --------------------------------------------------------------- properties
    @property
    def grid(self) -> Grid:
        return self.members[0].grid

    @property
    def n_passes(self) -> int:
        """Predictions per map: members times MC samples."""
        return len(self.members) * max(self.mc_samples, 1)

    def _passes(self) -> Iterator[AtlasModel]:
        """Each member once, or ``mc_samples`` times with dropout on."""
        for member in self.members:
            if not self.mc_samples:
                yield member
                continue
            for s in range(self.mc_samples):
                with _stochastic_pass(member.network, self.seed + s):
                    yield member

    # ------------------------------------------------------------------ inference
    def encode(self, maps: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Posterior means of maps under every pass.

        Parameters
        ----------
        maps : Tensor, shape (n, C, D, H, W)
        metadata : dict, list of dicts or encoded tensors

        Returns
        -------
        Tensor, shape (n_passes, n, z_dim)
        """
        return torch.stack([member.encode(maps, metadata) for member in self._passes()])

    def decode(
        self, z: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None
    ) -> EnsemblePrediction:
        """Predictive moments of maps from latents.

        Parameters
        ----------
        z : Tensor, shape (n_passes, n, z_dim) or (n, z_dim)
            One code per pass (from :meth:`encode`), or one code for all, which
            only makes sense where latent spaces agree: at the prior mean (z = 0)
            or for prior samples.
        metadata : dict, list of dicts or encoded tensors

        Returns
        -------
        EnsemblePrediction
        """
        z = torch.as_tensor(z, dtype=torch.float32)
        codes = z if z.dim() == 3 else z.expand(self.n_passes, *z.shape)
        if codes.shape[0] != self.n_passes:
            raise ValueError(f"expected {self.n_passes} codes per map (one per pass), got {codes.shape[0]}")
        means, variances = zip(
            *(member.decode_distribution(code, metadata) for member, code in zip(self._passes(), codes, strict=True)),
            strict=True,
        )
        return combine(torch.stack(means), torch.stack(variances))

    def reconstruct(
        self, maps: torch.Tensor, metadata: Metadata | Mapping[str, torch.Tensor] | None = None
    ) -> EnsemblePrediction:
        """Encode then decode under each pass (one dropout mask per pass for both).

        Parameters
        ----------
        maps : Tensor, shape (n, C, D, H, W)
            On the native or the network grid.
        metadata : dict, list of dicts or encoded tensors

        Returns
        -------
        EnsemblePrediction
        """
        means, variances = [], []
        for member in self._passes():
            mean, variance = member.decode_distribution(member.encode(maps, metadata), metadata)
            means.append(mean)
            variances.append(variance)
        return combine(torch.stack(means), torch.stack(variances))

    def _prior_codes(self, metadata: Metadata, eps: torch.Tensor | None) -> torch.Tensor:
        """Each pass's codes ``mu(m) + sigma(m) * eps`` (its prior mean without ``eps``), (n_passes, n, z_dim)."""
        return torch.stack([member.prior_codes(metadata, eps) for member in self._passes()])

    def generate(self, metadata: Metadata, n_samples: int = 0, seed: int = 0) -> EnsemblePrediction:
        """Conditional generation from metadata alone.

        Parameters
        ----------
        metadata : dict or list of dicts
            E.g. ``{"task": "pain", "year": 2012}``.
        n_samples : int
            0 decodes each pass's prior mean ``mu(m)``; ``n > 0`` averages the moments over
            ``n`` prior samples (the same standard-normal draws for every pass, each
            through its own ``p(z | m)``).
        seed : int
            Seeds the prior samples.

        Returns
        -------
        EnsemblePrediction
            One map per request.
        """
        n = 1 if isinstance(metadata, Mapping) else len(metadata)
        z_dim = self.members[0].z_dim
        if n_samples == 0:
            return self.decode(self._prior_codes(metadata, None), metadata)
        generator = torch.Generator().manual_seed(seed)
        # Every pass decodes the same standard-normal draw under its own prior p(z | m).
        draws = [
            self.decode(self._prior_codes(metadata, torch.randn(n, z_dim, generator=generator)), metadata)
            for _ in range(n_samples)
        ]
        return EnsemblePrediction(
            *(torch.stack([getattr(d, field) for d in draws]).mean(0) for field in ("mean", "aleatoric", "epistemic"))
        )

    def to_nifti(self, volume: torch.Tensor | np.ndarray, channel: int = -1) -> nib.Nifti1Image:
        """A map (e.g. ``prediction.epistemic[0]``) as a NIfTI image on the members' grid and affine."""
        return self.members[0].to_nifti(volume, channel=channel)


def write_uncertainty_maps(
    ensemble: AtlasEnsemble, prediction: EnsemblePrediction, names: Sequence[str], folder: str | os.PathLike[str]
) -> list[Path]:
    """Write ``<name>_{mean,aleatoric,epistemic}.nii.gz`` for each predicted map (widest kernel), atomically.

    Parameters
    ----------
    ensemble : AtlasEnsemble
        Gives the grid and affine.
    prediction : EnsemblePrediction
        ``n`` maps.
    names : sequence of str
        One file stem per map (e.g. the task category).
    folder : path

    Returns
    -------
    list of Path
        The files written, three per map.
    """
    if len(names) != prediction.mean.shape[0]:
        raise ValueError(f"{len(names)} names for {prediction.mean.shape[0]} maps")
    written = []
    for i, name in enumerate(names):
        for field in ("mean", "aleatoric", "epistemic"):
            image = ensemble.to_nifti(getattr(prediction, field)[i])
            written.append(write_nifti(image, Path(folder) / f"{name}_{field}.nii.gz"))
    return written


__all__ = ["AtlasEnsemble", "EnsemblePrediction", "combine", "write_uncertainty_maps"]
