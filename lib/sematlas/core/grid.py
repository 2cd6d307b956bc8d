"""MNI152 voxel grids and brain masks at the resolutions the profiles use.

Both grids share the origin of NiMARE's ``mni152_2mm`` template (FSL's MNI152
2 mm grid, 91 x 109 x 91, world origin at (-90, -126, -72) mm), so a peak
lands in the same place at either resolution. The networks see a padded grid
whose sides are powers of two (64^3 at 4 mm, 128^3 at 2 mm); the native grid is
placed at the low corner of the padded one, so native voxel indices are also
padded voxel indices: :func:`pad_to` and :func:`crop_to` go between the two.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import nibabel as nib

_ORIGIN_MM = np.array([-90.0, -126.0, -72.0])
_EXTENT_2MM = np.array([91, 109, 91])


@dataclass(frozen=True)
class Grid:
    """A regular MNI152 voxel grid.

    Parameters
    ----------
    voxel_size : int
        Isotropic voxel size in millimetres (2 or 4).
    """

    voxel_size: int

    def __post_init__(self) -> None:
        if self.voxel_size not in (2, 4):
            raise ValueError(f"voxel_size must be 2 or 4 mm, got {self.voxel_size!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Native grid shape ``(D, H, W)``: (91, 109, 91) at 2 mm, (46, 55, 46) at 4 mm."""
        extent = np.ceil((_EXTENT_2MM - 1) * 2 / self.voxel_size).astype(int) + 1
        return (int(extent[0]), int(extent[1]), int(extent[2]))

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        """Network grid shape: the next power of two of the largest side, cubed."""
        side = 1 << int(np.ceil(np.log2(max(self.shape))))
        return (side, side, side)

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-MNI-millimetre affine, shape ``(4, 4)``."""
        affine = np.eye(4)
        affine[:3, :3] *= self.voxel_size
        affine[:3, 3] = _ORIGIN_MM
        return affine

    def mm_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Nearest voxel indices of MNI coordinates.

        Parameters
        ----------
        xyz : ndarray, shape (n_peaks, 3)
            Coordinates in millimetres.

        Returns
        -------
        ndarray of int64, shape (n_peaks, 3)
            Voxel indices; they may fall outside the grid (see :meth:`contains`).
        """
        ijk = (np.asarray(xyz, dtype=float) - _ORIGIN_MM) / self.voxel_size
        return np.rint(ijk).astype(np.int64)

    def contains(self, ijk: np.ndarray) -> np.ndarray:
        """Whether each voxel index ``(n, 3)`` lies inside the native grid, shape ``(n,)``."""
        ijk = np.asarray(ijk)
        return np.all((ijk >= 0) & (ijk < np.array(self.shape)), axis=1)

    def mask(self) -> np.ndarray:
        """Boolean brain mask of the native grid, shape ``(D, H, W)``."""
        return _brain_mask(self.voxel_size).copy()

    def to_nifti(self, data: np.ndarray, description: str = "sematlas") -> nib.Nifti1Image:
        """A map on this grid as a NIfTI-1 image in MNI152 space.

        Parameters
        ----------
        data : ndarray, shape (D, H, W) or (D, H, W, T)
            Values on the native grid (a fourth axis for a series, e.g. over years).
        description : str
            The header's ``descrip`` (at most 79 bytes are kept).

        Returns
        -------
        nibabel.Nifti1Image
            float32, millimetre units, qform and sform set to the grid's affine with
            code 4 (MNI152), so viewers place every voxel at its MNI coordinate.

        Raises
        ------
        ValueError
            Data whose first three axes are not the grid's shape.
        """
        import nibabel as nib

        data = np.asarray(data, dtype=np.float32)
        if data.shape[:3] != self.shape or data.ndim not in (3, 4):
            raise ValueError(f"expected a map on the {self.shape} grid (3-D or 4-D), got shape {data.shape}")
        image = nib.Nifti1Image(data, self.affine)
        image.header.set_xyzt_units("mm")
        image.header["descrip"] = description.encode()[:79]
        image.set_qform(self.affine, code=4)
        image.set_sform(self.affine, code=4)
        return image


def pad_to(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last three axes of ``(..., D, H, W)`` at their high end up to ``shape`` (the padded grid)."""
    d, h, w = volume.shape[-3:]
    return F.pad(volume, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - d))


def crop_to(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The native grid ``(..., D, H, W)`` of ``shape`` at the low corner of padded maps (undoes :func:`pad_to`)."""
    d, h, w = shape
    return volume[..., :d, :h, :w]


@lru_cache(maxsize=2)
def _brain_mask(voxel_size: int) -> np.ndarray:
    """NiMARE's MNI152 brain mask resampled (nearest) onto the grid of ``voxel_size``."""
    import nibabel as nib
    from nilearn.image import resample_img
    from nimare.utils import get_template

    template = get_template("mni152_2mm", mask="brain")
    grid = Grid(voxel_size)
    if voxel_size == 2:
        data = np.asarray(template.get_fdata()) > 0
    else:
        # Resample the mask as a fraction of brain per 4 mm voxel, keep voxels over half brain.
        fraction = nib.Nifti1Image(np.asarray(template.get_fdata(), dtype=np.float32), template.affine)
        with warnings.catch_warnings():
            # nilearn warns on a 0/1 image; continuous is intended: it gives the brain fraction.
            warnings.simplefilter("ignore", UserWarning)
            resampled = resample_img(
                fraction,
                target_affine=grid.affine,
                target_shape=grid.shape,
                interpolation="continuous",
                force_resample=True,
                copy_header=True,
            )
        data = np.asarray(resampled.get_fdata()) > 0.5
    return data
