"""Work over `total` rows in chunks, with a rich progress bar when there is a console to draw on."""

from __future__ import annotations

from collections.abc import Iterator

from rich.console import Console


def chunks(console: Console | None, label: str, total: int, size: int) -> Iterator[slice]:
    """Slices [0, size), [size, 2 size), ... covering `total` rows; the bar advances by each slice
    once the caller has done it."""
    parts = (slice(start, min(start + size, total)) for start in range(0, total, size))
    if console is None:
        yield from parts
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("rows", total=total)
        for part in parts:
            yield part
            progress.update(task, advance=part.stop - part.start)
