"""Run the compendium's stages: each notebook through papermill, in order.

``python -m sematlas.pipeline run PROFILE [--only STAGE] [--from STAGE] [--force]``
is what ``./run_all.sh`` calls. A stage's notebook (``notebooks/NN_name.py``,
Jupytext py:percent, the source of truth) is converted in memory and executed
by papermill with ``profile`` injected after its ``parameters`` cell, into
``notebooks/executed/<profile>/NN_name.ipynb`` with outputs kept.

A stage is skipped when it is fresh (:mod:`sematlas.pipeline.freshness`: the
content of everything the registry says it depends on is unchanged since its
last successful run). The stamp is removed before a stage starts and written
only when it succeeds, so a killed or failed stage is never mistaken for a
finished one. ``python -m sematlas.pipeline status PROFILE`` says what a run
would execute, and why.

While a stage runs, the terminal shows its progress bars (a bar over the
notebook's cells, and those of its training, rendering and evaluation loops,
each with the time spent and an estimate of the time left), copied from the
kernel by :class:`~sematlas.pipeline.console.StageConsole`; everything else the
notebook prints stays in the executed notebook. Each finished stage's wall time
goes into ``notebooks/executed/<profile>/stage_times.json``, and
``python -m sematlas.pipeline summary PROFILE`` prints the headline results with
their files and those times (:mod:`sematlas.pipeline.summary`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sematlas.core.params import PROFILES, ParameterError, load_params
from sematlas.core.paths import ProfilePaths, project_root
from sematlas.core.progress import BAR_FORMAT
from sematlas.models.registry import check_variants
from sematlas.pipeline.console import StageConsole
from sematlas.pipeline.freshness import inputs, plan, why_stale, write_stamp
from sematlas.pipeline.registry import STAGES, Stage, UnknownStage, select
from sematlas.pipeline.summary import record_wall_time, summary

logger = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A stage's notebook raised; the message names the executed notebook with the traceback."""


def load_notebook(path: Path) -> Any:  # nbformat.NotebookNode
    """Read a py:percent notebook into memory, without its pairing metadata.

    Dropping ``jupytext.formats`` keeps papermill and Jupyter from writing a
    paired twin next to the executed copy.
    """
    import jupytext

    notebook = jupytext.read(path)
    notebook.metadata.get("jupytext", {}).pop("formats", None)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return notebook


def run_stage(stage: Stage, paths: ProfilePaths) -> float:
    """Execute one stage with papermill and stamp it; return its wall time in seconds.

    Raises
    ------
    StageFailed
        Naming the stage, the profile and the executed notebook that holds the traceback.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed, stamp = stage.executed(paths), stage.stamp(paths)
    executed.parent.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    ran_with = inputs(stage, paths)  # before the run: an edit made while it runs leaves it stale
    started = time.perf_counter()
    try:
        with StageConsole(stage.stem, sys.stderr) as console:
            cells = {"desc": f"{stage.stem}  cells: ", "file": console, "leave": False, "ncols": console.columns}
            papermill.execute_notebook(
                load_notebook(stage.notebook(paths.root)),
                str(executed),
                parameters={"profile": paths.profile},
                cwd=str(paths.root),
                kernel_name="python3",
                language="python",
                progress_bar=cells | {"bar_format": BAR_FORMAT},
                # The kernel's own log (a warning at start-up, a KeyboardInterrupt notice at shutdown)
                # would land amid the bars.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except PapermillExecutionError as error:
        raise StageFailed(
            f"stage {stage.stem} failed on profile '{paths.profile}' ({error.ename}: {error.evalue}).\n"
            f"The executed notebook with the traceback is {executed}"
        ) from None
    write_stamp(stage, paths, ran_with)
    return time.perf_counter() - started


def run(
    profile: str, only: str | None = None, start: str | None = None, force: bool = False, root: Path | None = None
) -> dict[str, float]:
    """Run the selected stages of a profile in order; return wall seconds per stage run.

    Raises
    ------
    UnknownStage
        ``only`` or ``start`` names no stage.
    StageFailed
        A stage's notebook raised; later stages are not started.
    """
    root = root or project_root()
    load_params(profile, root)  # fail on bad parameters before any stage starts
    paths = ProfilePaths.for_profile(profile, root)
    timings: dict[str, float] = {}
    for stage in select(only, start):
        # Decided only now, after the stages before it ran: their new outputs are its inputs.
        reason = "--force" if force else why_stale(stage, paths)
        if reason is None:
            logger.info("%s: up to date, skipped (--force reruns it)", stage.stem)
            continue
        logger.info("%s: running on profile '%s' (%s) -> %s", stage.stem, profile, reason, stage.executed(paths))
        timings[stage.stem] = run_stage(stage, paths)
        record_wall_time(paths, stage.stem, timings[stage.stem])
        logger.info("%s: done in %.1f s", stage.stem, timings[stage.stem])
    return timings


def _print_stages() -> None:
    for stage in STAGES:
        reads = ", ".join(stage.reads) or "-"
        print(f"{stage.stem:<22} reads {reads:<40} runs {', '.join(stage.library)}")


def _print_status(profile: str) -> None:
    paths = ProfilePaths.for_profile(profile)
    reruns = plan(paths, STAGES)
    for stage in STAGES:
        print(f"{stage.stem:<22} {'reruns: ' + reruns[stage.stem] if stage.stem in reruns else 'up to date'}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sematlas.pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run stages of a profile")
    run_parser.add_argument("profile", choices=PROFILES)
    group = run_parser.add_mutually_exclusive_group()
    group.add_argument("--only", metavar="STAGE", help="run just this stage (number or name)")
    group.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and the ones after it")
    run_parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    status_parser = sub.add_parser("status", help="say which stages of a profile a run would execute, and why")
    status_parser.add_argument("profile", choices=PROFILES)
    summary_parser = sub.add_parser("summary", help="print a profile's headline results and each stage's wall time")
    summary_parser.add_argument("profile", choices=PROFILES)
    sub.add_parser("stages", help="list the stages, the stages each reads and the library code each runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (1: a stage failed, 2: an unknown stage or bad parameters)."""
    args = _parser().parse_args(argv)
    if args.command == "stages":
        _print_stages()
        return 0
    if args.command == "status":
        _print_status(args.profile)
        return 0
    if args.command == "summary":
        print(summary(args.profile), flush=True)
        return 0
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[sematlas] %(message)s"))
    package_logger = logging.getLogger("sematlas")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        # A variant no model registers is refused before any stage runs, like any bad parameter.
        check_variants(load_params(args.profile))
        timings = run(args.profile, only=args.only, start=args.start, force=args.force)
    except (StageFailed, UnknownStage, ParameterError) as error:
        print(f"[sematlas] ERROR: {error}", file=sys.stderr, flush=True)
        return 1 if isinstance(error, StageFailed) else 2
    finally:
        package_logger.removeHandler(handler)
    paths = ProfilePaths.for_profile(args.profile)
    total = sum(timings.values())
    print(
        f"[sematlas] profile '{args.profile}' complete ({len(timings)} stage(s) run, {total:.0f} s). Outputs:\n"
        f"  executed notebooks  {paths.executed}\n  tables              {paths.processed}\n"
        f"  models              {paths.models}\n  results             {paths.results}\n"
        f"  figures             {paths.figures}",
        flush=True,
    )
    return 0
