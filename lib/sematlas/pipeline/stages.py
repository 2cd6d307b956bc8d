"""Run the compendium's stages: each notebook through papermill, in order.

``python -m sematlas.pipeline run PROFILE [--only STAGE] [--from STAGE] [--force]``
is what ``./run_all.sh`` calls. A stage's notebook (``notebooks/NN_name.py``,
Jupytext py:percent, the source of truth) is converted in memory and executed
by papermill with ``profile`` injected after its ``parameters`` cell, into
``notebooks/executed/<profile>/NN_name.ipynb`` with outputs kept.

A stage is skipped when it is fresh: its completion stamp is newer than its
notebook, the parameter files, the library sources and the stamps of the stages
before it. The stamp is removed before a stage starts and written only when it
succeeds, so a killed or failed stage is never mistaken for a finished one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sematlas.core.params import PROFILES, load_params
from sematlas.core.paths import ProfilePaths, project_root
from sematlas.models.registry import check_variants


@dataclass(frozen=True)
class Stage:
    """One notebook of the compendium.

    Parameters
    ----------
    number : str
        Two-digit order, e.g. ``"01"``.
    name : str
        What the notebook produces, e.g. ``"curation"``.
    """

    number: str
    name: str

    @property
    def stem(self) -> str:
        return f"{self.number}_{self.name}"

    def notebook(self, root: Path) -> Path:
        return root / "notebooks" / f"{self.stem}.py"

    def executed(self, paths: ProfilePaths) -> Path:
        return paths.executed / f"{self.stem}.ipynb"

    def stamp(self, paths: ProfilePaths) -> Path:
        return paths.executed / f".{self.stem}.done"


STAGES: tuple[Stage, ...] = (
    Stage("01", "curation"),
    Stage("02", "train_volumetric"),
    Stage("03", "train_pointcloud"),
    Stage("04", "train_ensemble"),
    Stage("05", "train_hierarchical"),
    Stage("06", "cca"),
    Stage("07", "clustering"),
    Stage("08", "forecasting"),
    Stage("09", "evaluation"),
    Stage("10", "release"),
    Stage("11", "figures"),
)


class StageFailed(RuntimeError):
    """A stage's notebook raised; the message names the executed notebook with the traceback."""


def find_stage(key: str) -> Stage:
    """A stage by number (``01`` or ``1``), name (``curation``) or stem (``01_curation``)."""
    for stage in STAGES:
        if key in (stage.number, stage.name, stage.stem) or (key.isdigit() and int(key) == int(stage.number)):
            return stage
    raise SystemExit(f"unknown stage {key!r}; stages: {', '.join(s.stem for s in STAGES)}")


def select(only: str | None = None, start: str | None = None) -> list[Stage]:
    """The stages to consider: one (``only``), those from ``start`` on, or all."""
    if only:
        return [find_stage(only)]
    if start:
        first = STAGES.index(find_stage(start))
        return list(STAGES[first:])
    return list(STAGES)


def stage_inputs(stage: Stage, paths: ProfilePaths) -> list[Path]:
    """Files whose change makes a stage stale."""
    root = paths.root
    inputs = [stage.notebook(root), root / "params" / "common.yaml", root / "params" / f"{paths.profile}.yaml"]
    inputs += sorted((root / "lib" / "sematlas").rglob("*.py"))
    inputs += [earlier.stamp(paths) for earlier in STAGES[: STAGES.index(stage)]]
    return inputs


def is_fresh(stage: Stage, paths: ProfilePaths) -> bool:
    """Whether a stage's last successful run is newer than all of its inputs."""
    stamp = stage.stamp(paths)
    if not stamp.is_file() or not stage.executed(paths).is_file():
        return False
    newest = max((p.stat().st_mtime for p in stage_inputs(stage, paths) if p.exists()), default=0.0)
    return stamp.stat().st_mtime >= newest


def load_notebook(path: Path):  # -> nbformat.NotebookNode
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
    """Execute one stage with papermill; return its wall time in seconds.

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
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            load_notebook(stage.notebook(paths.root)),
            str(executed),
            parameters={"profile": paths.profile},
            cwd=str(paths.root),
            kernel_name="python3",
            language="python",
            progress_bar=True,
        )
    except PapermillExecutionError as error:
        raise StageFailed(
            f"stage {stage.stem} failed on profile '{paths.profile}' ({error.ename}: {error.evalue}).\n"
            f"The executed notebook with the traceback is {executed}"
        ) from None
    stamp.touch()
    return time.perf_counter() - started


def run(
    profile: str, only: str | None = None, start: str | None = None, force: bool = False, root: Path | None = None
) -> dict[str, float]:
    """Run the selected stages of a profile in order; return wall seconds per stage run."""
    root = root or project_root()
    load_params(profile, root)  # fail on bad parameters before any stage starts
    paths = ProfilePaths.for_profile(profile, root)
    timings: dict[str, float] = {}
    for stage in select(only, start):
        if not force and is_fresh(stage, paths):
            print(f"[sematlas] {stage.stem}: up to date, skipped (--force reruns it)", flush=True)
            continue
        print(f"[sematlas] {stage.stem}: running on profile '{profile}' -> {stage.executed(paths)}", flush=True)
        timings[stage.stem] = run_stage(stage, paths)
        print(f"[sematlas] {stage.stem}: done in {timings[stage.stem]:.1f} s", flush=True)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sematlas.pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run stages of a profile")
    run_parser.add_argument("profile", choices=PROFILES)
    group = run_parser.add_mutually_exclusive_group()
    group.add_argument("--only", metavar="STAGE", help="run just this stage (number or name)")
    group.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and the ones after it")
    run_parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    sub.add_parser("stages", help="list the stages")
    args = parser.parse_args(argv)
    if args.command == "stages":
        for stage in STAGES:
            print(stage.stem)
        return 0
    check_variants(load_params(args.profile))
    try:
        timings = run(args.profile, only=args.only, start=args.start, force=args.force)
    except StageFailed as error:
        print(f"[sematlas] ERROR: {error}", file=sys.stderr, flush=True)
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
