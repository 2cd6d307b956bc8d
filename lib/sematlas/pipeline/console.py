"""What the terminal shows while a stage runs: its progress bars, copied live from the stage's kernel.

A stage's kernel prints into its executed notebook, not to the terminal that
started ``./run_all.sh`` (ipykernel captures even the kernel's file descriptors).
:class:`StageConsole` gives the kernel a side channel instead: a temporary file
named in its environment (:data:`sematlas.core.progress.PROGRESS_FILE`), where
every bar of :mod:`sematlas.core.progress` and of the training loop writes its
text, and a thread that copies what the file gains to the terminal. The runner's
own bar over the notebook's cells writes through the same console, so one writer
owns the line.

On a terminal each redraw first clears the line (bars of different lengths
take turns on it); elsewhere (a log file, CI) only the last state of each bar
that was left on screen is written, one line per loop, instead of every redraw.
"""

from __future__ import annotations

import codecs
import os
import re
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

from sematlas.core.progress import PROGRESS_COLUMNS, PROGRESS_FILE, PROGRESS_LABEL

#: Seconds between looks at the side channel.
POLL_SECONDS = 0.2

_CLEAR_LINE = "\x1b[K"
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _last_state(line: str) -> str:
    """What a line of redraws ends up showing: the text after its last carriage return, without escapes."""
    return _ESCAPE.sub("", line.rsplit("\r", 1)[-1]).rstrip()


def terminal_columns(stream: IO[str], fallback: int = 100) -> int:
    """Usable width of ``stream``'s terminal (one less than its width, so a full line never wraps)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns - 1
    except (OSError, ValueError, AttributeError):
        return fallback


class StageConsole:
    """The side channel of one stage run and its copy to ``stream``; a context manager around the run.

    Parameters
    ----------
    label : str
        What runs (the stage's stem), put in front of every bar by the kernel.
    stream : file
        Where the user looks: the runner's standard error.
    interactive : bool, optional
        Whether ``stream`` is a terminal that redraws lines (default: ``stream.isatty()``).
    """

    def __init__(self, label: str, stream: IO[str], interactive: bool | None = None) -> None:
        self.label = label
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.columns = terminal_columns(stream)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # non-interactive: the unfinished line
        self._tail = ""  # interactive: what the current line shows since its last carriage return
        self._environment: dict[str, str | None] = {}
        self._path: Path | None = None
        self._channel: IO[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def encoding(self) -> str:
        """The stream's encoding (tqdm draws its bar in blocks when it is UTF-8)."""
        return getattr(self.stream, "encoding", None) or "utf-8"

    def __enter__(self) -> StageConsole:
        handle, name = tempfile.mkstemp(prefix=f"sematlas-{self.label}-", suffix=".progress")
        os.close(handle)
        self._path = Path(name)
        self._channel = self._path.open("rb")
        # The kernel inherits the runner's environment when it starts.
        kernel = {PROGRESS_FILE: name, PROGRESS_LABEL: self.label, PROGRESS_COLUMNS: str(self.columns)}
        for key, value in kernel.items():
            self._environment[key] = os.environ.get(key)
            os.environ[key] = value
        self._thread = threading.Thread(target=self._follow, name=f"progress {self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.drain()
        self._finish_line()
        for key, value in self._environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._channel is not None:
            self._channel.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    # ---- the file-like face tqdm writes the runner's cell bar to ------------------------------------

    def write(self, text: str) -> int:
        """Show ``text`` (a bar's redraw) after whatever the kernel wrote before it."""
        with self._lock:
            self._copy_new()
            self._show(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    # ---- copying the side channel -------------------------------------------------------------------

    def drain(self) -> None:
        """Copy everything the side channel holds now."""
        with self._lock:
            self._copy_new()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.drain()

    def _copy_new(self) -> None:
        if self._channel is None:
            return
        data = self._channel.read()
        if data:
            self._show(self._decoder.decode(data))

    def _show(self, text: str) -> None:
        if self.interactive:
            self.stream.write(text.replace("\r", "\r" + _CLEAR_LINE))
            cut = max(text.rfind("\r"), text.rfind("\n"))
            self._tail = text[cut + 1 :] if cut >= 0 else self._tail + text
        else:
            self._pending += text
            *finished, self._pending = self._pending.split("\n")
            for state in filter(None, map(_last_state, finished)):
                self.stream.write(state + "\n")
        self.stream.flush()

    def _finish_line(self) -> None:
        """Leave the cursor at a line's start for what the runner prints next."""
        if self.interactive and self._tail.strip():
            self.stream.write("\n")
            self._tail = ""
        elif not self.interactive:
            state = _last_state(self._pending)
            if state:  # a bar cut short (the stage failed): its last state
                self.stream.write(state + "\n")
            self._pending = ""
        self.stream.flush()


__all__ = ["POLL_SECONDS", "StageConsole", "terminal_columns"]
