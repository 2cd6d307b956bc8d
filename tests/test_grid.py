"""The network grid: the brain's bounding box in multiples of 16, exactly invertible to the native grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sematlas.core.grid import NETWORK_MULTIPLE, Grid
from sematlas.data.render import PeakRenderer


@pytest.mark.parametrize(("voxel_size", "shape"), [(4, (48, 48, 48)), (2, (80, 96, 80))])
def test_network_box_holds_the_brain_in_multiples_of_16(voxel_size: int, shape: tuple[int, int, int]) -> None:
    grid = Grid(voxel_size)
    assert grid.network_shape == shape and all(side % NETWORK_MULTIPLE == 0 for side in shape)
    # Every brain voxel is inside the box, and the box is much smaller than the next power of two cubed.
    assert int(grid.network_mask().sum()) == int(grid.mask().sum())
    assert np.prod(shape) < 0.5 * (1 << int(np.ceil(np.log2(max(grid.shape))))) ** 3


@pytest.mark.parametrize("voxel_size", [4, 2])
def test_a_rendered_peak_keeps_its_mni_coordinate_through_the_network_grid(voxel_size: int) -> None:
    grid = Grid(voxel_size)
    peak_mm = np.array([[-42.0, -58.0, 46.0]])  # left intraparietal sulcus
    renderer = PeakRenderer(grid, fwhms=(6.0,), truncate=4.0)
    native = renderer.render(grid.mm_to_voxel(peak_mm), np.zeros(1, dtype=np.int64), 1)
    network = grid.to_network(native)
    assert network.shape == (1, 1, *grid.network_shape)
    # The network grid's voxel (i, j, k) is the native voxel origin + (i, j, k).
    peak_network = np.unravel_index(int(network.argmax()), grid.network_shape)
    native_index = np.array(peak_network) + np.array(grid.network_origin)
    mm = grid.affine @ np.append(native_index, 1.0)
    np.testing.assert_allclose(mm[:3], peak_mm[0], atol=voxel_size / 2)
    back = grid.to_native(network)
    mask = torch.from_numpy(grid.mask())
    assert torch.equal(back[..., mask], native[..., mask])
    assert np.unravel_index(int(back.argmax()), grid.shape) == tuple(native_index)


def test_the_conversions_refuse_maps_of_another_grid() -> None:
    grid = Grid(4)
    with pytest.raises(ValueError, match=r"expected maps on the native \(46, 55, 46\) grid"):
        grid.to_network(torch.zeros(1, 48, 48, 48))
    with pytest.raises(ValueError, match=r"expected maps on the network \(48, 48, 48\) grid"):
        grid.to_native(torch.zeros(1, 46, 55, 46))
