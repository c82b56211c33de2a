"""Counts in sentences: the noun agrees with the number."""

from __future__ import annotations

import pytest

from custlens.words import counted


@pytest.mark.parametrize(
    ("number", "expected"),
    [(0, "0 buyers"), (1, "1 buyer"), (2, "2 buyers"), (1_204, "1,204 buyers")],
)
def test_a_count_takes_the_singular_only_for_one(number: int, expected: str) -> None:
    assert counted(number, "buyer") == expected


def test_an_irregular_plural_is_given() -> None:
    assert (
        counted(1, "product category", "product categories"),
        counted(3, "product category", "product categories"),
    ) == (
        "1 product category",
        "3 product categories",
    )
