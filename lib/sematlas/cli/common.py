"""What every subcommand of the ``sematlas`` command line shares: its error, its output, profiles and paths.

A bad input raises :class:`CliError`; :func:`sematlas.cli.main` prints its message as
one line ``sematlas: error: ...`` on stderr and exits with status 2, as argparse does
for a bad option. Everything a command shows the user goes through :func:`echo`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sematlas.core.params import PROFILES
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline.registry import find_stage

#: The exit status of a bad input (argparse's).
USAGE_ERROR = 2


class CliError(Exception):
    """A bad input to the command line: its message is the one line the user sees."""


def echo(text: str = "") -> None:
    """Write one block of the command's output to stdout (the only place the CLI prints).

    Parameters
    ----------
    text : str
        Printed as is, with a final newline.
    """
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def profile_paths(profile: str) -> ProfilePaths:
    """The output folders of ``profile`` in the project root (``SEMATLAS_ROOT`` or found from here).

    Parameters
    ----------
    profile : str
        One of :data:`sematlas.core.params.PROFILES`.

    Returns
    -------
    ProfilePaths

    Raises
    ------
    CliError
        An unknown profile (listing the known ones), or no project root.
    """
    if profile not in PROFILES:
        raise CliError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    try:
        return ProfilePaths.for_profile(profile)
    except FileNotFoundError as error:
        raise CliError(str(error)) from error


def stage_command(profile: str, stage: str) -> str:
    """How to run one pipeline stage of ``profile``, e.g. ``./run_all.sh quick --only 02 (02_train_volumetric)``.

    Parameters
    ----------
    profile : str
    stage : str
        A stage number, name or stem (:func:`sematlas.pipeline.registry.find_stage`).

    Returns
    -------
    str
    """
    found = find_stage(stage)
    return (
        f"./run_all.sh {profile} --only {found.number} "
        f"(or python -m sematlas.pipeline run {profile} --only {found.number}; stage {found.stem})"
    )


def output_path(path: str | Path, suffix: str, what: str) -> Path:
    """A file the command will write: its name ends with ``suffix`` and its folder exists.

    Parameters
    ----------
    path : str or Path
    suffix : str
        E.g. ``".nii.gz"``.
    what : str
        The option that named it, for the message (``-o``, ``--sd``).

    Returns
    -------
    Path

    Raises
    ------
    CliError
        Another suffix, a missing folder, or a folder in the file's place.
    """
    target = Path(path)
    if not target.name.endswith(suffix) or target.name == suffix:
        raise CliError(f"{what} {target}: the file name must end with {suffix}")
    if not target.parent.is_dir():
        raise CliError(f"{what} {target}: the folder {target.parent} does not exist (create it first)")
    if target.is_dir():
        raise CliError(f"{what} {target} is a folder, not a file")
    return target
