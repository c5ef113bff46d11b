"""One rich console for the whole program (stderr, so stdout stays clean for translations and JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import sys

# Logs and CI have no terminal size; a fixed width keeps the benchmark table's columns readable there.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def progress_bar(**kwargs) -> Progress:
    """A progress bar with count, elapsed and remaining time, plus a free-text status field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        **kwargs,
    )
