"""Whether a stage's last run still stands, from content hashes of what the registry declares.

A stage's completion stamp (``notebooks/executed/<profile>/.NN_name.done``, JSON)
records the SHA-256 of every input it ran with (its notebook, ``params/common.yaml``,
the profile's parameter file and any declared extra ones, the ``.py`` files of the
package root and of its declared library code, the declared environment
variables' values, and the output digest recorded in the stamp of each stage it
reads) and of every output it wrote. A stage is fresh when those inputs still
hash the same and its outputs are all still there: editing a widget reruns
nothing, editing ``data/`` reruns stage 01 and every stage downstream of it, and
a copy or clone of a finished tree (new modification times, same content) is
fresh. A stage that reruns with byte-identical outputs leaves its readers fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sematlas.core.io import read_json, sha256_file, write_json
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline.registry import (
    Stage,
    UnknownStage,
    find_stage,
    output_folders,
    output_name,
    writer,
)

#: Bumped when the stamp's layout changes; a stamp of another version makes its stage stale.
STAMP_VERSION = 1


def library_files(stage: Stage, root: Path) -> list[Path]:
    """The package root's own modules and the ``.py`` files of the stage's declared library code.

    A subpackage contributes all of its files; a module (``pipeline.registry``)
    its own file and the ``__init__.py`` of each package above it, which importing
    it runs.

    Raises
    ------
    FileNotFoundError
        Naming a declared subpackage or module that ``lib/sematlas`` does not hold.
    """
    package = root / "lib" / "sematlas"
    files = sorted(package.glob("*.py"))
    for unit in stage.library:
        location = package.joinpath(*unit.split("."))
        if location.is_dir():
            files += sorted(location.rglob("*.py"))
        elif location.with_suffix(".py").is_file():
            parents = [folder / "__init__.py" for folder in location.parents if package in folder.parents]
            files += [p for p in reversed(parents) if p.is_file()] + [location.with_suffix(".py")]
        else:
            raise FileNotFoundError(f"stage {stage.stem} declares library code '{unit}', which {package} does not hold")
    return list(dict.fromkeys(files))


def _input_files(stage: Stage, paths: ProfilePaths) -> list[Path]:
    root, params = paths.root, paths.root / "params"
    files = [stage.notebook(root), params / "common.yaml", params / f"{paths.profile}.yaml"]
    files += sorted(p for pattern in stage.parameter_files for p in params.glob(pattern))
    return files + library_files(stage, root)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_stamp(stage: Stage, paths: ProfilePaths) -> dict[str, Any] | None:
    """The stamp's content, or None when there is none or it is not this runner's (an empty file of old)."""
    try:
        stamp = read_json(stage.stamp(paths))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("version") == STAMP_VERSION else None


def inputs(stage: Stage, paths: ProfilePaths) -> dict[str, str]:
    """Everything the stage's run depends on -> its digest (or value).

    Keys are project-relative file paths, ``$NAME`` for environment variables and
    ``stage NN_name`` for the output digest of each stage it reads (``"not run"``
    when that stage has no stamp).
    """
    recorded = {
        file.relative_to(paths.root).as_posix(): sha256_file(file) if file.is_file() else "missing"
        for file in _input_files(stage, paths)
    }
    recorded |= {f"${name}": os.environ.get(name, "") for name in stage.environment}
    for number in stage.reads:
        upstream = find_stage(number)
        stamp = _read_stamp(upstream, paths)
        recorded[f"stage {upstream.stem}"] = stamp["outputs_sha256"] if stamp else "not run"
    return recorded


def _owner(file: Path, paths: ProfilePaths) -> Stage | None:
    try:
        return writer(output_name(file, paths))
    except UnknownStage:  # a file no stage declares (a note left by hand) belongs to none
        return None


def outputs(stage: Stage, paths: ProfilePaths) -> dict[str, dict[str, Any]]:
    """Every file the stage owns now (:func:`sematlas.pipeline.registry.writer`) -> ``sha256`` and ``size``.

    Hidden files (atomic writes in progress, checkpoints of editors) are left out.
    """
    kinds = {declaration.split("/", 1)[0] for declaration in stage.writes}
    folders = [folder for kind, folder in output_folders(paths).items() if kind in kinds]
    owned = {}
    for folder in folders:
        for file in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in file.relative_to(folder).parts)
            if file.is_file() and not hidden and _owner(file, paths) == stage:
                name = file.relative_to(paths.root).as_posix()
                owned[name] = {"sha256": sha256_file(file), "size": file.stat().st_size}
    return owned


def write_stamp(stage: Stage, paths: ProfilePaths, ran_with: Mapping[str, str]) -> Path:
    """Record a successful run: the inputs it started with and the outputs it left.

    Parameters
    ----------
    ran_with : mapping
        :func:`inputs` as computed before the run, so an edit made while it ran
        still makes the stage stale.
    """
    written = outputs(stage, paths)
    stamp = {
        "version": STAMP_VERSION,
        "stage": stage.stem,
        "profile": paths.profile,
        "inputs": dict(ran_with),
        "outputs": written,
        "outputs_sha256": _digest(written),
    }
    return write_json(stamp, stage.stamp(paths))


def _changed(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    return sorted(key for key in recorded.keys() | current.keys() if recorded.get(key) != current.get(key))


def why_stale(stage: Stage, paths: ProfilePaths) -> str | None:
    """Why the stage must run again, or None when its last run stands."""
    stamp = _read_stamp(stage, paths)
    if stamp is None:
        return "no record of a finished run"
    if not stage.executed(paths).is_file():
        return f"its executed notebook {stage.executed(paths).relative_to(paths.root)} is missing"
    changed = _changed(stamp["inputs"], inputs(stage, paths))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]} changed{more}"
    for name, output in stamp["outputs"].items():
        file = paths.root / name
        if not file.is_file() or file.stat().st_size != output["size"]:
            return f"its output {name} is missing or was rewritten"
    return None


def plan(paths: ProfilePaths, stages: Sequence[Stage]) -> dict[str, str]:
    """The stages of ``stages`` that a run would execute -> why, in order.

    A stage reading one that reruns is listed too (its input may change); the
    run itself decides it once that upstream stage has finished, and skips it if
    the upstream outputs came out byte-identical.
    """
    reruns: dict[Stage, str] = {}
    for stage in stages:
        reason = why_stale(stage, paths)
        upstream = [earlier for earlier in reruns if earlier.number in stage.reads]
        if reason is None and upstream:
            reason = f"it reads {upstream[0].stem}, which reruns"
        if reason is not None:
            reruns[stage] = reason
    return {stage.stem: reason for stage, reason in reruns.items()}
