"""Money: a currency's ISO 4217 code, its minor units, and how an amount is written with its unit.

babel's CLDR data answers which codes exist, how many decimals each has (VND 0, USD 2, KWD 3) and
which symbols a file may write in front of an amount ($, £, ₫). Stored amounts are exact decimals
with the currency's minor units; shown amounts carry the code.
"""

from __future__ import annotations

from functools import cache

from babel.numbers import get_currency_precision, get_currency_symbol, list_currencies

MAX_INTEGER_DIGITS = 15  # DECIMAL(18, s) with s <= 3: an amount of 10^15 or more is not a real order


def check_currency(code: str) -> str:
    """The ISO 4217 code in upper case, or ValueError naming what is wrong."""
    upper = code.strip().upper()
    if upper not in _currencies():
        raise ValueError(f"unknown currency {code!r} (an ISO 4217 code such as USD, EUR, VND)")
    return upper


@cache
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def minor_units(currency: str | None) -> int:
    """Decimals of the currency's smallest unit (2 when unknown: the common case)."""
    if currency is None:
        return 2
    return min(int(get_currency_precision(currency)), 3)


def decimal_type(currency: str | None) -> str:
    """The DuckDB type money of this currency is stored as."""
    return f"DECIMAL(18, {minor_units(currency)})"


@cache
def currency_symbols(currency: str | None) -> tuple[str, ...]:
    """Marks a file may write around an amount of this currency: its code and its own symbols ("$" and
    "US$" for USD, "€" for EUR); none without a currency, so "$12" is never read as 12 of something else."""
    if not currency:
        return ()
    marks = {currency}
    for locale in ("en", "en_US", "en_GB", "vi", "pt_BR", "de", "fr", "ja", "zh"):
        marks.add(get_currency_symbol(currency, locale=locale))
    return tuple(sorted(marks, key=lambda mark: (-len(mark), mark)))


def format_money(value: float | None, currency: str | None) -> str:
    """'USD 37.42', 'VND 1,250,000': the code and the currency's decimals, grouped thousands."""
    if value is None:
        return "-"
    digits = minor_units(currency)
    text = f"{value:,.{digits}f}"
    return f"{currency} {text}" if currency else text


def round_money(value: float | None, currency: str | None) -> float | None:
    """The amount rounded to the currency's minor units (for JSON, CSV and API answers)."""
    if value is None:
        return None
    return round(float(value), minor_units(currency))
