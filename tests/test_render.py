"""The fast renderer agrees with the scipy reference and behaves as documented."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from sematlas.core.grid import Grid
from sematlas.data.render import PeakRenderer, gaussian_kernel_1d, reference_render

FWHMS = (6.0, 12.0)
RTOL = 1e-4


def relative_error(actual: torch.Tensor | np.ndarray, expected: np.ndarray) -> float:
    """Max absolute difference over the max absolute reference value."""
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


def to_peaks(coordinates: pd.DataFrame, grid: Grid, n_studies: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices and study index (studies sorted by id) of the first ``n_studies`` studies."""
    ids = np.sort(coordinates["id"].unique())
    study_index = np.searchsorted(ids, coordinates["id"].to_numpy())
    keep = study_index < n_studies
    return grid.mm_to_voxel(coordinates[["x", "y", "z"]].to_numpy()[keep]), study_index[keep]


@pytest.fixture(scope="module", params=[4, 2], ids=["4mm", "2mm"])
def grid(request) -> Grid:
    return Grid(request.param)


@pytest.fixture(scope="module")
def renderer(grid: Grid) -> PeakRenderer:
    return PeakRenderer(grid, fwhms=FWHMS)


@pytest.fixture(scope="module")
def sample_coordinates(nimare_sample) -> pd.DataFrame:
    return pd.read_csv(nimare_sample["coordinates"], sep="\t", dtype={"id": str})


@pytest.fixture(scope="module")
def synthetic_coordinates() -> pd.DataFrame:
    from nimare.generate import create_coordinate_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _, dataset = create_coordinate_dataset(foci=8, sample_size=30, n_studies=12, n_noise_foci=4, seed=7)
    return dataset.coordinates


def n_for(grid: Grid, n: int) -> int:
    """Keep 2 mm cases light: the scipy reference costs ~0.1 s per study and channel there."""
    return n if grid.voxel_size == 4 else 3


@pytest.mark.parametrize("voxel_size", [2, 4])
@pytest.mark.parametrize("fwhm", [6.0, 12.0])
def test_kernel_is_scipys(fwhm: float, voxel_size: int) -> None:
    kernel = gaussian_kernel_1d(fwhm, voxel_size)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2))) / voxel_size
    radius = int(4.0 * sigma + 0.5)
    assert kernel.shape == (2 * radius + 1,)
    delta = np.zeros(4 * radius + 1)
    delta[2 * radius] = 1.0
    smoothed = gaussian_filter1d(delta, sigma, mode="constant", truncate=4.0)
    np.testing.assert_allclose(kernel, smoothed[radius : 3 * radius + 1], rtol=1e-12, atol=1e-15)
    assert np.all(smoothed[:radius] == 0) and np.all(smoothed[3 * radius + 1 :] == 0)


def test_matches_reference_on_neurosynth_sample(grid, renderer, sample_coordinates) -> None:
    n = n_for(grid, sample_coordinates["id"].nunique())
    ijk, study_index = to_peaks(sample_coordinates, grid, n)
    expected = reference_render(ijk, study_index, n, grid, FWHMS)
    actual = renderer.render(ijk, study_index, n)
    assert isinstance(actual, torch.Tensor) and actual.dtype == torch.float32
    assert tuple(actual.shape) == (n, 2, *grid.shape)
    assert relative_error(actual, expected) < RTOL


@pytest.mark.slow
def test_matches_reference_on_synthetic_data(grid, renderer, synthetic_coordinates) -> None:
    n = n_for(grid, 12)
    ijk, study_index = to_peaks(synthetic_coordinates, grid, n)
    expected = reference_render(ijk, study_index, n, grid, FWHMS)
    assert relative_error(renderer.render(ijk, study_index, n), expected) < RTOL


@pytest.mark.slow
def test_peak_order_does_not_matter(grid, renderer, synthetic_coordinates) -> None:
    ijk, study_index = to_peaks(synthetic_coordinates, grid, 3)
    shuffle = np.random.default_rng(0).permutation(len(ijk))
    # Equal up to float32 summation order.
    np.testing.assert_allclose(
        renderer.render(ijk[shuffle], study_index[shuffle], 3).numpy(),
        renderer.render(ijk, study_index, 3).numpy(),
        rtol=0,
        atol=1e-6,
    )


def test_flip_is_mirrored_voxels(grid, renderer, sample_coordinates) -> None:
    ijk, study_index = to_peaks(sample_coordinates, grid, 3)
    flip = np.array([True, False, True])
    mirrored = ijk.copy()
    mirrored[flip[study_index], 0] = grid.shape[0] - 1 - mirrored[flip[study_index], 0]
    expected = reference_render(mirrored, study_index, 3, grid, FWHMS)
    actual = renderer.render(ijk, study_index, 3, flip=flip)
    assert relative_error(actual, expected) < RTOL
    unflipped = renderer.render(ijk, study_index, 3)
    np.testing.assert_array_equal(actual[1].numpy(), unflipped[1].numpy())
    assert not np.array_equal(actual[0].numpy(), unflipped[0].numpy())


def test_flip_is_x_to_minus_x_in_mm_at_2mm(sample_coordinates) -> None:
    # At 2 mm (origin -90 mm, 90 even) rounding x and -x is symmetric, so the flip is
    # exactly x -> -x in millimetres. (At 4 mm, x = 0, +-4, ... fall on half voxels
    # and round to even on both sides, so there only voxel mirroring is exact.)
    grid = Grid(2)
    coords = sample_coordinates[sample_coordinates["id"].isin(np.sort(sample_coordinates["id"].unique())[:2])]
    ijk, study_index = to_peaks(coords, grid, 2)
    mirrored = coords.assign(x=-coords["x"])
    ijk_mirrored, _ = to_peaks(mirrored, grid, 2)
    renderer = PeakRenderer(grid, fwhms=(12.0,))
    flipped = renderer.render(ijk, study_index, 2, flip=np.array([True, True]))
    np.testing.assert_array_equal(flipped.numpy(), renderer.render(ijk_mirrored, study_index, 2).numpy())


def test_masked_and_peak_normalised(grid, renderer, sample_coordinates) -> None:
    ijk, study_index = to_peaks(sample_coordinates, grid, 3)
    # Study 3 has no peaks: it must come out all zero, not NaN.
    maps = renderer.render(ijk, study_index, 4).numpy()
    outside = ~grid.mask()
    assert np.all(maps[:, :, outside] == 0)
    assert np.all(maps >= 0)
    np.testing.assert_array_equal(maps[:3].max(axis=(2, 3, 4)), np.ones((3, 2), dtype=np.float32))
    assert not maps[3].any()


def test_peaks_outside_grid_are_ignored(grid, renderer) -> None:
    centre = np.array(grid.shape) // 2
    inside = np.array([centre, centre + 3])
    outside = np.array([[-1, centre[1], centre[2]], [centre[0], grid.shape[1], centre[2]], [5, 5, 10_000]])
    ijk = np.concatenate([inside, outside, outside])
    study_index = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    maps = renderer.render(ijk, study_index, 2)
    expected = renderer.render(inside, np.array([0, 0]), 1)
    np.testing.assert_array_equal(maps[:1].numpy(), expected.numpy())
    assert not maps[1].numpy().any()
    assert relative_error(maps, reference_render(ijk, study_index, 2, grid, FWHMS)) < RTOL


def test_duplicate_peaks_count_twice(grid, renderer) -> None:
    centre = np.array(grid.shape) // 2
    # q 24 mm from p: their kernels barely overlap, so the normalised map reads the weights.
    p, q = centre, centre + np.array([24 // grid.voxel_size, 0, 0])
    ijk = np.array([p, p, q, p, q])
    study_index = np.array([0, 0, 0, 1, 1])
    maps = renderer.render(ijk, study_index, 2).numpy()
    assert relative_error(maps, reference_render(ijk, study_index, 2, grid, FWHMS)) < RTOL
    a, b = tuple(p), tuple(q)
    assert maps[0, 1][a] == 1.0 and maps[0, 1][b] == pytest.approx(0.5, abs=0.01)
    assert maps[1, 1][a] == pytest.approx(maps[1, 1][b], abs=1e-6)


def test_channel_selection(grid, renderer, sample_coordinates) -> None:
    ijk, study_index = to_peaks(sample_coordinates, grid, 3)
    both = renderer.render(ijk, study_index, 3).numpy()
    only_12 = renderer.render(ijk, study_index, 3, channels=[1])
    assert tuple(only_12.shape) == (3, 1, *grid.shape)
    np.testing.assert_array_equal(only_12.numpy(), both[:, 1:2])
    np.testing.assert_array_equal(renderer.render(ijk, study_index, 3, channels=[1, 0]).numpy(), both[:, ::-1])
    assert relative_error(only_12, reference_render(ijk, study_index, 3, grid, (12.0,))) < RTOL


def test_out_buffer_is_filled_and_returned(grid, renderer, sample_coordinates) -> None:
    ijk, study_index = to_peaks(sample_coordinates, grid, 3)
    out = torch.full((3, 1, *grid.shape), float("nan"))
    result = renderer.render(ijk, study_index, 3, channels=[0], out=out)
    assert result is out
    np.testing.assert_array_equal(out.numpy(), renderer.render(ijk, study_index, 3, channels=[0]).numpy())


def _render_in_child(renderer: PeakRenderer, ijk: np.ndarray, study_index: np.ndarray, conn) -> None:
    conn.send(renderer.render(ijk, study_index, 1).numpy().copy())


def test_renders_in_a_forked_worker_after_the_parent_rendered() -> None:
    # What a DataLoader worker does; numba's GNU OpenMP layer would abort or hang here.
    import multiprocessing

    renderer = PeakRenderer(Grid(4), fwhms=(12.0,))
    ijk, study_index = np.array([[20, 25, 20], [30, 25, 20]]), np.array([0, 0])
    expected = renderer.render(ijk, study_index, 1).numpy()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_render_in_child, args=(renderer, ijk, study_index, send))
    child.start()
    try:
        assert receive.poll(60), "the forked worker did not answer"
        np.testing.assert_array_equal(receive.recv(), expected)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_constructor_only_stores_parameters() -> None:
    renderer = PeakRenderer(Grid(4), fwhms=(12.0,), truncate=3.0)
    assert vars(renderer) == {"grid": Grid(4), "fwhms": (12.0,), "truncate": 3.0}
    assert renderer.n_channels == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ijk": np.zeros((4, 2), int)}, r"ijk must have shape \(n_peaks, 3\)"),
        ({"study_index": np.zeros(3, int)}, r"study_index must have shape \(n_peaks,\)"),
        ({"study_index": np.array([0, 1, 2, 2])}, r"study_index must lie in \[0, n_studies=2\)"),
        ({"study_index": np.array([0, -1, 1, 1])}, r"study_index must lie in \[0, n_studies=2\)"),
        ({"ijk": np.array([[1.0, 2, 3], [np.nan, 2, 3], [1, 2, 3], [1, 2, 3]])}, "ijk contains NaN"),
        ({"ijk": np.full((4, 3), 1.5)}, "ijk must hold integer voxel indices"),
        ({"ijk": np.full((4, 3), "a")}, "ijk must be an integer array"),
        ({"n_studies": -1}, "n_studies must be a non-negative integer"),
        ({"flip": np.array([True])}, r"flip must be a bool array of shape \(2,\)"),
        ({"flip": np.array([1, 0])}, r"flip must be a bool array of shape \(2,\)"),
        ({"channels": [2]}, r"channels must lie in \[0, 2\)"),
        ({"channels": []}, "channels must be a non-empty sequence of integers"),
        (
            {"out": torch.empty(2, 1, 46, 55, 46)},
            r"out must be a contiguous float32 CPU tensor of shape \(2, 2, 46, 55, 46\)",
        ),
    ],
)
def test_bad_input_raises(kwargs: dict, match: str) -> None:
    arguments = {"ijk": np.full((4, 3), 10), "study_index": np.array([0, 0, 1, 1]), "n_studies": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PeakRenderer(Grid(4), fwhms=FWHMS).render(**arguments)


def test_bad_kernel_parameters_raise() -> None:
    with pytest.raises(ValueError, match="fwhm_mm must be a positive number"):
        gaussian_kernel_1d(0.0, 2)
    with pytest.raises(ValueError, match="fwhm_mm must be a positive number"):
        gaussian_kernel_1d(float("nan"), 2)
    with pytest.raises(ValueError, match="fwhms must name at least one kernel"):
        PeakRenderer(Grid(4), fwhms=()).render(np.zeros((0, 3), int), np.zeros(0, int), 1)
