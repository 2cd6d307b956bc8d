"""Serve a demo notebook as a web app with Voila, for any profile.

The demos are Jupytext notebooks (``notebooks/demos/<demo>.py``) whose only
parameter is ``profile = "quick"``. Voila serves an ``.ipynb``, so this writes a
parametrised copy, as papermill does for the stages (its parameters cell
followed by an injected ``profile = ...`` cell), to
``notebooks/executed/<profile>/demos/<demo>.ipynb``, and starts Voila on it::

    python -m sematlas.widgets serve counterfactual_machine --profile ci --port 8866
    python -m sematlas.widgets notebook latent_slider --profile quick   # only write the .ipynb

For the default profile the paired notebook is enough: ``voila notebooks/demos/<demo>.ipynb``
(``./run_all.sh`` setup pairs every ``.py`` with its ``.ipynb``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sematlas.core.paths import ProfilePaths, project_root

DEMOS = ("latent_slider", "counterfactual_machine", "confidence_explorer", "discovery_platform")


def demo_source(demo: str, root: Path | None = None) -> Path:
    """The Jupytext source of a demo, ``notebooks/demos/<demo>.py``."""
    if demo not in DEMOS:
        raise ValueError(f"unknown demo {demo!r}; choose one of {', '.join(DEMOS)}")
    return (root or project_root()) / "notebooks" / "demos" / f"{demo}.py"


def write_demo_notebook(demo: str, profile: str, target: Path | None = None, source_root: Path | None = None) -> Path:
    """Write the demo as an ``.ipynb`` with ``profile`` injected after its parameters cell.

    Parameters
    ----------
    demo : str
        One of :data:`DEMOS`.
    profile : str
    target : Path, optional
        Default ``notebooks/executed/<profile>/demos/<demo>.ipynb``.
    source_root : Path, optional
        The project whose ``notebooks/demos/`` holds the source (default: this one).

    Returns
    -------
    Path
    """
    import jupytext
    import nbformat
    from papermill.parameterize import parameterize_notebook

    notebook = jupytext.read(demo_source(demo, source_root))
    notebook.metadata.pop("jupytext", None)  # a plain notebook: no pairing with the .py
    notebook.metadata["papermill"] = nbformat.NotebookNode()  # what papermill's own loader adds
    for cell in notebook.cells:
        cell.metadata.setdefault("tags", [])
    notebook = parameterize_notebook(notebook, {"profile": profile})
    for cell in notebook.cells:
        if not cell.metadata["tags"]:
            del cell.metadata["tags"]
    target = target or ProfilePaths.for_profile(profile).executed / "demos" / f"{demo}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def voila_command(notebook: Path, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The command line that serves ``notebook`` on ``localhost:port`` (no browser opened)."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", *extra]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sematlas.widgets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "write the notebook and serve it with Voila"), ("notebook", "only write it")):
        command = commands.add_parser(name, help=text)
        command.add_argument("demo", choices=DEMOS)
        command.add_argument("--profile", default="quick")
        command.add_argument("--output", type=Path, help="where to write the .ipynb")
        if name == "serve":
            command.add_argument("--port", type=int, default=8866)
    args, extra = parser.parse_known_args(argv)
    notebook = write_demo_notebook(args.demo, args.profile, args.output)
    print(f"[sematlas] {args.demo} for profile '{args.profile}': {notebook}")
    if args.command == "notebook":
        return 0
    voila = voila_command(notebook, args.port, extra)
    print(f"[sematlas] serving on http://localhost:{args.port}/ : {' '.join(voila)}")
    os.execv(voila[0], voila)
    return 0  # pragma: no cover (execv does not return)
