"""How numbers read in sentences: a count with its noun in the singular or the plural."""

from __future__ import annotations


def counted(number: int, one: str, many: str | None = None) -> str:
    """`1 buyer`, `2 buyers`, `1,204 non-churners`: `many` defaults to `one` + "s"."""
    return f"{number:,} {one if number == 1 else many or one + 's'}"
