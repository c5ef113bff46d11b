"""One rich console for the whole program (stderr, so stdout stays clean for translations and JSON).

Long jobs also keep a plain-text log file (``log_to(path)``, e.g. a run directory's
``distill.log``): every ``console.log`` line and the periodic progress lines go there too, so a
run can be followed with ``tail -f`` whether or not a terminal watches it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Console(Console):
    """rich's Console whose ``log`` lines are also appended to the current log file."""

    log_file = None

    def log(self, *objects, **kwargs) -> None:
        super().log(*objects, **kwargs)
        self.to_log_file(" ".join(str(o) for o in objects))

    def to_log_file(self, message: str) -> None:
        """Append one plain line (markup removed) to the log file, if one is open."""
        if self.log_file is not None:
            from rich.errors import MarkupError
            from rich.text import Text

            try:
                plain = Text.from_markup(message).plain if "[" in message else message
            except MarkupError:
                plain = message
            from ekd_edge.files import writing

            with writing(self.log_file.name):   # a full disk names the log, like every other file written
                self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {plain}\n")
                self.log_file.flush()


# Logs and CI have no terminal size; a fixed width keeps the benchmark table's columns readable there,
# and log lines there carry no source-file column (it would be wrapped into the message).
_TTY = sys.stderr.isatty()
console = _Console(stderr=True, width=None if _TTY else 150, log_path=_TTY)


@contextlib.contextmanager
def log_to(path: str | Path):
    """Also write every log line to ``path`` (appended) while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = console.log_file
    fh = open(path, "a", encoding="utf-8")
    console.log_file = fh
    try:
        yield path
    finally:
        console.log_file = previous
        try:
            fh.close()
        except OSError:   # a line a full disk refused: already reported, it must not replace that error
            pass


PLAIN_PROGRESS_EVERY_S = 60.0


class _LoggedProgress(Progress):
    """A rich progress bar that also writes a plain line per task at most every ``every`` seconds
    (and when the task completes): to the log file under a terminal, to stderr without one (a
    cluster job, CI, nohup), where rich draws nothing until the end."""

    def __init__(self, *columns, every: float | None = PLAIN_PROGRESS_EVERY_S, **kwargs):
        super().__init__(*columns, **kwargs)
        self.every = every
        self._last_line: dict = {}   # task id → get_time() of its last line (-1: its final line is out)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if self.every is None or self.disable:
            return
        task = self._tasks[task_id]
        now = self.get_time()
        done = task.total is not None and task.completed >= task.total
        last = self._last_line.setdefault(task_id, task.start_time if task.start_time is not None else now)
        if now - last >= self.every or (done and last != -1.0):
            self._last_line[task_id] = -1.0 if done else now
            status = task.fields.get("status", "")
            line = (f"{task.description}: {task.completed:,.0f}/{task.total:,.0f}" if task.total else task.description) \
                + (f" · {status}" if status else "") + f" · {task.elapsed or 0:,.0f} s"
            console.to_log_file(line) if console.is_terminal else console.log(line)


def progress_bar(log_every: float | None = PLAIN_PROGRESS_EVERY_S, **kwargs) -> Progress:
    """A progress bar with count, elapsed and remaining time, plus a free-text status field.

    ``log_every``: seconds between the plain progress lines of a long task (None: none, for a
    caller that writes its own)."""
    return _LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        every=log_every,
        **kwargs,
    )
