"""How the shop's systems write values, vectorized: each source's timestamp style, dates, zero-padded
ids, each source's customer ids (scrambled so ids never link people across systems), and the
small pyarrow string helpers every export table is built with."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.sample.world import APP, CRM, EMAIL, LOCAL_OFFSET_S, POS, WEB, civil_from_days


def _bytes_to_strings(matrix: np.ndarray) -> pa.Array:
    """Rows of a uint8 matrix as strings (trailing zero bytes dropped)."""
    width = matrix.shape[1]
    flat = np.ascontiguousarray(matrix).view(f"S{width}").ravel()
    return pa.array(flat, type=pa.binary()).cast(pa.string())


def _put_digits(out: np.ndarray, column: int, values: np.ndarray, width: int, base: int = 10) -> None:
    symbols = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    for k in range(width):
        out[:, column + width - 1 - k] = symbols[(values // base**k) % base]


def fixed_ids(prefix: str, numbers: np.ndarray, width: int, base: int = 10) -> pa.Array:
    """prefix + `numbers` zero-padded to `width` digits (in `base`)."""
    head = prefix.encode()
    out = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    out[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    _put_digits(out, len(head), np.asarray(numbers, dtype=np.int64), width, base)
    return _bytes_to_strings(out)


def format_timestamps(seconds: np.ndarray, source: np.ndarray) -> pa.Array:
    """Each source system's timestamp style: pos local naive 'YYYY-MM-DD HH:MM:SS', crm ISO with
    +07:00, web/app/email ISO UTC with Z."""
    source = np.broadcast_to(np.asarray(source), seconds.shape)
    local = (source == CRM) | (source == POS)
    shifted = seconds + np.where(local, LOCAL_OFFSET_S, 0)
    days = np.floor_divide(shifted, 86400)
    rest = shifted - days * 86400
    year, month, day = civil_from_days(days)
    out = np.zeros((len(seconds), 25), dtype=np.uint8)
    _put_digits(out, 0, year, 4)
    out[:, 4] = out[:, 7] = ord("-")
    _put_digits(out, 5, month, 2)
    _put_digits(out, 8, day, 2)
    out[:, 10] = np.where(source == POS, ord(" "), ord("T"))
    _put_digits(out, 11, rest // 3600, 2)
    out[:, 13] = out[:, 16] = ord(":")
    _put_digits(out, 14, (rest // 60) % 60, 2)
    _put_digits(out, 17, rest % 60, 2)
    crm = source == CRM
    out[crm, 19:25] = np.frombuffer(b"+07:00", dtype=np.uint8)
    out[~local, 19] = ord("Z")
    return _bytes_to_strings(out)


def format_dates(days: np.ndarray) -> pa.Array:
    year, month, day = civil_from_days(np.asarray(days, dtype=np.int64))
    out = np.zeros((len(days), 10), dtype=np.uint8)
    _put_digits(out, 0, year, 4)
    out[:, 4] = out[:, 7] = ord("-")
    _put_digits(out, 5, month, 2)
    _put_digits(out, 8, day, 2)
    return _bytes_to_strings(out)


def pick(values: tuple[str, ...] | list[str], index: np.ndarray) -> pa.Array:
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def number_strings(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())


def blank(values: pa.Array, keep: np.ndarray) -> pa.Array:
    """The value where `keep`, else an empty string (how exports write 'no value')."""
    return pc.if_else(pa.array(np.asarray(keep, dtype=bool)), values, pa.scalar("", pa.string()))


def join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


# ---------------------------------------------------------------- ids


def scramble(numbers: np.ndarray, multiplier: int, shift: int, modulus: int) -> np.ndarray:
    """A bijection of 0..modulus-1 (multiplier coprime to modulus) that hides the order of numbers."""
    assert math.gcd(multiplier, modulus) == 1, "not a bijection: ids could collide"
    return (np.asarray(numbers, dtype=np.int64) * multiplier + shift) % modulus


MAX_CUSTOMERS = 10_000_000  # the id spaces below are bijections on numbers below this
# source id formats: prefix, digits, base, and the scramble that keeps ids unlinkable across sources
_ID_FORMATS = {
    CRM: ("CRM", 8, 10, 48_271, 13_579_113),
    POS: ("POS-", 8, 10, 69_621, 24_680_247),
    WEB: ("W", 10, 16, 2_654_435_761, 0x5DEECE66D),
    APP: ("A-", 9, 10, 103_515_247, 987_654_321),
    EMAIL: ("EM", 9, 10, 16_807, 123_456_789),
}


def source_customer_ids(source: int, numbers: np.ndarray) -> pa.Array:
    """The id the system `source` gives to person number `numbers` (distinct numbers, distinct ids)."""
    prefix, width, base, multiplier, shift = _ID_FORMATS[source]
    return fixed_ids(prefix, scramble(numbers, multiplier, shift, base**width), width, base)
