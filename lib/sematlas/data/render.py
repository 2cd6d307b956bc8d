"""Peaks to Gaussian density maps, fast enough to render on the fly.

A study's map is the sum, over its peaks, of a 3-D Gaussian centred on the
peak's voxel, one channel per kernel FWHM (dual kernel, 6 and 12 mm), masked to
the brain and divided by its maximum (peak normalisation). :func:`reference_render`
computes it the plain way (a peak-count volume smoothed by
``scipy.ndimage.gaussian_filter``); :class:`PeakRenderer` computes the same maps
50-100x faster (``benchmarks/render_benchmark.py``) and is what training uses.

Why it is fast: a Gaussian is separable, so one peak contributes
``gx[i] * gy[j] * gz[k]`` on a patch of ``(2r + 1)^3`` voxels only (21^3 at
12 mm FWHM on the 2 mm grid). A study of ~35 peaks is therefore ~0.3 M
multiply-adds when each peak's patch is added ("splatted") into the study's
volume, against ~31 M for a dense separable convolution of the whole volume.
The splat, masking and normalisation run in one compiled numba pass, parallel
over studies, writing straight into the output tensor; what remains is mostly
the unavoidable cost of writing 3.6 MB per study and channel at 2 mm.

Threads and processes: unless ``NUMBA_THREADING_LAYER`` is set, importing this
module selects numba's built-in ``workqueue`` threading layer. The default one
here (GNU OpenMP) hangs or aborts a forked child, such as a PyTorch DataLoader
worker, once the parent has used OpenMP (torch does); ``workqueue`` survives the
fork and renders as fast. It does not allow concurrent launches, so calls from
several Python threads are serialised by a lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numba
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from sematlas.core.grid import Grid

__all__ = ["PeakRenderer", "gaussian_kernel_1d", "reference_render"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

# Fork-safe threading layer for DataLoader workers (see the module docstring).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]  # not in numba's stubs
_LAUNCH_LOCK = threading.Lock()


def _new_launch_lock() -> None:
    """Give a forked child a fresh lock (the parent's may have been held by another thread)."""
    global _LAUNCH_LOCK
    _LAUNCH_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_launch_lock)


def gaussian_kernel_1d(fwhm_mm: float, voxel_size: float, truncate: float = 4.0) -> np.ndarray:
    """The discrete 1-D Gaussian that ``scipy.ndimage.gaussian_filter`` applies.

    Parameters
    ----------
    fwhm_mm : float
        Full width at half maximum in millimetres.
    voxel_size : float
        Voxel size in millimetres.
    truncate : float, default 4.0
        Half-width of the kernel in standard deviations, as in scipy.

    Returns
    -------
    ndarray of float64, shape (2 * radius + 1,)
        Weights summing to 1, centre at index ``radius``, where
        ``sigma = fwhm_mm / (2 sqrt(2 ln 2)) / voxel_size`` (voxels) and
        ``radius = int(truncate * sigma + 0.5)``.
    """
    if not (np.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise ValueError(f"fwhm_mm must be a positive number, got {fwhm_mm!r}")
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
    if not (np.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate must be a positive number, got {truncate!r}")
    sigma = fwhm_mm * _FWHM_TO_SIGMA / voxel_size
    # Same radius and weights as scipy.ndimage._filters._gaussian_kernel1d, so the
    # fast renderer and the scipy reference agree to float rounding.
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * x**2 / sigma**2)
    return weights / weights.sum()


def _validate_peaks(ijk: np.ndarray, study_index: np.ndarray, n_studies: int) -> tuple[np.ndarray, np.ndarray]:
    """Check peak arrays and return them as int64 arrays ``(n_peaks, 3)`` and ``(n_peaks,)``."""
    if isinstance(n_studies, bool) or not isinstance(n_studies, (int, np.integer)) or n_studies < 0:
        raise ValueError(f"n_studies must be a non-negative integer, got {n_studies!r}")
    ijk = np.asarray(ijk)
    study_index = np.asarray(study_index)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f"ijk must have shape (n_peaks, 3), got {ijk.shape}")
    if study_index.shape != (ijk.shape[0],):
        raise ValueError(f"study_index must have shape (n_peaks,) = ({ijk.shape[0]},), got {study_index.shape}")
    for name, arr in (("ijk", ijk), ("study_index", study_index)):
        if arr.dtype.kind == "f":
            # Voxel indices computed in floating point: accept whole numbers only.
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")
            if np.any(arr != np.round(arr)):
                raise ValueError(f"{name} must hold integer voxel indices, got fractional values")
        elif arr.dtype.kind not in "iu" and arr.size:
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    ijk = ijk.astype(np.int64, copy=False)
    study_index = study_index.astype(np.int64, copy=False)
    if study_index.size and (study_index.min() < 0 or study_index.max() >= n_studies):
        raise ValueError(
            f"study_index must lie in [0, n_studies={n_studies}), "
            f"got values in [{study_index.min()}, {study_index.max()}]"
        )
    return ijk, study_index


def reference_render(
    ijk: np.ndarray,
    study_index: np.ndarray,
    n_studies: int,
    grid: Grid,
    fwhms: Sequence[float],
    truncate: float = 4.0,
) -> np.ndarray:
    """Render density maps the plain way (scipy), as the ground truth for :class:`PeakRenderer`.

    Parameters
    ----------
    ijk : array-like of int, shape (n_peaks, 3)
        Voxel indices of the peaks on ``grid``; peaks outside the grid are ignored.
    study_index : array-like of int, shape (n_peaks,)
        Study of each peak, in ``[0, n_studies)``.
    n_studies : int
        Number of studies (rows of the output; studies without peaks are all zero).
    grid : Grid
        The voxel grid and brain mask.
    fwhms : sequence of float, length C
        Kernel FWHMs in millimetres, one output channel each.
    truncate : float, default 4.0
        Kernel half-width in standard deviations.

    Returns
    -------
    ndarray of float32, shape (n_studies, C, D, H, W)
        Per study: peak counts (duplicate peaks count twice) smoothed by
        ``gaussian_filter(mode="constant")``, multiplied by the brain mask, and
        divided by their maximum where that is positive.
    """
    ijk, study_index = _validate_peaks(ijk, study_index, n_studies)
    inside = grid.contains(ijk)
    ijk, study_index = ijk[inside], study_index[inside]
    mask = grid.mask()
    out = np.zeros((n_studies, len(fwhms), *grid.shape), dtype=np.float32)
    for s in range(n_studies):
        counts = np.zeros(grid.shape)
        np.add.at(counts, tuple(ijk[study_index == s].T), 1.0)
        for c, fwhm in enumerate(fwhms):
            sigma = fwhm * _FWHM_TO_SIGMA / grid.voxel_size
            smooth = gaussian_filter(counts, sigma, mode="constant", cval=0.0, truncate=truncate) * mask
            peak = smooth.max()
            out[s, c] = smooth / peak if peak > 0 else smooth
    return out


# The compiled kernel. Notes on the formulation, all measured on 2 cores at 2 mm:
# - Flat arrays indexed with unsigned (uint64) offsets: numba wraps negative
#   indices, and that check on a signed offset stops LLVM from vectorising the
#   row loops (scalar code ran at under half the speed). Array views per row are
#   avoided too: each view is a reference-count update shared between threads.
# - Each peak adds 21 x 21 contiguous rows of 21 voxels (12 mm at 2 mm); the
#   rows a study touches are tracked as a [lo, hi) range per (i, j) row, so
#   masking, the maximum and the division visit touched voxels only.
# - The maximum of non-negative floats equals the maximum of their bit patterns
#   read as int32; the integer maximum vectorises, the float one does not
#   (NaN semantics), and it is exact.
# - Output is written in place, zeroed per study inside the parallel loop (the
#   zeroing compiles to memset, at full memory bandwidth). Accumulating in a
#   per-thread scratch volume and copying out measured the same or slower, so
#   the simpler form is kept.
@numba.njit(parallel=True, cache=True, fastmath=False, boundscheck=False, nogil=True)
def _splat(
    ijk: np.ndarray,
    starts: np.ndarray,
    kernels: np.ndarray,
    radii: np.ndarray,
    mask: np.ndarray,
    out: np.ndarray,
    shape: tuple[int, int, int],
) -> None:
    """Render every study into ``out`` (flat, ``(S * C * D * H * W,)``), in place.

    ``ijk`` (n, 3) int64 in-grid voxels sorted by study, the peaks of study ``s``
    being ``starts[s]:starts[s + 1]``; ``kernels`` (C, L) float32 1-D kernels
    (channel ``c`` uses the first ``2 * radii[c] + 1`` weights); ``mask`` flat
    float32 0/1 of ``D * H * W``.
    """
    D, H, W = shape
    n_rows = D * H
    n_vox = n_rows * W
    n_channels = kernels.shape[0]
    out_bits = out.view(np.int32)
    for s in numba.prange(starts.shape[0] - 1):
        lo = np.empty(n_rows, np.int32)
        hi = np.empty(n_rows, np.int32)
        bits = np.empty(1, np.int32)
        for c in range(n_channels):
            vol = np.uint64((s * n_channels + c) * n_vox)
            for v in range(np.uint64(n_vox)):
                out[vol + v] = 0.0
            lo[:] = W
            hi[:] = 0
            r = radii[c]
            for p in range(starts[s], starts[s + 1]):
                pi, pj, pk = ijk[p, 0], ijk[p, 1], ijk[p, 2]
                # Clip the patch to the grid: mode="constant" drops what falls outside.
                i0, i1 = max(pi - r, 0), min(pi + r + 1, D)
                j0, j1 = max(pj - r, 0), min(pj + r + 1, H)
                k0, k1 = max(pk - r, 0), min(pk + r + 1, W)
                g0 = np.uint64(k0 - pk + r)
                n_k = np.uint64(k1 - k0)
                for i in range(i0, i1):
                    gi = kernels[c, i - pi + r]
                    for j in range(j0, j1):
                        w = gi * kernels[c, j - pj + r]
                        row = i * H + j
                        lo[row] = min(lo[row], k0)
                        hi[row] = max(hi[row], k1)
                        base = vol + np.uint64(row * W + k0)
                        for k in range(n_k):
                            out[base + k] += w * kernels[c, g0 + k]
            # Mask (touched voxels only; the rest is already zero) and take the maximum.
            peak_bits = np.int32(0)
            for row in range(n_rows):
                if hi[row] > lo[row]:
                    base = vol + np.uint64(row * W)
                    mbase = np.uint64(row * W)
                    for k in range(np.uint64(lo[row]), np.uint64(hi[row])):
                        out[base + k] *= mask[mbase + k]
                    for k in range(np.uint64(lo[row]), np.uint64(hi[row])):
                        peak_bits = max(peak_bits, out_bits[base + k])
            if peak_bits > 0:
                bits[0] = peak_bits
                peak = bits.view(np.float32)[0]
                for row in range(n_rows):
                    base = vol + np.uint64(row * W)
                    for k in range(np.uint64(lo[row]), np.uint64(hi[row])):
                        out[base + k] /= peak


class PeakRenderer:
    """Fast, peak-normalised Gaussian density maps of studies' peaks (numba, CPU).

    Equal, to float32 rounding, to :func:`reference_render` (scipy's
    ``gaussian_filter``, brain mask, division by the maximum), 50-100x faster.

    Parameters
    ----------
    grid : Grid
        The voxel grid and brain mask to render on.
    fwhms : sequence of float, default (6.0, 12.0)
        Kernel FWHMs in millimetres, one output channel each.
    truncate : float, default 4.0
        Kernel half-width in standard deviations (scipy's ``truncate``).

    Notes
    -----
    The constructor only stores its parameters; kernels and the mask are built on
    the first :meth:`render` and cached. The numba kernel compiles on the very
    first call in a fresh environment (seconds) and is cached on disk after that.
    """

    def __init__(self, grid: Grid, fwhms: Sequence[float] = (6.0, 12.0), truncate: float = 4.0) -> None:
        self.grid = grid
        self.fwhms = fwhms
        self.truncate = truncate

    @property
    def n_channels(self) -> int:
        """Number of kernels (channels of a full render)."""
        return len(self.fwhms)

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kernels ``(C, L)`` float32, radii ``(C,)`` int64 and flat mask float32, cached."""
        key = (self.grid, tuple(float(f) for f in self.fwhms), float(self.truncate))
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != key:
            if not key[1]:
                raise ValueError("fwhms must name at least one kernel")
            kernels_1d = [gaussian_kernel_1d(f, self.grid.voxel_size, self.truncate) for f in key[1]]
            radii = np.array([len(k) // 2 for k in kernels_1d], dtype=np.int64)
            kernels = np.zeros((len(kernels_1d), 2 * radii.max() + 1), dtype=np.float32)
            for c, k in enumerate(kernels_1d):
                kernels[c, : len(k)] = k
            mask = np.ascontiguousarray(self.grid.mask().ravel(), dtype=np.float32)
            self._cache = (key, (kernels, radii, mask))
        return self._cache[1]

    def render(
        self,
        ijk: np.ndarray,
        study_index: np.ndarray,
        n_studies: int,
        flip: np.ndarray | None = None,
        channels: Sequence[int] | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Render the density maps of ``n_studies`` studies.

        Parameters
        ----------
        ijk : array-like of int, shape (n_peaks, 3)
            Voxel indices of the peaks (e.g. ``grid.mm_to_voxel(xyz)``); peaks
            outside the grid are ignored, duplicates count twice.
        study_index : array-like of int, shape (n_peaks,)
            Study of each peak, in ``[0, n_studies)``; any order.
        n_studies : int
            Number of studies S; a study without peaks renders all zero.
        flip : array-like of bool, shape (n_studies,), optional
            Left-right flip per study (augmentation): voxel ``i -> D - 1 - i``
            along axis 0, i.e. ``x -> -x`` for voxel centres.
        channels : sequence of int, optional
            Which kernels to render, as indices into ``fwhms`` (kernel choice as
            augmentation); default all.
        out : torch.Tensor, optional
            Preallocated float32, C-contiguous CPU tensor of shape
            ``(n_studies, C, D, H, W)`` to render into (reuse it across chunks:
            it saves allocating and page-faulting gigabytes).

        Returns
        -------
        torch.Tensor of float32, shape (n_studies, C, D, H, W)
            Masked, peak-normalised maps (max 1 per non-empty study and channel);
            ``out`` if given, else a new tensor sharing memory with no copy.
        """
        ijk, study_index = _validate_peaks(ijk, study_index, n_studies)
        kernels, radii, mask = self._tables()
        if channels is not None:
            picked = np.asarray(channels)
            if picked.ndim != 1 or picked.size == 0 or picked.dtype.kind not in "iu":
                raise ValueError(f"channels must be a non-empty sequence of integers, got {picked!r}")
            if picked.min() < 0 or picked.max() >= len(radii):
                raise ValueError(f"channels must lie in [0, {len(radii)}), got {picked.tolist()}")
            kernels, radii = kernels[picked], radii[picked]
        shape = self.grid.shape
        full_shape = (n_studies, len(radii), *shape)

        if out is None:
            # np.empty: every voxel is written by the kernel, zeroing here would double the traffic.
            out = torch.from_numpy(np.empty(full_shape, dtype=np.float32))
        elif not (
            isinstance(out, torch.Tensor)
            and out.dtype == torch.float32
            and out.device.type == "cpu"
            and out.is_contiguous()
            and tuple(out.shape) == full_shape
        ):
            raise ValueError(f"out must be a contiguous float32 CPU tensor of shape {full_shape}")

        inside = self.grid.contains(ijk)
        ijk, study_index = ijk[inside], study_index[inside]
        if flip is not None:
            flip = np.asarray(flip)
            if flip.shape != (n_studies,) or flip.dtype != np.bool_:
                raise ValueError(f"flip must be a bool array of shape ({n_studies},), got {flip.dtype} {flip.shape}")
            flipped = flip[study_index]
            # ijk is already a copy (boolean indexing above), so flipping in place is safe.
            ijk[flipped, 0] = shape[0] - 1 - ijk[flipped, 0]
        # Group peaks by study (CSR): the kernel gives each study its own contiguous run.
        if study_index.size > 1 and np.any(study_index[1:] < study_index[:-1]):
            order = np.argsort(study_index, kind="stable")
            ijk, study_index = ijk[order], study_index[order]
        starts = np.zeros(n_studies + 1, dtype=np.int64)
        np.cumsum(np.bincount(study_index, minlength=n_studies), out=starts[1:])

        if n_studies:
            with _LAUNCH_LOCK:
                _splat(
                    np.ascontiguousarray(ijk),
                    starts,
                    kernels,
                    radii,
                    mask,
                    out.numpy().reshape(-1),
                    shape,
                )
        return out
