"""The ``sematlas`` command line: use a trained atlas without a notebook.

``sematlas generate`` writes the atlas's map for a query (free text, a task category
or topic weights) as NIfTI; ``sematlas studies`` lists the curated studies a profile
trains on. Both read a profile's outputs (``--profile``, default ``quick``) under the
project root (``SEMATLAS_ROOT``, or the folder above the working directory that holds
``params/common.yaml``). A bad input prints one line ``sematlas: error: ...`` and exits
with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sematlas.cli import generate, studies
from sematlas.cli.common import USAGE_ERROR, CliError

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Use a trained sematlas atlas from the shell: generate writes the map of a query as NIfTI, "
    "studies lists the curated studies. Both read a profile's outputs (--profile, default quick) "
    "under the project root (SEMATLAS_ROOT, or the folder above the working directory holding "
    "params/common.yaml). A bad input prints one line 'sematlas: error: ...' and exits with status 2."
)

EXAMPLE = """examples:
  sematlas generate working memory --year 2012 -o wm.nii.gz
  sematlas studies --task pain --year 2010:2015

`sematlas COMMAND --help` describes each command."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sematlas",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the command does on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.add_parser(sub)
    studies.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a bad input (argparse exits with 2 itself on a bad option).
    """
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="[sematlas] %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.run(args)
    except CliError as error:
        sys.stderr.write(f"sematlas: error: {error}\n")
        return USAGE_ERROR
    return 0


__all__ = ["CliError", "main"]
