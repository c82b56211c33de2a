"""Progress bars for long jobs: one look for every stage (rich), drawn only when there is a
console to draw on, and the chunked loop most of them run."""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn


def progress_bar(
    console: Console | None,
    *extra: ProgressColumn,
    description: str = "{task.description}",
    counter: ProgressColumn | None = None,
    transient: bool = False,
) -> Progress:
    """description | bar | done/total (or `counter`) | `extra` columns | elapsed; a no-op without a
    console. `transient` bars vanish when done (the caller prints a line per step instead)."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        counter or MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
        transient=transient,
    )


def chunks(console: Console | None, label: str, total: int, size: int) -> Iterator[slice]:
    """Slices [0, size), [size, 2 size), ... covering `total` rows; the bar advances by each slice
    once the caller has done it."""
    parts = (slice(start, min(start + size, total)) for start in range(0, total, size))
    with progress_bar(console, description=label) as progress:
        task = progress.add_task("rows", total=total)
        for part in parts:
            yield part
            progress.update(task, advance=part.stop - part.start)
