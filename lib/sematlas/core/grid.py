"""MNI152 voxel grids and brain masks at the resolutions the profiles use.

Both grids share the origin of NiMARE's ``mni152_2mm`` template (FSL's MNI152
2 mm grid, 91 x 109 x 91, world origin at (-90, -126, -72) mm), so a peak
lands in the same place at either resolution. The networks see a tighter box:
the brain mask's bounding box grown, about its centre, to the next multiple of
:data:`NETWORK_MULTIPLE` per side (48 x 48 x 48 at 4 mm, 80 x 96 x 80 at 2 mm,
against 64^3 and 128^3 for the next power of two cubed: 2.4 and 3.4 times fewer
voxels). :meth:`Grid.to_network` and :meth:`Grid.to_native` go between the two
exactly: every voxel of the box keeps its MNI coordinate, and the native voxels
outside it are outside the brain.
"""

from __future__ import annotations

import warnings
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

#: Every side of the network grid is a multiple of this: the convolutional decoders
#: start from 1/16 of the grid and double four times, the encoders halve likewise.
NETWORK_MULTIPLE = 16


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
    def network_shape(self) -> tuple[int, int, int]:
        """Shape ``(d, h, w)`` of the grid the networks see: (48, 48, 48) at 4 mm, (80, 96, 80) at 2 mm."""
        return _network_box(self.voxel_size)[1]

    @property
    def network_origin(self) -> tuple[int, int, int]:
        """Native voxel index of the network grid's first voxel (negative where the box overhangs the grid)."""
        return _network_box(self.voxel_size)[0]

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

    def network_mask(self) -> np.ndarray:
        """The brain mask on the network grid, shape :attr:`network_shape`.

        ``maps[..., network_mask()]`` of network-grid maps lists the voxels of
        ``native[..., mask()]`` in the same order: the box is a translation of the grid.
        """
        return self.to_network(torch.from_numpy(self.mask())).numpy()

    def to_network(self, volume: torch.Tensor) -> torch.Tensor:
        """Native maps ``(..., D, H, W)`` on the network grid ``(..., d, h, w)``, zero where the box overhangs."""
        if tuple(volume.shape[-3:]) != self.shape:
            raise ValueError(f"expected maps on the native {self.shape} grid, got shape {tuple(volume.shape)}")
        return F.pad(volume, self._pads())

    def to_native(self, volume: torch.Tensor) -> torch.Tensor:
        """Network-grid maps ``(..., d, h, w)`` back on the native grid ``(..., D, H, W)`` (zero outside the box).

        Undoes :meth:`to_network` on every voxel of the box, which holds the whole brain mask.
        """
        if tuple(volume.shape[-3:]) != self.network_shape:
            raise ValueError(f"expected maps on the network {self.network_shape} grid, got shape {tuple(volume.shape)}")
        return F.pad(volume, [-pad for pad in self._pads()])

    def _pads(self) -> list[int]:
        """``F.pad`` amounts from the native grid to the box, last axis first (negative amounts crop)."""
        pads: list[int] = []
        for origin, side, extent in reversed(list(zip(self.network_origin, self.network_shape, self.shape))):
            pads += [-origin, origin + side - extent]
        return pads


def mask_box(mask: torch.Tensor) -> tuple[slice, slice, slice]:
    """Bounding box of a 3-D boolean mask: the slices outside which it is all False."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(mask.any(dim=other)).flatten()
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.numel() else slice(0, 0))
    return box[0], box[1], box[2]


@lru_cache(maxsize=2)
def _network_box(voxel_size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(origin, shape)`` of the network grid: the mask's bounding box grown about its centre to multiples."""
    hits = np.argwhere(_brain_mask(voxel_size))
    low, extent = hits.min(axis=0), hits.max(axis=0) - hits.min(axis=0) + 1
    shape = -(-extent // NETWORK_MULTIPLE) * NETWORK_MULTIPLE
    origin = low - (shape - extent) // 2
    return (int(origin[0]), int(origin[1]), int(origin[2])), (int(shape[0]), int(shape[1]), int(shape[2]))


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
