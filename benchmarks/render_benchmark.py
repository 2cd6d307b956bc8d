"""How fast is :class:`sematlas.data.render.PeakRenderer` against NiMARE's kernels and scipy?

Prints figures (not a timed test)::

    python benchmarks/render_benchmark.py [--mirror DIR] [--n-studies 1000]

Data: the Neurosynth v7 mirror (``--mirror``, else ``SEMATLAS_DATA_MIRROR``, else
``/work/shared/data/neurosynth``); the first ``--n-studies`` studies sorted by id.
At 2 mm it measures, in one run, studies/s of PeakRenderer (12 mm, and dual
6 + 12 mm), NiMARE 0.22's ``MKDAKernel(r=10)`` and ``ALEKernel(fwhm=12)``
(``transform(return_type="array")``) and the scipy reference renderer, then the
wall time of rendering every study at 2 mm and at 4 mm in chunks.

The NiMARE Dataset is built from a dict with every study labelled "MNI", so no
coordinate is transformed (Neurosynth's TAL-labelled studies are taken as they
are: this is a speed benchmark, the maps are not used). ALE is given a fixed
12 mm FWHM because the Neurosynth metadata has no sample sizes.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sematlas.core.grid import Grid
from sematlas.data.render import PeakRenderer, _splat, reference_render

DEFAULT_MIRROR = Path("/work/shared/data/neurosynth")
COORDINATES = "data-neurosynth_version-7_coordinates.tsv.gz"


def load_peaks(mirror: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All peaks of the mirror: study ids sorted ``(S,)``, MNI mm ``(n, 3)``, study index ``(n,)``."""
    coords = pd.read_csv(mirror / COORDINATES, sep="\t", usecols=["id", "x", "y", "z"], dtype={"id": str})
    ids = np.sort(coords["id"].unique())
    study_index = np.searchsorted(ids, coords["id"].to_numpy())
    order = np.argsort(study_index, kind="stable")
    return ids, coords[["x", "y", "z"]].to_numpy()[order], study_index[order]


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def render_chunked(
    renderer: PeakRenderer, ijk: np.ndarray, study_index: np.ndarray, n_studies: int, chunk: int, out: torch.Tensor
) -> None:
    """Render studies ``[0, n_studies)`` in chunks into one reused buffer (peaks sorted by study)."""
    bounds = np.searchsorted(study_index, np.arange(0, n_studies + chunk, chunk))
    for lo in range(0, n_studies, chunk):
        size = min(chunk, n_studies - lo)
        a, b = bounds[lo // chunk], bounds[lo // chunk + 1]
        renderer.render(ijk[a:b], study_index[a:b] - lo, size, out=out[:size])


def nimare_dataset(ids: np.ndarray, xyz: np.ndarray, study_index: np.ndarray, n_studies: int):
    """A NiMARE Dataset of the first ``n_studies`` studies, one contrast each, labelled MNI."""
    from nimare.dataset import Dataset

    source = {}
    for s in range(n_studies):
        peaks = xyz[study_index == s]
        coords = {"space": "MNI", "x": peaks[:, 0].tolist(), "y": peaks[:, 1].tolist(), "z": peaks[:, 2].tolist()}
        source[str(ids[s])] = {"contrasts": {"1": {"coords": coords}}}
    return Dataset(source, target="mni152_2mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("SEMATLAS_DATA_MIRROR", DEFAULT_MIRROR)))
    parser.add_argument("--n-studies", type=int, default=1000, help="studies for the per-method rates")
    parser.add_argument("--n-reference", type=int, default=100, help="studies for the (slow) scipy reference")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fast renderer (best is kept)")
    parser.add_argument("--chunk", type=int, default=512, help="studies per render call for the full database")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # NiMARE's Dataset deprecation notices
    logging.getLogger("nimare").setLevel(logging.ERROR)  # "no sample sizes": ALE is given its FWHM

    import nimare
    import numba

    ids, xyz, study_index = load_peaks(args.mirror)
    n_all, n = len(ids), min(args.n_studies, len(ids))
    grid2, grid4 = Grid(2), Grid(4)
    ijk2, ijk4 = grid2.mm_to_voxel(xyz), grid4.mm_to_voxel(xyz)
    first = study_index < n
    print(f"Neurosynth v7 mirror {args.mirror}: {n_all} studies, {len(xyz)} peaks")
    print(
        f"numba {numba.__version__} ({numba.get_num_threads()} threads), nimare {nimare.__version__}, "
        f"torch {torch.__version__}; CPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f} "
        "(other processes on these cores slow every figure below)"
    )

    single = PeakRenderer(grid2, fwhms=(12.0,))
    dual = PeakRenderer(grid2, fwhms=(6.0, 12.0))
    start = time.perf_counter()
    single.render(ijk2[:1], study_index[:1], 1)  # compiles the kernel, or loads it from numba's disk cache
    print(
        f"first call (compile or cache load, plus mask): {time.perf_counter() - start:.2f} s; "
        f"numba cache hits {sum(_splat.stats.cache_hits.values())}, misses {sum(_splat.stats.cache_misses.values())}"
    )

    rates: dict[str, float] = {}
    chunk = min(args.chunk, n)
    for name, renderer in (("PeakRenderer 12 mm", single), ("PeakRenderer 6+12 mm", dual)):
        buffer = torch.zeros((chunk, renderer.n_channels, *grid2.shape))  # pages faulted in before timing
        run = partial(render_chunked, renderer, ijk2[first], study_index[first], n, chunk, buffer)
        seconds = best_of(run, args.repeats)
        rates[name] = n / seconds
        del buffer

    n_ref = min(args.n_reference, n)
    sel = study_index < n_ref
    seconds = best_of(partial(reference_render, ijk2[sel], study_index[sel], n_ref, grid2, (12.0,)), 1)
    rates[f"scipy reference 12 mm ({n_ref} studies)"] = n_ref / seconds

    from nimare.meta.kernel import ALEKernel, MKDAKernel

    dataset = nimare_dataset(ids, xyz, study_index, n)
    for name, kernel in (
        ("NiMARE MKDAKernel(r=10)", MKDAKernel(r=10)),
        ("NiMARE ALEKernel(fwhm=12)", ALEKernel(fwhm=12)),
    ):
        start = time.perf_counter()
        maps = kernel.transform(dataset, return_type="array")
        rates[name] = n / (time.perf_counter() - start)
        assert maps.shape[0] == n
        del maps

    mkda, ale = rates["NiMARE MKDAKernel(r=10)"], rates["NiMARE ALEKernel(fwhm=12)"]
    print(f"\n2 mm grid {grid2.shape}, first {n} studies by id (NiMARE, renderer) / {n_ref} (reference)")
    print(f"{'method':<40} {'studies/s':>10} {'x MKDA':>8} {'x ALE':>8}")
    for name, rate in rates.items():
        print(f"{name:<40} {rate:>10.0f} {rate / mkda:>8.1f} {rate / ale:>8.1f}")

    print(f"\nAll {n_all} studies, chunks of {args.chunk}, one reused output buffer (best of {args.repeats}):")
    for grid, ijk in ((grid2, ijk2), (grid4, ijk4)):
        for fwhms in ((12.0,), (6.0, 12.0)):
            renderer = PeakRenderer(grid, fwhms=fwhms)
            renderer.render(ijk[:1], study_index[:1], 1)  # build this grid's mask outside the timing
            buffer = torch.zeros((args.chunk, renderer.n_channels, *grid.shape))
            run = partial(render_chunked, renderer, ijk, study_index, n_all, args.chunk, buffer)
            seconds = best_of(run, args.repeats)
            label = "+".join(f"{f:g}" for f in fwhms)
            print(f"  {grid.voxel_size} mm {grid.shape}, {label} mm: {seconds:.2f} s ({n_all / seconds:.0f} studies/s)")
            del buffer
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
