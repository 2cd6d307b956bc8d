"""The stage registry: one table of the compendium's eleven stages.

Each :class:`Stage` declares its notebook (``notebooks/NN_name.py``), the library
code it runs (subpackages of :mod:`sematlas`, or a single module such as
``pipeline.registry``), the earlier stages whose outputs it reads, and what it
writes. Outputs are paths relative to the profile's data folders (:data:`OUTPUT_KINDS`):
``raw/neurosynth`` (``data/raw``, shared by the profiles), ``processed/...``,
``models/...``, ``results/...``, ``release`` and ``figures/...``. A declaration
may hold a shell wildcard (``results/*``, ``figures/cca_*``); a path matched by
several declarations belongs to the most specific one (literal before wildcard,
then the longer), so stage 02 owns every model and results folder that no other
stage names: those of the volumetric variants, whatever ``model.variants`` lists.

:mod:`sematlas.pipeline.freshness` hashes what these declarations name, and
reporting and the widgets ask :func:`writer` which stage writes a file instead of
typing stage numbers. This module imports only :mod:`sematlas.core`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from sematlas.core.paths import ProfilePaths

#: Output kinds: the first part of every ``writes`` declaration, and the folder it is relative to.
OUTPUT_KINDS = ("raw", "processed", "models", "results", "release", "figures")

_WILDCARDS = frozenset("*?[")


class UnknownStage(ValueError):
    """No stage has the number, name or stem asked for, or no stage writes the path asked about."""


@dataclass(frozen=True)
class Stage:
    """One notebook of the compendium and what it depends on.

    Parameters
    ----------
    number : str
        Two-digit order, e.g. ``"01"``.
    name : str
        What the notebook produces, e.g. ``"curation"``.
    library : tuple of str
        The code it runs: subpackages of :mod:`sematlas` (``"data"``) or modules
        (``"pipeline.registry"``), every one its notebook's imports reach.
    reads : tuple of str
        Numbers of the earlier stages whose outputs it reads.
    writes : tuple of str
        Its outputs, ``<kind>/<path>`` with ``kind`` one of :data:`OUTPUT_KINDS`.
    parameter_files : tuple of str
        Files under ``params/`` it reads besides ``common.yaml`` and the profile's
        file (globs, e.g. ``"ablations/*.yaml"``).
    environment : tuple of str
        Environment variables whose value changes what it does.
    """

    number: str
    name: str
    library: tuple[str, ...]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    parameter_files: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        return f"{self.number}_{self.name}"

    def notebook(self, root: Path) -> Path:
        return root / "notebooks" / f"{self.stem}.py"

    def executed(self, paths: ProfilePaths) -> Path:
        return paths.executed / f"{self.stem}.ipynb"

    def stamp(self, paths: ProfilePaths) -> Path:
        return paths.executed / f".{self.stem}.done"


#: Every stage's results, which the release and the manuscript figures gather.
_ALL_RESULTS = ("01", "02", "03", "04", "05", "06", "07", "08", "09")

STAGES: tuple[Stage, ...] = (
    Stage(
        "01",
        "curation",
        library=("core", "data"),
        writes=("raw/neurosynth", "processed/*", "figures/curation_*"),
        environment=("SEMATLAS_DATA_MIRROR",),
    ),
    Stage(
        "02",
        "train_volumetric",
        library=("core", "data", "evaluation", "inference", "models", "reporting", "training"),
        reads=("01",),
        writes=("models/*", "results/*", "figures/volumetric_*"),
    ),
    Stage(
        "03",
        "train_pointcloud",
        library=("core", "data", "evaluation", "inference", "models", "reporting", "training"),
        reads=("01",),
        writes=("processed/pointcloud.h5", "models/pointcloud", "results/pointcloud", "figures/pointcloud_*"),
    ),
    Stage(
        "04",
        "train_ensemble",
        library=("core", "data", "evaluation", "inference", "models", "reporting", "training"),
        reads=("01", "02"),
        writes=("models/ensemble", "results/ensemble", "figures/ensemble_*"),
    ),
    Stage(
        "05",
        "train_hierarchical",
        library=("analysis", "core", "data", "evaluation", "inference", "models", "reporting", "training"),
        reads=("01", "02"),
        writes=("models/hvae", "results/hvae", "results/hierarchical", "figures/hierarchical_*"),
    ),
    Stage(
        "06",
        "cca",
        library=("analysis", "core", "data", "evaluation", "inference", "models", "reporting"),
        reads=("01", "02", "03"),
        writes=("results/cca", "figures/cca_*"),
    ),
    Stage(
        "07",
        "clustering",
        library=("analysis", "core", "evaluation", "inference", "models", "reporting"),
        reads=("01", "02"),
        writes=("results/clustering", "figures/clustering_*"),
    ),
    Stage(
        "08",
        "forecasting",
        library=("analysis", "core", "evaluation", "inference", "models", "pipeline.registry", "reporting"),
        reads=("01", "02", "07"),
        writes=("results/forecasting", "figures/forecasting_*"),
    ),
    Stage(
        "09",
        "evaluation",
        library=(
            "analysis",
            "core",
            "data",
            "evaluation",
            "inference",
            "models",
            "pipeline.registry",
            "reporting",
            "training",
        ),
        reads=("01", "02"),
        writes=("models/ablations", "results/ablations", "results/evaluation", "figures/evaluation_*"),
        parameter_files=("ablations/*.yaml",),
    ),
    Stage(
        "10",
        "release",
        library=("analysis", "core", "data", "evaluation", "inference", "models", "release", "reporting", "training"),
        reads=_ALL_RESULTS,
        writes=("release",),
    ),
    Stage(
        "11",
        "figures",
        library=(
            "analysis",
            "core",
            "data",
            "evaluation",
            "inference",
            "models",
            "pipeline.registry",
            "reporting",
        ),
        reads=_ALL_RESULTS,
        writes=("figures/manuscript",),
    ),
)


def find_stage(key: str) -> Stage:
    """A stage by number (``01`` or ``1``), name (``curation``) or stem (``01_curation``).

    Raises
    ------
    UnknownStage
        Listing the stages there are.
    """
    for stage in STAGES:
        if key in (stage.number, stage.name, stage.stem) or (key.isdigit() and int(key) == int(stage.number)):
            return stage
    raise UnknownStage(f"unknown stage {key!r}; stages: {', '.join(s.stem for s in STAGES)}")


def select(only: str | None = None, start: str | None = None) -> list[Stage]:
    """The stages to consider: one (``only``), those from ``start`` on, or all."""
    if only:
        return [find_stage(only)]
    if start:
        first = STAGES.index(find_stage(start))
        return list(STAGES[first:])
    return list(STAGES)


def _specificity(declaration: PurePosixPath) -> tuple[bool, int]:
    """Literal declarations before wildcard ones, then the longer first."""
    return (not any(_WILDCARDS & set(part) for part in declaration.parts), len(declaration.parts))


def _claims(declaration: PurePosixPath, output: PurePosixPath) -> bool:
    """Whether ``output`` is the declared path or lies inside it, part by part (wildcards within a part)."""
    parts = declaration.parts
    return len(output.parts) >= len(parts) and all(map(fnmatchcase, output.parts[: len(parts)], parts))


def writer(output: str) -> Stage:
    """The stage that writes ``output``, a path relative to the profile's data folders.

    Parameters
    ----------
    output : str
        ``<kind>/<path>``, e.g. ``"results/cca/results.json"``, ``"processed/manifest.json"``
        or ``"results/clustering"``.

    Raises
    ------
    UnknownStage
        When no stage declares it.
    """
    path = PurePosixPath(output)
    candidates = [
        (_specificity(declaration), stage)
        for stage in STAGES
        for declaration in map(PurePosixPath, stage.writes)
        if _claims(declaration, path)
    ]
    if not candidates:
        raise UnknownStage(f"no stage writes {output!r}; outputs are <kind>/<path> with kind one of {OUTPUT_KINDS}")
    return max(candidates, key=lambda candidate: candidate[0])[1]


def output_folders(paths: ProfilePaths) -> dict[str, Path]:
    """Output kind -> the folder its declarations are relative to."""
    return {kind: getattr(paths, kind) for kind in OUTPUT_KINDS}


def output_name(path: Path, paths: ProfilePaths) -> str:
    """``<kind>/<path>`` of a file or folder inside the profile's output folders, as :func:`writer` takes it.

    Raises
    ------
    UnknownStage
        When ``path`` lies in none of them.
    """
    for kind, folder in output_folders(paths).items():
        if path == folder or folder in path.parents:
            return PurePosixPath(kind, *path.relative_to(folder).parts).as_posix()
    raise UnknownStage(f"{path} is in none of the output folders of profile '{paths.profile}'")


def writer_of(path: Path, paths: ProfilePaths) -> Stage:
    """The stage that writes ``path``, a file or folder under the profile's output folders."""
    return writer(output_name(path, paths))
