"""``sematlas studies``: the curated studies a profile trains on, filtered by task category and years.

The rows of stage 01's ``data/processed/<profile>/studies.parquet``, oldest first,
with a count line; ``--csv`` writes every matching row (not only the ``--limit``
shown) to a file.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
from typing import Any

import pandas as pd

from sematlas.cli.common import CliError, echo, output_path, profile_paths, stage_command

logger = logging.getLogger(__name__)

#: The columns listed, in order, where the table has them (``doi`` is in tables curated from v7 metadata with DOIs).
COLUMNS = ("id", "year", "task_category", "n_peaks", "sample_size", "doi", "title")
#: Columns aligned as numbers (``sample_size`` is text once its missing values are blanked).
_NUMBERS = frozenset({"year", "n_peaks", "sample_size"})
#: Characters of a title shown in the terminal (the CSV keeps it whole).
_TITLE_WIDTH = 70

DESCRIPTION = (
    "List the curated studies a profile trains on (stage 01's studies.parquet), oldest first, "
    "filtered by task category and an inclusive year range, with a count line. "
    "--csv writes every matching row, not only the --limit shown."
)

EXAMPLE = """example:
  sematlas studies --task working_memory --year 2010:2015 --limit 5
  sematlas studies --year 2018 --csv studies_2018.csv"""


def add_parser(sub: Any) -> None:
    """Register ``studies`` on the subparsers ``sub`` of the ``sematlas`` parser."""
    parser = sub.add_parser(
        "studies",
        help="list the curated studies, by task category and years",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", metavar="NAME", help="only this task category (e.g. working_memory)")
    parser.add_argument(
        "--year", metavar="A:B", help="only these years, inclusive: 2010:2015, 2012, 2010: or :2005 (default all)"
    )
    parser.add_argument("--profile", default="quick", help="profile whose curated table to read (default quick)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="rows shown (default 20; 0: all)")
    parser.add_argument("--csv", metavar="OUT.csv", help="also write every matching row to this CSV file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """List (and with ``--csv`` write) the studies matching ``args``.

    Raises
    ------
    CliError
        An unknown profile or task category, a bad year range or limit, no studies table, a missing CSV folder.
    """
    years = parse_years(args.year)
    if args.limit < 0:
        raise CliError(f"--limit must be 0 (all) or more, got {args.limit}")
    csv_path = output_path(args.csv, ".csv", "--csv") if args.csv else None
    paths = profile_paths(args.profile)
    table = paths.processed / "studies.parquet"
    if not table.is_file():
        raise CliError(
            f"profile '{args.profile}' has no curated studies ({table} is missing); "
            f"stage 01 writes it: {stage_command(args.profile, '01')}"
        )
    studies = pd.read_parquet(table)
    if args.task is not None:
        _check_category(args.task, studies["task_category"])
    rows = select(studies, args.task, years)
    logger.debug("%d of %d studies of %s match", len(rows), len(studies), table)
    if csv_path is not None:
        from sematlas.core.io import atomic_path

        with atomic_path(csv_path) as tmp:
            rows.to_csv(tmp, index=False)
    echo(_listing(rows, len(studies), args, years))
    if csv_path is not None:
        echo(f"wrote {len(rows)} rows to {csv_path}")


def parse_years(text: str | None) -> tuple[int | None, int | None]:
    """``"2010:2015"`` -> ``(2010, 2015)``; ``"2012"`` -> ``(2012, 2012)``; an open end is None.

    Parameters
    ----------
    text : str or None
        None: every year.

    Returns
    -------
    tuple of (int or None, int or None)
        The first and last year, inclusive.

    Raises
    ------
    CliError
        Not ``A:B``, ``A``, ``A:`` or ``:B`` with four-digit years, or ``A > B``.
    """
    if text is None:
        return None, None
    match = re.fullmatch(r"\s*(\d{4})?\s*(:)?\s*(\d{4})?\s*", text)
    if match is None or not (match.group(1) or match.group(3)) or (match.group(3) and not match.group(2)):
        raise CliError(f"--year {text!r}: give a year or an inclusive range FIRST:LAST, e.g. 2010:2015, 2012, 2010:")
    first = int(match.group(1)) if match.group(1) else None
    last = int(match.group(3)) if match.group(3) else (first if not match.group(2) else None)
    if first is not None and last is not None and first > last:
        raise CliError(f"--year {text!r}: the first year {first} is after the last {last}")
    return first, last


def select(studies: pd.DataFrame, task: str | None, years: tuple[int | None, int | None]) -> pd.DataFrame:
    """The studies of one task category (None: all) published in ``years`` (inclusive), oldest first.

    Parameters
    ----------
    studies : DataFrame
        Stage 01's table (``id``, ``year``, ``task_category`` ...).
    task : str or None
    years : tuple of (int or None, int or None)
        As :func:`parse_years` returns them.

    Returns
    -------
    DataFrame
        The :data:`COLUMNS` the table has, sorted by year then id, index reset.
    """
    keep = pd.Series(True, index=studies.index)
    if task is not None:
        keep &= studies["task_category"] == task
    if years[0] is not None:
        keep &= studies["year"] >= years[0]
    if years[1] is not None:
        keep &= studies["year"] <= years[1]
    columns = [column for column in COLUMNS if column in studies.columns]
    return studies.loc[keep, columns].sort_values(["year", "id"], kind="stable").reset_index(drop=True)


def _check_category(task: str, categories: pd.Series) -> None:
    """Raise a :class:`CliError` naming the known categories (and the closest one) when ``task`` is none of them."""
    known = sorted(str(name) for name in categories.unique())
    if task not in known:
        close = difflib.get_close_matches(task, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CliError(f"unknown task category {task!r}{hint}; known: {', '.join(known)}")


def _listing(rows: pd.DataFrame, total: int, args: argparse.Namespace, years: tuple[int | None, int | None]) -> str:
    """The count line, then the first ``--limit`` rows as an aligned table."""
    where = [f"task {args.task}"] if args.task else []
    if years != (None, None):
        where.append(f"years {years[0] or '...'}-{years[1] or '...'}")
    shown = rows if args.limit == 0 else rows.head(args.limit)
    count = f"{len(rows)} of {total} studies" + (f" ({', '.join(where)})" if where else "")
    if len(shown) < len(rows):
        count += f"; showing the first {len(shown)} (--limit 0 for all)"
    if rows.empty:
        return count
    table = shown.copy()
    if "sample_size" in table:
        table["sample_size"] = table["sample_size"].map(lambda n: "" if pd.isna(n) else f"{n:.0f}")
    if "doi" in table:
        table["doi"] = table["doi"].fillna("")
    if "title" in table:
        table["title"] = table["title"].fillna("").map(_shorten)
    return count + "\n" + _format_table(table)


def _format_table(table: pd.DataFrame) -> str:
    """Aligned columns, numbers to the right and text to the left, no trailing spaces."""
    cells = {column: [str(value) for value in table[column]] for column in table.columns}
    widths = {column: max(len(column), *(len(value) for value in cells[column])) for column in table.columns}
    right = {c: c in _NUMBERS or pd.api.types.is_numeric_dtype(table[c]) for c in table.columns}

    def line(values: dict[str, str]) -> str:
        parts = [values[c].rjust(widths[c]) if right[c] else values[c].ljust(widths[c]) for c in table.columns]
        return "  ".join(parts).rstrip()

    header = line({column: column for column in table.columns})
    return "\n".join([header, *(line({c: cells[c][i] for c in table.columns}) for i in range(len(table)))])


def _shorten(title: str) -> str:
    return title if len(title) <= _TITLE_WIDTH else title[: _TITLE_WIDTH - 3] + "..."
