"""Fast drawing for the interactive demos: orthogonal slices and peak projections as PNG bytes.

nilearn's ``plot_stat_map`` builds a matplotlib figure, resamples and lays out
axes on every call (a few hundred milliseconds on a 2-core CPU), too slow for a
slider that must redraw within 200 ms. :class:`SliceRenderer` is the fast path:
slices are coloured through matplotlib's colour tables with numpy, blended over
nilearn's bundled MNI152 template (resampled once onto the model's grid, so the
slices look like nilearn's), upscaled by whole pixels and encoded by Pillow,
in a few milliseconds at 4 mm. nilearn stays the static and 3-D view
(``view_img``, ``view_markers``).
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sematlas.core.grid import Grid

#: Panel names of a row, in order.
VIEWS = ("sagittal", "coronal", "axial")
#: For each view: the volume axis it cuts, and the (column, row) volume axes of its picture.
_VIEW_AXES = {"sagittal": (0, (1, 2)), "coronal": (1, (0, 2)), "axial": (2, (0, 1))}
_GAP, _TITLE, _BAR = 4, 14, 10


@lru_cache(maxsize=2)
def template_underlay(voxel_size: int) -> np.ndarray:
    """nilearn's bundled MNI152 T1 template on the grid of ``voxel_size``, scaled to [0, 1], zero outside the brain."""
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_img

    grid = Grid(voxel_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = resample_img(
            load_mni152_template(resolution=2),
            target_affine=grid.affine,
            target_shape=grid.shape,
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )
    data = np.asarray(image.get_fdata(), dtype=np.float32) * grid.mask()
    return data / (data.max() or 1.0)


def cut_slices(volume: np.ndarray, cut: Sequence[int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial slices of ``(D, H, W)`` through voxel ``cut``, oriented for display
    (superior / anterior up; the picture's left is the subject's left, neurological convention)."""
    i, j, k = (int(c) for c in cut)
    return [np.rot90(volume[i, :, :]), np.rot90(volume[:, j, :]), np.rot90(volume[:, :, k])]


@lru_cache(maxsize=4)
def _inner_brain(shape: tuple[int, int, int]) -> np.ndarray | None:
    """The brain mask of the grid of ``shape`` eroded by two voxels (slices through it are never edge slices)."""
    from scipy.ndimage import binary_erosion

    for voxel_size in (2, 4):
        if Grid(voxel_size).shape == shape:
            return binary_erosion(Grid(voxel_size).mask(), iterations=2)
    return None


def peak_voxel(volume: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the largest absolute value of ``(D, H, W)`` away from the brain's edge."""
    magnitude = np.abs(volume)
    inner = _inner_brain(tuple(volume.shape))
    if inner is not None and (magnitude * inner).max() > 0:
        magnitude = magnitude * inner
    index = np.unravel_index(int(np.argmax(magnitude)), volume.shape)
    return (int(index[0]), int(index[1]), int(index[2]))


@lru_cache(maxsize=8)
def _colour_table(cmap: str) -> np.ndarray:
    """256 RGB entries of a matplotlib colour map, uint8."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


@dataclass(frozen=True)
class MapStyle:
    """How a row of :class:`SliceRenderer` colours its map.

    Attributes
    ----------
    cmap : str
        A matplotlib colour map name.
    symmetric : bool
        Colour limits ``[-m, m]`` (differences) instead of ``[0, m]``.
    """

    cmap: str = "hot"
    symmetric: bool = False


MAP = MapStyle("hot")
DIFFERENCE = MapStyle("RdBu_r", symmetric=True)
UNCERTAINTY = MapStyle("viridis")


@dataclass(frozen=True)
class MapRow:
    """One row of a picture: a ``(D, H, W)`` map with its title and display settings.

    Attributes
    ----------
    volume : ndarray
    title : str
    style : MapStyle
    limit : float, optional
        Colour limit (default: the map's largest absolute value).
    threshold : float
        Values with ``|v| <= threshold`` are transparent (the template shows through).
    """

    volume: np.ndarray
    title: str
    style: MapStyle = MAP
    limit: float | None = None
    threshold: float = 0.0


@dataclass(frozen=True)
class PointRow:
    """A row of glass-brain projections with point sets drawn on them.

    Attributes
    ----------
    sets : sequence of (label, ndarray (n, 3) in MNI mm, RGB tuple)
    title : str
    """

    sets: Sequence[tuple[str, np.ndarray, tuple[int, int, int]]]
    title: str


class SliceRenderer:
    """Rows of orthogonal slices (and point projections) through one voxel, as a PNG.

    Parameters
    ----------
    grid : Grid
        The maps' grid.
    scale : int
        Screen pixels per voxel (3 at 4 mm: a row is about 460 pixels wide).
    """

    def __init__(self, grid: Grid, scale: int = 3) -> None:
        self.grid = grid
        self.scale = scale
        self.underlay = template_underlay(grid.voxel_size)
        self.glass = {view: np.rot90(grid.mask().max(axis=_VIEW_AXES[view][0])) for view in VIEWS}
        self.font = ImageFont.load_default(size=11)

    @property
    def panel_height(self) -> int:
        return max(self.grid.shape) * self.scale

    def _upscale(self, rgb: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(rgb, self.scale, axis=0), self.scale, axis=1)

    def _colour(self, row: MapRow, cut: Sequence[int]) -> tuple[list[np.ndarray], float, float]:
        volume = np.asarray(row.volume, dtype=np.float32)
        top = float(row.limit if row.limit is not None else np.abs(volume).max()) or 1.0
        low = -top if row.style.symmetric else 0.0
        table = _colour_table(row.style.cmap)
        panels = []
        for values, under in zip(cut_slices(volume, cut), cut_slices(self.underlay, cut)):
            grey = np.repeat(np.where(under > 0, under * 255, 255).astype(np.uint8)[..., None], 3, axis=2)
            index = np.clip((values - low) / (top - low) * 255, 0, 255).astype(np.intp)
            shown = (np.abs(values) > row.threshold) & (values != 0)
            panels.append(np.where(shown[..., None], table[index], grey))
        return panels, low, top

    def _projections(self, row: PointRow) -> list[np.ndarray]:
        shape = np.array(self.grid.shape)
        panels = []
        for view in VIEWS:
            glass = self.glass[view]
            rgb = np.full((*glass.shape, 3), 255, dtype=np.uint8)
            rgb[glass] = 225
            rgb = self._upscale(rgb)
            _, (column_axis, row_axis) = _VIEW_AXES[view]
            for _, xyz, colour in row.sets:
                ijk = (np.asarray(xyz, dtype=float).reshape(-1, 3) - self.grid.affine[:3, 3]) / self.grid.voxel_size
                columns = np.rint((ijk[:, column_axis] + 0.5) * self.scale).astype(int)
                rows = np.rint((shape[row_axis] - 0.5 - ijk[:, row_axis]) * self.scale).astype(int)
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        r, c = rows + dr, columns + dc
                        keep = (r >= 0) & (r < rgb.shape[0]) & (c >= 0) & (c < rgb.shape[1])
                        rgb[r[keep], c[keep]] = colour
            panels.append(rgb)
        return panels

    def _colour_bar(self, style: MapStyle, height: int) -> np.ndarray:
        table = _colour_table(style.cmap)[::-1]
        index = np.linspace(0, 255, height).astype(np.intp)
        return np.repeat(table[index][:, None, :], _BAR, axis=1)

    def render(self, rows: Sequence[MapRow | PointRow], cut: Sequence[int] | None = None) -> bytes:
        """Draw ``rows`` top to bottom and return the PNG bytes.

        Parameters
        ----------
        rows : sequence of MapRow or PointRow
        cut : (i, j, k), optional
            Voxel the slices pass through (default: the peak of the first map row).
        """
        maps = [row for row in rows if isinstance(row, MapRow)]
        cut = tuple(cut) if cut is not None else (peak_voxel(maps[0].volume) if maps else (0, 0, 0))
        height = self.panel_height
        widths = [s * self.scale for s in (self.grid.shape[1], self.grid.shape[0], self.grid.shape[0])]
        width = sum(widths) + 4 * _GAP + _BAR + 110
        canvas = np.full((len(rows) * (height + _TITLE + _GAP), width, 3), 255, dtype=np.uint8)
        labels: list[tuple[int, int, str]] = []
        for r, row in enumerate(rows):
            top = r * (height + _TITLE + _GAP) + _TITLE
            labels.append((2, top - _TITLE + 1, row.title))
            if isinstance(row, MapRow):
                panels, low, high = self._colour(row, cut)
                panels = [self._upscale(p) for p in panels]
            else:
                panels, low, high = self._projections(row), None, None
            left = 0
            for panel, panel_width in zip(panels, widths):
                offset = height - panel.shape[0]
                canvas[top + offset : top + height, left : left + panel_width] = panel
                left += panel_width + _GAP
            if isinstance(row, MapRow):
                canvas[top : top + height, left : left + _BAR] = self._colour_bar(row.style, height)
                labels += [(left + _BAR + 2, top, f"{high:.3g}"), (left + _BAR + 2, top + height - 12, f"{low:.3g}")]
            else:
                for k, (label, _, colour) in enumerate(row.sets):
                    labels.append((left + 10, top + 14 * k, label))
                    canvas[top + 14 * k + 3 : top + 14 * k + 10, left : left + 7] = colour
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        for x, y, text in labels:
            draw.text((x, y), text, fill=(0, 0, 0), font=self.font)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


class LRUCache:
    """A small least-recently-used cache of computed values (decoded maps), keyed by hashable requests.

    Parameters
    ----------
    maxsize : int
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value of ``key``, computed (and stored) only when it is not cached."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        self.misses += 1
        value = self._values[key] = compute()
        if len(self._values) > self.maxsize:
            self._values.popitem(last=False)
        return value


def download_link(data: bytes, filename: str, label: str | None = None, mime: str = "application/octet-stream") -> str:
    """An HTML anchor that downloads ``data`` as ``filename`` (a data URI: works in JupyterLab and Voila alike)."""
    payload = base64.b64encode(data).decode("ascii")
    text = html.escape(label or filename)
    return f'<a download="{html.escape(filename)}" href="data:{mime};base64,{payload}">{text}</a>'


def nifti_bytes(image: Any) -> bytes:
    """A nibabel image as the bytes of a gzipped ``.nii.gz`` file (reproducible: no time stamp)."""
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def file_download_link(path: Path, root: Path | None = None) -> str:
    """:func:`download_link` of a file on disk, labelled with its path relative to ``root`` and its size."""
    label = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name
    return download_link(path.read_bytes(), path.name, label=f"{label} ({path.stat().st_size / 1024:,.0f} KiB)")
