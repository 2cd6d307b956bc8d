"""Redraw latency of the interactive demos: from a control change to the finished image.

    python benchmarks/widget_latency.py [--profile quick] [--repeats 10]

Builds each demo on the profile's trained models (as its notebook does) and sets
each control to values the demo has not decoded yet, so every timed change
decodes and redraws (:func:`sematlas.widgets.measure_latency`). Prints the median,
95th percentile and maximum in milliseconds per control against the 200 ms
budget, with the grid, the torch threads and the machine's cores. A demo whose
stage has not run for the profile is reported as missing. Figures, not
assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sematlas.widgets import REDRAW_BUDGET_MS, ConfidenceExplorer, CounterfactualMachine, LatentSlider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(
        f"profile {args.profile}: redraw budget {REDRAW_BUDGET_MS:.0f} ms per control change; "
        f"torch threads {torch.get_num_threads()}, CPU cores {os.cpu_count()}\n"
    )
    for demo_class in (CounterfactualMachine, LatentSlider, ConfidenceExplorer):
        start = time.perf_counter()
        try:
            demo = demo_class.from_profile(args.profile)
        except FileNotFoundError as error:
            print(f"{demo_class.title}: not measured ({error})\n")
            continue
        grid = demo.catalogue.grid
        print(
            f"{demo_class.title} (built in {time.perf_counter() - start:.1f} s; {grid.voxel_size} mm grid "
            f"{grid.shape}):"
        )
        print(demo.latency(repeats=args.repeats).to_string(), end="\n\n")


if __name__ == "__main__":
    main()
