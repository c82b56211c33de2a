"""Row checks of one chunk against its contract: parse raw text into typed values (UTC
timestamps, exact money, ...), run the pandera schema, and say for every row whether it is
good or why not (a reason code of QUARANTINE_REASONS and every failure in detail)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
import pyarrow.compute as pc

from custlens.errors import CustlensError
from features.lake.contracts import (
    EVENT_TYPES,
    ORDER_STATUSES,
    QUARANTINE_REASONS,
    SURVEY_SCORE_RANGE,
    SURVEY_TYPES,
    ColumnKind,
    TableContract,
)
from features.lake.identity import normalize_email, normalize_phone
from features.lake.money import MAX_INTEGER_DIGITS
from features.lake.pii import Salt, hash_values
from features.lake.readers import ROW_NUMBER

REASON = "_reason"  # first failure, in QUARANTINE_REASONS order; null for a good row
DETAIL = "_detail"  # every failure, "column: code (value)", joined by "; "
TYPED = "v__"  # prefix of the parsed value of a column in the staged rows
IDENTITY = "_identity__"  # prefix of a declared identity key's raw column in a chunk (never staged raw)

REASON_ORDER = {code: rank for rank, code in enumerate(QUARANTINE_REASONS)}

# Customer PII never leaves this module raw: it is staged, quarantined and stored as hashes.
PII_HASH_COLUMNS = {
    "email": "email_hash",
    "phone": "phone_hash",
    "full_name": "full_name_hash",
    "birth_date": "birth_date_hash",
}

# The timestamp formats tried when a table gives no timestamp_format, in this order; the ingest
# report says per column how many values each one read.
TIMESTAMP_FORMATS: dict[str, str] = {
    "iso_offset": "YYYY-MM-DD[T ]HH:MM[:SS[.fraction]] with Z or ±HH[:MM]: that instant",
    "iso_local": "YYYY-MM-DD[T ]HH:MM[:SS[.fraction]] without an offset: wall time in business.timezone",
    "date": "YYYY-MM-DD: midnight in business.timezone",
    "yyyymmdd": "YYYYMMDD (8 digits): midnight in business.timezone",
    "ymd_slash": "YYYY/MM/DD[ HH:MM[:SS]]: wall time in business.timezone",
    "dmy": "DD/MM/YYYY[ HH:MM[:SS]] (or - or . between): only with date_order: day_first; business.timezone",
    "mdy": "MM/DD/YYYY[ HH:MM[:SS]] (or - or . between): only with date_order: month_first; business.timezone",
    "epoch_s": "Unix time in seconds (9-10 digits): that instant",
    "epoch_ms": "Unix time in milliseconds (12-13 digits): that instant",
    "timestamp_format": "the table's ingest.tables.<table>.timestamp_format (strptime; with %z an instant, "
    "else wall time in business.timezone)",
}

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_SPACES = r"[\s\x{00a0}\x{202f}]*"  # ASCII spaces and the no-break spaces number formatting writes

_ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "decimal": pa.string(),  # validated plain text ("1234.50"); DuckDB casts it to the currency's DECIMAL
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
_IMPLAUSIBLE: dict[ColumnKind, str] = {"timestamp": "implausible_timestamp", "date": "implausible_date"}
_UNPARSEABLE: dict[ColumnKind, str] = {
    "timestamp": "unparseable_timestamp",
    "date": "unparseable_date",
    "decimal": "unparseable_number",
    "integer": "unparseable_number",
    "number": "unparseable_number",
    "boolean": "unparseable_boolean",
}


@dataclass(frozen=True)
class ChunkContext:
    """What parsing needs to know beyond the rows themselves: the business's clock, how the file
    writes numbers and dates, and the salt that hashes personal values."""

    timezone: str | None  # the business's IANA zone; None: not configured, naive values are refused
    salt: Salt
    phone_country_code: str
    phone_min_digits: int
    default_source: str | None = None  # for tables whose `source` column is optional
    timestamp_format: str | None = None  # strptime format; None: TIMESTAMP_FORMATS are tried
    date_order: Literal["day_first", "month_first"] | None = None  # None: 01/02/1997 is refused
    decimal: str = "."
    thousands: str | None = None  # None: "," grouping with decimal ".", "." or space grouping with ","
    currency_marks: tuple[str, ...] = ()  # symbols and codes that may be written around an amount
    identity_columns: tuple[str, ...] = ()  # declared identity keys, arriving as IDENTITY + name
    table_label: str = ""  # how messages name the table (e.g. "orders (orders.csv)")
    plausible: PlausibleTime | None = None  # None: any representable time is accepted


@dataclass(frozen=True)
class PlausibleTime:
    """The window a real business's timestamps fall in: from `ingest.earliest` to now plus
    `ingest.future_tolerance`; a value outside it is a typo or a placeholder (1680, 2062, 9999)."""

    earliest: datetime  # UTC
    latest: datetime  # UTC

    @classmethod
    def of(cls, earliest: date, future_tolerance: timedelta, now: datetime) -> PlausibleTime:
        return cls(datetime.combine(earliest, time(0), UTC), now.astimezone(UTC) + future_tolerance)

    def bounds_ns(self) -> tuple[int, int]:
        return _epoch_ns(self.earliest), _epoch_ns(self.latest)

    def hints(self) -> tuple[str, str]:
        return (
            f"before ingest.earliest {self.earliest.date().isoformat()}",
            f"after now + ingest.future_tolerance ({self.latest.strftime('%Y-%m-%d %H:%M')} UTC)",
        )


def _epoch_ns(instant: datetime) -> int:
    return int((instant - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


@dataclass(frozen=True)
class ChunkStats:
    """What parsing found beyond good and bad rows, for the ingest report: per column, how many values
    each timestamp format read, and how many numbers needed a currency mark, thousands separator or
    decimal comma removed."""

    timestamp_formats: dict[str, dict[str, int]] = field(default_factory=dict)
    reformatted_numbers: dict[str, int] = field(default_factory=dict)

    def merge(self, other: ChunkStats) -> ChunkStats:
        formats = {column: dict(counts) for column, counts in self.timestamp_formats.items()}
        for column, counts in other.timestamp_formats.items():
            merged = formats.setdefault(column, {})
            for name, count in counts.items():
                merged[name] = merged.get(name, 0) + count
        numbers = dict(self.reformatted_numbers)
        for column, count in other.reformatted_numbers.items():
            numbers[column] = numbers.get(column, 0) + count
        return ChunkStats(formats, numbers)


def identity_field(key: str) -> str:
    """The staged (hashed) column of a declared identity key."""
    return f"{TYPED}identity__{key}"


def typed_fields(contract: TableContract, identity_columns: tuple[str, ...] = ()) -> list[pa.Field]:
    """The parsed columns every staged chunk of this table carries (absent columns as nulls)."""
    fields = []
    for column in contract.columns:
        if contract.name == "customers" and column.name in PII_HASH_COLUMNS:
            continue
        fields.append(pa.field(TYPED + column.name, _ARROW_TYPES[column.kind]))
    if contract.name == "customers":
        fields += [
            pa.field(TYPED + "email_hash", pa.string()),
            pa.field(TYPED + "phone_hash", pa.string()),
            pa.field(TYPED + "birth_year", pa.int64()),
        ]
    fields += [pa.field(identity_field(key), pa.string()) for key in identity_columns]
    return fields


def raw_columns(contract: TableContract, columns: tuple[str, ...]) -> list[str]:
    """The names the file's columns are staged and quarantined under (customer PII as hashes)."""
    if contract.name != "customers":
        return list(columns)
    return [PII_HASH_COLUMNS.get(name, name) for name in columns]


def staged_schema(
    contract: TableContract, columns: tuple[str, ...], identity_columns: tuple[str, ...] = ()
) -> pa.Schema:
    raw = [pa.field(name, pa.string()) for name in raw_columns(contract, columns)]
    return pa.schema(
        [
            pa.field(ROW_NUMBER, pa.int64()),
            *raw,
            *typed_fields(contract, identity_columns),
            pa.field(REASON, pa.string()),
            pa.field(DETAIL, pa.string()),
        ]
    )


# ---------------------------------------------------------------- parsing, one column at a time


@dataclass
class _Parsed:
    values: pa.Array  # typed, null where empty or unparseable
    empty: np.ndarray
    unparseable: np.ndarray
    checkable: pd.Series | None = None  # the pandas form pandera checks (text: made when needed)
    out_of_range: np.ndarray | None = None
    implausible: np.ndarray | None = None  # read, but outside the plausible window (values null)
    implausible_hints: np.ndarray | None = None  # per row: before the earliest or after the latest
    hints: tuple[tuple[np.ndarray, str], ...] = ()  # (rows among the unparseable, what to do about them)
    formats: dict[str, int] = field(default_factory=dict)  # timestamp format -> values it read
    reformatted: int = 0  # numbers that needed a mark, separator or decimal comma removed


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _null(arrow_type: pa.DataType, n: int) -> pa.Array:
    return pa.nulls(n, type=arrow_type)


def _where(mask: np.ndarray, values: pa.Array) -> pa.Array:
    """`values` where mask, null elsewhere."""
    return pc.if_else(pa.array(mask), values, pa.scalar(None, values.type))


def _trimmed(raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
    text = pc.utf8_trim_whitespace(raw)
    empty = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    return _where(~empty, text), empty


def _parse(raw: pa.Array, contract: TableContract, name: str, context: ChunkContext) -> _Parsed:
    kind = contract.kind_of(name)
    text, empty = _trimmed(raw)
    if kind == "string":
        if (contract.name, name) in _VOCABULARIES:
            text = pc.utf8_lower(text)  # "Completed" is completed
        elif name == "currency":
            text = pc.utf8_upper(text)
        return _Parsed(text, empty, np.zeros(len(raw), dtype=bool))
    if kind in ("timestamp", "date") and not contract.column(name).activity_time:
        context = replace(context, plausible=None)
    if kind == "timestamp":
        return _parse_timestamps(text, empty, contract.name, name, context)
    if kind == "date":
        return _parse_dates(text, empty, contract.name, context)
    if kind == "boolean":
        lowered = pc.utf8_lower(text)
        is_true = _mask(pc.is_in(lowered, pa.array(_TRUE)))
        is_false = _mask(pc.is_in(lowered, pa.array(_FALSE)))
        values = pa.array(np.where(is_true, True, False), mask=~(is_true | is_false))
        return _Parsed(values, empty, ~empty & ~(is_true | is_false))
    return _parse_number(text, empty, kind, context)


# ---------------------------------------------------------------- timestamps and dates

# Each format is one regex with named parts and one explicit way to assemble them: a value is read
# by the first format whose regex it matches, never by element-wise guessing.
_Clock = Literal["offset", "local", "epoch_s", "epoch_ms", "refused"]
_ISO_DAY = r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
_ISO_TIME = r"[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
_OFFSET = r" ?(?:(?P<zulu>[Zz])|(?P<sign>[+-])(?P<offset_hour>\d{2})(?::?(?P<offset_minute>\d{2}))?)"
_SHORT_TIME = r"(?:[T ](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?"


def _slashed(first: str, second: str) -> str:
    return rf"^(?P<{first}>\d{{1,2}})[/.-](?P<{second}>\d{{1,2}})[/.-](?P<year>\d{{4}}){_SHORT_TIME}$"


_NS_PER_S = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_S


@dataclass(frozen=True)
class _Format:
    name: str
    pattern: str
    clock: _Clock  # offset: in the value; local: business.timezone; epoch: UTC; refused: ambiguous
    # the length of the format's most common, fixed-width spelling: those values are read at fixed
    # positions, much faster than extracting the regex's parts (None: every value has fixed width)
    fixed_length: int | None = None
    slices: tuple[tuple[str, int, int], ...] = ()


_DAY_SLICES = (("year", 0, 4), ("month", 5, 7), ("day", 8, 10))
_ISO_OFFSET = _Format("iso_offset", f"^{_ISO_DAY}{_ISO_TIME}{_OFFSET}$", "offset")
_ISO_LOCAL = _Format(
    "iso_local",
    f"^{_ISO_DAY}{_ISO_TIME}$",
    "local",
    fixed_length=len("2024-03-01 10:00:00"),
    slices=(*_DAY_SLICES, ("hour", 11, 13), ("minute", 14, 16), ("second", 17, 19)),
)
_DATE = _Format("date", f"^{_ISO_DAY}$", "local", slices=_DAY_SLICES)
_YYYYMMDD = _Format(
    "yyyymmdd",
    r"^(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})$",
    "local",
    slices=(("year", 0, 4), ("month", 4, 6), ("day", 6, 8)),
)
_YMD_SLASH = _Format("ymd_slash", r"^(?P<year>\d{4})/(?P<month>\d{1,2})/(?P<day>\d{1,2})" + _SHORT_TIME + "$", "local")
_SLASHED_FORMATS: dict[str | None, _Format] = {
    "day_first": _Format("dmy", _slashed("day", "month"), "local"),
    "month_first": _Format("mdy", _slashed("month", "day"), "local"),
    None: _Format("day_or_month_first", _slashed("day", "month"), "refused"),
}
_EPOCH_S = _Format("epoch_s", r"^(?P<epoch>\d{9,10})$", "epoch_s")
_EPOCH_MS = _Format("epoch_ms", r"^(?P<epoch>\d{12,13})$", "epoch_ms")


def _timestamp_formats(date_order: str | None) -> tuple[_Format, ...]:
    return (_ISO_OFFSET, _ISO_LOCAL, _DATE, _YYYYMMDD, _YMD_SLASH, _SLASHED_FORMATS[date_order], _EPOCH_S, _EPOCH_MS)


def _date_formats(date_order: str | None) -> tuple[_Format, ...]:
    # a date written as a datetime at midnight (spreadsheets, pandas) is that date
    return (_DATE, _YYYYMMDD, _YMD_SLASH, _SLASHED_FORMATS[date_order], _ISO_LOCAL, _ISO_OFFSET)


@dataclass
class _WallClock:
    wall: np.ndarray  # int64 ns: the written date and time (for epochs: the UTC instant)
    offset: np.ndarray  # int64 ns east of UTC written in the value
    read: np.ndarray  # bool: a format matched and the parts make a real date and time
    format_index: np.ndarray  # which format matched (-1: none)
    outside: np.ndarray  # int8: read, but beyond nanoseconds since 1970: -1 before 1678, +1 after 2261


def _read_wall_clock(text: pa.Array, formats: Sequence[_Format]) -> _WallClock:
    n = len(text)
    clock = _WallClock(
        np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int8)
    )
    remaining = np.flatnonzero(_mask(pc.is_valid(text)))
    for index, fmt in enumerate(formats):
        if remaining.size == 0:
            break
        candidates = text if remaining.size == len(text) else text.take(pa.array(remaining))
        # a match without captures is several times faster than an extraction: extract only what matched
        matched = _mask(pc.match_substring_regex(candidates, fmt.pattern))
        if not matched.any():
            continue
        positions, remaining = remaining[matched], remaining[~matched]
        wall, offset, read, outside = _read_format(candidates.filter(pa.array(matched)), fmt)
        clock.wall[positions], clock.offset[positions], clock.read[positions] = wall, offset, read
        clock.outside[positions] = outside
        clock.format_index[positions] = index
    return clock


_Parts = Callable[[str], np.ndarray]  # a named part of each value as integers (0 where absent)


_Assembled = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # wall, offset, read, outside (int8)


def _read_format(text: pa.Array, fmt: _Format) -> _Assembled:
    """Wall clock, offset, read and outside (as `_assemble`) of values that match the format."""
    if not fmt.slices:
        return _assemble(_extracted(pc.extract_regex(text, fmt.pattern)), len(text), fmt.clock)
    fixed = np.ones(len(text), bool)
    if fmt.fixed_length is not None:
        fixed = _mask(pc.equal(pc.binary_length(text), fmt.fixed_length))
    n = len(text)
    wall, offset, read, outside = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, np.int8)
    for rows, sliced in ((fixed, True), (~fixed, False)):
        if rows.any():
            subset = text.filter(pa.array(rows))
            parts = _sliced(subset, fmt.slices) if sliced else _extracted(pc.extract_regex(subset, fmt.pattern))
            wall[rows], offset[rows], read[rows], outside[rows] = _assemble(parts, len(subset), fmt.clock)
    return wall, offset, read, outside


def _sliced(text: pa.Array, slices: tuple[tuple[str, int, int], ...]) -> _Parts:
    """Parts at fixed positions of values the format's regex has checked to be fixed-width ASCII digits
    there: read straight from the string bytes, as one matrix of digits."""
    width = max(stop for _, _, stop in slices)
    where = {name: (start, stop) for name, start, stop in slices}
    text = text.cast(pa.string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2] or b"", dtype=np.uint8)
    row_width = int(offsets[1] - offsets[0]) if len(text) else width
    if (np.diff(offsets) != row_width).any():  # the format's regex and length check rule this out
        raise RuntimeError("fixed-width timestamp values of different lengths")
    characters = data[offsets[0] : offsets[-1]].reshape(-1, row_width)

    def part(name: str) -> np.ndarray:
        if name not in where:
            return np.zeros(len(text), np.int64)
        start, stop = where[name]
        value = np.zeros(len(text), np.int64)
        for position in range(start, stop):
            value = value * 10 + (characters[:, position] - ord("0"))
        return value

    return part


def _extracted(parts: pa.StructArray) -> _Parts:
    def part(name: str) -> np.ndarray:
        if parts.type.get_field_index(name) < 0:
            return np.zeros(len(parts), np.int64)
        text = parts.field(name)
        if name == "sign":
            return np.where(_mask(pc.equal(text, "-")), -1, 1)
        if name == "fraction":  # ".5" is 500 ms: digits up to nanoseconds
            text = pc.utf8_rpad(text, width=9, padding="0")
        text = pc.if_else(pc.equal(text, ""), "0", text)
        return np.asarray(text.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)

    return part


def _assemble(part: _Parts, n: int, clock: _Clock) -> _Assembled:
    """Wall-clock nanoseconds, offset nanoseconds, which values are real dates and times, and which
    of those nanoseconds cannot hold (their wall clock is 0: they are implausible in any window)."""
    if clock in ("epoch_s", "epoch_ms"):
        epoch = part("epoch")
        per_ns = _NS_PER_S if clock == "epoch_s" else 1_000_000
        late = epoch > np.iinfo(np.int64).max // per_ns  # 10 digits of seconds reach 2286
        return np.where(late, 0, epoch * per_ns), np.zeros(n, np.int64), np.ones(n, bool), late.astype(np.int8)
    if clock == "refused":
        return np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, np.int8)
    year, month, day = part("year"), part("month"), part("day")
    hour, minute, second = part("hour"), part("minute"), part("second")
    read = (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
    read &= (hour < 24) & (minute < 60) & (second < 60)
    months = np.where(read, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + np.where(read, day - 1, 0).astype("timedelta64[D]")
    read &= days.astype("datetime64[M]") == months  # 30 February runs into March
    early, late = read & (year < 1678), read & (year > 2261)  # real days, but not as nanoseconds since 1970
    representable = read & ~early & ~late
    wall = np.where(representable, days, np.datetime64(0, "D")).astype("datetime64[ns]").view(np.int64)
    wall += np.where(representable, ((hour * 60 + minute) * 60 + second) * _NS_PER_S + part("fraction"), 0)
    offset = np.zeros(n, np.int64)
    if clock == "offset":
        offset_hour, offset_minute = part("offset_hour"), part("offset_minute")
        read &= (offset_hour < 24) & (offset_minute < 60)
        offset = part("sign") * (offset_hour * 3600 + offset_minute * 60) * _NS_PER_S
    representable &= read
    outside = (late & read).astype(np.int8) - (early & read).astype(np.int8)
    return np.where(representable, wall, 0), np.where(representable, offset, 0), read, outside


def _strptime(text: pa.Array, timestamp_format: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The table's own format, read by pandas: nanoseconds (UTC with %z, else wall clock), read,
    outside (read by Python, but beyond nanoseconds: pandas gives those up), aware."""
    aware = "%z" in timestamp_format
    strings = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(strings, format=timestamp_format, errors="coerce", utc=aware)
    if aware:
        parsed = parsed.dt.tz_convert(None)
    read = parsed.notna().to_numpy()
    outside = np.zeros(len(read), np.int8)
    for position in np.flatnonzero(~read & strings.notna().to_numpy()):  # the few pandas could not read
        try:
            written = datetime.strptime(strings.iat[position], timestamp_format)
        except ValueError:
            continue
        outside[position] = -1 if written.year < 1678 else 1
    wall = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(read, wall, 0), read | (outside != 0), outside, aware


def _localize(wall: np.ndarray, timezone: str) -> np.ndarray:
    """UTC nanoseconds of wall-clock times in `timezone`."""
    local = pd.DatetimeIndex(wall.view("datetime64[ns]")).tz_localize(
        # an hour that happens twice at a DST change is its first occurrence; one skipped, the next real time
        timezone,
        ambiguous=np.ones(len(wall), dtype=bool),
        nonexistent="shift_forward",
    )
    return np.asarray(local.asi8, dtype=np.int64)


def _parse_timestamps(text: pa.Array, empty: np.ndarray, table: str, column: str, context: ChunkContext) -> _Parsed:
    formats = _timestamp_formats(context.date_order)
    hints: tuple[tuple[np.ndarray, str], ...] = ()
    if context.timestamp_format:
        utc, read, outside, aware = _strptime(text, context.timestamp_format)
        local = read & (outside == 0) & (not aware)
        counts = {"timestamp_format": int(read.sum())}
    else:
        clock = _read_wall_clock(text, formats)
        read, outside = clock.read, clock.outside
        local_formats = [index for index, fmt in enumerate(formats) if fmt.clock == "local"]
        local = read & (clock.outside == 0) & np.isin(clock.format_index, local_formats)
        utc = clock.wall - clock.offset
        counts = _format_counts(clock, formats)
        hints = _slash_hint(clock, formats, table)
    if local.any():
        if context.timezone is None:
            _refuse_to_guess_zone(text, local, table, column, context)
        utc[local] = _localize(utc[local], str(context.timezone))
    implausible, implausible_hints = _implausible(utc, read, outside, context.plausible)
    good = read & ~implausible
    values = pa.array(np.where(good, utc, 0), type=pa.int64(), mask=~good).view(pa.timestamp("ns", tz="UTC"))
    return _Parsed(
        values.cast(_ARROW_TYPES["timestamp"], safe=False),
        empty,
        ~empty & ~read,
        implausible=implausible,
        implausible_hints=implausible_hints,
        hints=hints,
        formats={name: count for name, count in counts.items() if count},
    )


def _implausible(
    utc: np.ndarray, read: np.ndarray, outside: np.ndarray, plausible: PlausibleTime | None
) -> tuple[np.ndarray, np.ndarray]:
    """Values read but beyond nanoseconds, or outside the plausible window, and why (per row)."""
    too_early, too_late = outside < 0, outside > 0
    before, after = "before 1678: no stage can hold it", "after 2261: no stage can hold it"
    if plausible is not None:
        earliest, latest = plausible.bounds_ns()
        too_early |= read & (outside == 0) & (utc < earliest)
        too_late |= read & (outside == 0) & (utc > latest)
        before, after = plausible.hints()
    hints = np.full(len(utc), "", dtype=object)
    hints[too_early], hints[too_late] = before, after
    return too_early | too_late, hints


def _parse_dates(text: pa.Array, empty: np.ndarray, table: str, context: ChunkContext) -> _Parsed:
    """Dates: the date formats, the table's timestamp_format without %z, and datetimes at midnight.
    A date needs no time zone: it is the day written."""
    n = len(text)
    wall, read, outside = np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, np.int8)
    counts: dict[str, int] = {}
    rest = text
    if context.timestamp_format and "%z" not in context.timestamp_format:
        wall, read, outside, _ = _strptime(text, context.timestamp_format)
        read &= np.mod(wall, _NS_PER_DAY) == 0
        counts["timestamp_format"] = int(read.sum())
        rest = _where(~read, text)
    formats = _date_formats(context.date_order)
    clock = _read_wall_clock(rest, formats)
    midnight = clock.read & (np.mod(clock.wall, _NS_PER_DAY) == 0)
    hints = _slash_hint(clock, formats, table)
    if (clock.read & ~midnight).any():
        hints += ((clock.read & ~midnight, "a date column holds days, not times of day"),)
    wall[midnight], read[midnight], outside[midnight] = clock.wall[midnight], True, clock.outside[midnight]
    clock.read = midnight
    counts |= _format_counts(clock, formats)
    implausible, implausible_hints = _implausible(wall, read, outside, context.plausible)
    good = read & ~implausible
    days = pa.array(np.floor_divide(wall, _NS_PER_DAY), type=pa.int64(), mask=~good).cast(pa.int32())
    return _Parsed(
        days.view(pa.date32()),
        empty,
        ~empty & ~read,
        implausible=implausible,
        implausible_hints=implausible_hints,
        hints=hints,
        formats={name: count for name, count in counts.items() if count},
    )


def _format_counts(clock: _WallClock, formats: Sequence[_Format]) -> dict[str, int]:
    counts = np.bincount(clock.format_index[clock.read], minlength=len(formats))
    return {fmt.name: int(count) for fmt, count in zip(formats, counts, strict=True) if count}


def _slash_hint(clock: _WallClock, formats: Sequence[_Format], table: str) -> tuple[tuple[np.ndarray, str], ...]:
    refused = [index for index, fmt in enumerate(formats) if fmt.clock == "refused"]
    ambiguous = np.isin(clock.format_index, refused)
    if not ambiguous.any():
        return ()
    return ((ambiguous, f"day or month first? set ingest.tables.{table}.date_order"),)


def _refuse_to_guess_zone(text: pa.Array, local: np.ndarray, table: str, column: str, context: ChunkContext) -> None:
    example = text[int(np.flatnonzero(local)[0])].as_py()
    raise CustlensError(
        f"{context.table_label or table}: column {column} has times without a UTC offset (e.g. {example!r}), "
        "and business.timezone is not set, so custlens cannot tell which instant they are and will not guess. "
        "Set business.timezone in your config to the business's IANA time zone (e.g. America/New_York); "
        "for the generated sample pass --config configs/sample.yaml."
    )


# ---------------------------------------------------------------- numbers and amounts


@dataclass(frozen=True)
class _NumberSyntax:
    grouped: str  # a correctly grouped number: 1,234.50 / 1.234,50 / 1 234,50
    separators: str  # the thousands separators, as a character class
    plain: str  # digits with an optional decimal mark (and exponent for kind number)
    canonical: str  # already in the staged form ("-1234.50"): nothing to clean


def _char(character: str) -> str:
    return f"\\x{{{ord(character):04x}}}"  # RE2's escape of any one character


def _number_syntax(decimal: str, thousands: str | None, exponent: bool) -> _NumberSyntax:
    if thousands is not None:
        separators = [" ", "\u00a0", "\u202f"] if thousands == " " else [thousands]
    else:
        separators = [","] if decimal == "." else [".", " ", "\u00a0", "\u202f"]
    if decimal in separators:
        raise CustlensError(f"csv.decimal and csv.thousands are both {decimal!r}; give two different marks")
    mark = _char(decimal)
    groups = "|".join(f"(?:{_char(separator)}\\d{{3}})+" for separator in separators)
    exponent_part = r"(?:[eE][+-]?\d{1,3})?" if exponent else ""
    dot_fraction = r"(?:\.\d+)?" if decimal == "." else ""  # with a decimal comma, "1.234" is grouped
    return _NumberSyntax(
        grouped=rf"^[+-]?\d{{1,3}}(?:{groups})(?:{mark}\d*)?$",
        separators="[" + "".join(_char(separator) for separator in separators) + "]",
        plain=rf"^[+-]?(?:\d+(?:{mark}\d*)?|{mark}\d+){exponent_part}$",
        canonical=rf"^-?\d+{dot_fraction}{exponent_part}$",
    )


def _strip_currency_marks(text: pa.Array, marks: tuple[str, ...]) -> pa.Array:
    """'$12.00', '-$5', '12.00 USD' -> '12.00', '-5', '12.00' (a sign before the mark is kept)."""
    longest_first = sorted(marks, key=lambda mark: (-len(mark), mark))
    alternatives = "(?i:" + "|".join("".join(_char(c) for c in mark) for mark in longest_first) + ")"
    text = pc.replace_substring_regex(text, f"^([+-]?){_SPACES}{alternatives}{_SPACES}", r"\1")
    return pc.replace_substring_regex(text, f"{_SPACES}{alternatives}$", "")


def _parse_number(text: pa.Array, empty: np.ndarray, kind: ColumnKind, context: ChunkContext) -> _Parsed:
    """Amounts stay exact text ("1234.50", never rounded here); integers and numbers are cast. Most values
    are already plain ("1234.50") and pass one regex; only the others are cleaned: marks, separators and a
    decimal comma removed by the file's csv settings, then one plain syntax."""
    exponent = kind == "number"
    syntax = _number_syntax(context.decimal, context.thousands, exponent)
    canonical = _mask(pc.match_substring_regex(text, syntax.canonical))
    plain, reformatted = text, 0
    others = ~empty & ~canonical
    if others.any():
        cleaned, reformatted = _clean_numbers(text.filter(pa.array(others)), kind, syntax, context)
        plain = pc.replace_with_mask(text, pa.array(others), cleaned)
    as_float = plain.cast(pa.float64())
    read = _mask(pc.is_finite(as_float))  # "1e400" is infinite
    dot = np.asarray(pc.find_substring(plain, ".").fill_null(-1).to_numpy(zero_copy_only=False))
    if kind == "integer":  # "3.0" is how pandas writes 3
        read &= _matches_where(plain, dot >= 0, r"\.0*$") | (dot < 0)
    if exponent:
        too_large = read & _mask(pc.greater_equal(pc.abs(as_float), 10.0**MAX_INTEGER_DIGITS))
    else:  # counted in digits: a float cannot tell 999999999999999.99 from 10^15
        length = np.asarray(pc.utf8_length(plain).fill_null(0).to_numpy(zero_copy_only=False))
        long = read & (np.where(dot >= 0, dot, length) > MAX_INTEGER_DIGITS)
        too_large = long & ~_matches_where(plain, long, rf"^-?0*\d{{0,{MAX_INTEGER_DIGITS}}}(?:\.|$)")
    good = read & ~too_large
    if kind == "decimal":
        values = _where(good, plain)
    elif kind == "integer":
        whole, with_dot = plain, pa.array(dot >= 0)
        if (dot >= 0).any():
            whole = pc.replace_with_mask(
                plain, with_dot, pc.replace_substring_regex(plain.filter(with_dot), r"\.0*$", "")
            )
        values = _where(good, whole).cast(pa.int64())
    else:
        values = _where(good, as_float)
    checkable = pd.Series(_where(good, as_float).to_numpy(zero_copy_only=False), dtype="float64")
    return _Parsed(values, empty, ~empty & ~read, checkable, out_of_range=too_large, reformatted=reformatted)


def _clean_numbers(
    text: pa.Array, kind: ColumnKind, syntax: _NumberSyntax, context: ChunkContext
) -> tuple[pa.Array, int]:
    """The values that are not plain already: the plain text of each readable one (null for the rest),
    and how many needed a mark, separator or decimal comma removed."""
    cleaned = text
    if kind == "decimal" and context.currency_marks:
        cleaned = _strip_currency_marks(cleaned, context.currency_marks)
    grouped = _mask(pc.match_substring_regex(cleaned, syntax.grouped))
    readable = grouped | _mask(pc.match_substring_regex(cleaned, syntax.plain))
    if grouped.any():
        cleaned = pc.if_else(pa.array(grouped), pc.replace_substring_regex(cleaned, syntax.separators, ""), cleaned)
    if context.decimal != ".":
        cleaned = pc.replace_substring(cleaned, context.decimal, ".")
    reformatted = int((readable & _mask(pc.not_equal(cleaned, text))).sum())
    plain = _where(readable, cleaned)
    plain = pc.replace_substring_regex(plain, r"^\+", "")
    plain = pc.replace_substring_regex(plain, r"^(-?)\.", r"\10.")  # ".5" -> "0.5"
    plain = pc.replace_substring_regex(plain, r"\.$", "")  # "12." -> "12"
    return plain, reformatted


def _matches_where(text: pa.Array, rows: np.ndarray, pattern: str) -> np.ndarray:
    """Whether each of `rows` matches `pattern` (False elsewhere): a regex over only the rows that need it."""
    found = np.zeros(len(text), dtype=bool)
    if rows.any():
        found[rows] = _mask(pc.match_substring_regex(text.filter(pa.array(rows)), pattern))
    return found


# ---------------------------------------------------------------- the pandera schema per table

# (code, the column a failure is reported on, check over the whole frame) for checks that span columns
_WideCheck = tuple[str, str, tuple[str, ...], Callable[[pd.DataFrame], pd.Series]]


def _score_in_range(frame: pd.DataFrame) -> pd.Series:
    ok = frame["score"].isna() | ~frame["survey_type"].isin(SURVEY_TYPES)
    for survey_type, (low, high) in SURVEY_SCORE_RANGE.items():
        ok |= (frame["survey_type"] == survey_type) & frame["score"].between(low, high)
    return ok


def _not_before(column: str, opened: str = "opened_at") -> Callable[[pd.DataFrame], pd.Series]:
    def check(frame: pd.DataFrame) -> pd.Series:
        return frame[column].isna() | frame[opened].isna() | (frame[column] >= frame[opened])

    return check


_WIDE_CHECKS: dict[str, list[_WideCheck]] = {
    "surveys": [("score_out_of_range", "score", ("score", "survey_type"), _score_in_range)],
    "tickets": [
        (
            "first_response_before_opened",
            "first_response_at",
            ("first_response_at", "opened_at"),
            _not_before("first_response_at"),
        ),
        ("resolved_before_opened", "resolved_at", ("resolved_at", "opened_at"), _not_before("resolved_at")),
    ],
}
# matched after trimming and lowercasing: the typed value is the contract's spelling
_VOCABULARIES = {
    ("orders", "status"): ("unknown_status", ORDER_STATUSES),
    ("engagement_events", "event_type"): ("unknown_event_type", EVENT_TYPES),
    ("surveys", "survey_type"): ("unknown_survey_type", SURVEY_TYPES),
}
_NOT_AMOUNTS = {("surveys", "score")}  # a score has its own range check, not "negative amount"
# a refund (credit note) is an order row with status returned and a negative amount (and item count)
_REFUNDABLE = {("orders", "net_amount"), ("orders", "gross_amount"), ("orders", "items")}  # a credit note returns items
_REFUND_STATUS = "returned"
# an order without a customer is a guest order (ingest routes it), not a missing value
_OPTIONAL_FOR_GUESTS = {("orders", "source_customer_id")}


def _check(code: str, test: Callable[..., pd.Series]) -> pa_schema.Check:
    # the reason code is both name and error, so SchemaErrors.failure_cases["check"] is the code
    return pa_schema.Check(test, name=code, error=code)


def build_schema(contract: TableContract, columns: tuple[str, ...]) -> pa_schema.DataFrameSchema:
    """The pandera schema of the vocabulary and cross-column checks for the columns a file has
    (signs are checked with the refund rule in `_negative_failures`)."""
    schema_columns: dict[str, pa_schema.Column] = {}
    wide_needs = {name for _, _, needed, _ in _WIDE_CHECKS.get(contract.name, []) for name in needed}
    for name in columns:
        kind = contract.kind_of(name)
        checks = []
        if (contract.name, name) in _VOCABULARIES:
            code, vocabulary = _VOCABULARIES[(contract.name, name)]
            checks.append(_check(code, lambda series, vocabulary=vocabulary: series.isin(vocabulary)))
        if checks or name in wide_needs:
            dtype = {"timestamp": "datetime64[ns, UTC]", "string": None}.get(kind, "float64")
            schema_columns[name] = pa_schema.Column(dtype, checks=checks, nullable=True)
    wide = [
        _check(code, test)
        for code, _, needed, test in _WIDE_CHECKS.get(contract.name, [])
        if all(name in columns for name in needed)
    ]
    return pa_schema.DataFrameSchema(schema_columns, checks=wide)


# ---------------------------------------------------------------- one chunk


def validate_chunk(rows: pa.Table, contract: TableContract, context: ChunkContext) -> tuple[pa.Table, ChunkStats]:
    """Staged rows (row number, raw values with customer PII hashed, typed values, reason and detail)
    and what parsing found (timestamp formats, reformatted numbers)."""
    columns = tuple(name for name in rows.column_names if name != ROW_NUMBER and not name.startswith(IDENTITY))
    n = rows.num_rows
    raw = {name: rows.column(name).combine_chunks() for name in columns}
    parsed = {name: _parse(raw[name], contract, name, context) for name in columns}

    failures: list[pd.DataFrame] = []
    for name, result in parsed.items():
        required = name in contract.required_columns and (contract.name, name) not in _OPTIONAL_FOR_GUESTS
        if required and result.empty.any():
            failures.append(_failures(np.flatnonzero(result.empty), "missing_value", name))
        if result.unparseable.any():
            hints = np.full(n, "", dtype=object)
            for rows_hinted, hint in result.hints:
                hints[rows_hinted] = hint
            positions = np.flatnonzero(result.unparseable)
            failures.append(_failures(positions, _UNPARSEABLE[contract.kind_of(name)], name, hints[positions]))
        if result.implausible is not None and result.implausible.any():
            positions = np.flatnonzero(result.implausible)
            why = result.implausible_hints[positions] if result.implausible_hints is not None else ""
            failures.append(_failures(positions, _IMPLAUSIBLE[contract.kind_of(name)], name, why))
        if result.out_of_range is not None and result.out_of_range.any():
            failures.append(_failures(np.flatnonzero(result.out_of_range), "amount_out_of_range", name))
    failures += _negative_failures(contract, parsed)
    failures += _schema_failures(contract, columns, parsed)

    reason, detail = _summarize(failures, contract, columns, raw, n)
    pii_hashes = _customer_pii_hashes(raw, context) if contract.name == "customers" else {}
    staged = {ROW_NUMBER: rows.column(ROW_NUMBER).combine_chunks()}
    staged |= _raw_for_staging(raw, pii_hashes)
    staged |= _typed_for_staging(contract, parsed, pii_hashes, context, n)
    staged |= _identity_hashes(rows, context)
    staged[REASON] = reason
    staged[DETAIL] = detail
    stats = ChunkStats(
        timestamp_formats={name: result.formats for name, result in parsed.items() if result.formats},
        reformatted_numbers={name: result.reformatted for name, result in parsed.items() if result.reformatted},
    )
    return pa.table(staged, schema=staged_schema(contract, columns, context.identity_columns)), stats


def _failures(positions: np.ndarray, code: str, column: str, hint: np.ndarray | str = "") -> pd.DataFrame:
    return pd.DataFrame({"position": positions, "code": code, "column": column, "hint": hint})


def _negative_failures(contract: TableContract, parsed: dict[str, _Parsed]) -> list[pd.DataFrame]:
    """Amounts and counts below zero, except an order's net and gross amount on a refund."""
    is_refund = None
    if "status" in parsed and contract.name == "orders":
        is_refund = _mask(pc.equal(parsed["status"].values, _REFUND_STATUS))
    failures = []
    for name, result in parsed.items():
        if contract.kind_of(name) not in ("decimal", "integer", "number") or (contract.name, name) in _NOT_AMOUNTS:
            continue
        assert result.checkable is not None
        negative = (result.checkable < 0).to_numpy()
        hint = ""
        if (contract.name, name) in _REFUNDABLE:
            hint = f"only a refund (status {_REFUND_STATUS}) may be negative"
            if is_refund is not None:
                negative &= ~is_refund
        if negative.any():
            failures.append(_failures(np.flatnonzero(negative), "negative_amount", name, hint))
    return failures


def _schema_failures(
    contract: TableContract, columns: tuple[str, ...], parsed: dict[str, _Parsed]
) -> list[pd.DataFrame]:
    schema = build_schema(contract, columns)
    if not schema.columns:
        return []
    frame = pd.DataFrame({name: _checkable(parsed[name], contract.kind_of(name)) for name in schema.columns})
    try:
        schema.validate(frame, lazy=True)
    except pa_schema.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        unexpected = cases[~cases["check"].isin(QUARANTINE_REASONS)]
        if not unexpected.empty:  # a dtype or structure problem is our bug, not the user's data
            raise RuntimeError(f"ingest schema for {contract.name} failed unexpectedly:\n{unexpected}") from errors
        report_on = {code: column for code, column, _, _ in _WIDE_CHECKS.get(contract.name, [])}
        cases = cases.assign(column=cases["check"].map(report_on).fillna(cases["column"]))
        cases = cases.drop_duplicates(["index", "check", "column"])
        return [
            pd.DataFrame(
                {
                    "position": cases["index"].astype("int64").to_numpy(),
                    "code": cases["check"].to_numpy(),
                    "column": cases["column"].to_numpy(),
                    "hint": "",
                }
            )
        ]
    return []


def _checkable(parsed: _Parsed, kind: ColumnKind) -> pd.Series:
    if parsed.checkable is not None:
        return parsed.checkable
    if kind == "timestamp":
        return pd.Series(parsed.values.cast(pa.timestamp("ns", tz="UTC")).to_pandas(), dtype="datetime64[ns, UTC]")
    return pd.Series(parsed.values.to_numpy(zero_copy_only=False), dtype=object)


def _summarize(
    failures: list[pd.DataFrame], contract: TableContract, columns: tuple[str, ...], raw: dict[str, pa.Array], n: int
) -> tuple[pa.Array, pa.Array]:
    if not failures:
        return _null(pa.string(), n), _null(pa.string(), n)
    found = pd.concat(failures, ignore_index=True)
    column_rank = {name: rank for rank, name in enumerate(columns)}
    found["code_rank"] = found["code"].map(REASON_ORDER)
    found["column_rank"] = found["column"].map(column_rank)
    found = found.sort_values(["position", "code_rank", "column_rank"], kind="stable")
    values = pd.Series("", index=found.index, dtype=object)
    for name, rows in found.groupby("column").groups.items():
        if contract.name == "customers" and name in PII_HASH_COLUMNS:
            continue  # personal data stays out of the detail
        picked = raw[str(name)].take(pa.array(found.loc[rows, "position"].to_numpy()))
        values.loc[rows] = [_shown(value) for value in picked.to_pylist()]
    hints = found["hint"].fillna("").astype(str)
    found["text"] = found["column"] + ": " + found["code"] + values + hints.where(hints == "", ": " + hints)
    grouped = found.groupby("position", sort=True)
    first = grouped["code"].first()
    detail = grouped["text"].agg("; ".join)
    reason = np.full(n, None, dtype=object)
    reason[first.index.to_numpy()] = first.to_numpy()
    details = np.full(n, None, dtype=object)
    details[detail.index.to_numpy()] = detail.to_numpy()
    return pa.array(reason, type=pa.string()), pa.array(details, type=pa.string())


def _shown(value: str | None) -> str:
    if value is None or not value.strip():
        return ""
    value = value.strip()
    return f" ({value[:60]}…)" if len(value) > 60 else f" ({value})"


def _hashed(values: pa.Array, salt: Salt) -> pa.Array:
    """HMAC of the trimmed value, case kept; empty stays null."""
    text, _ = _trimmed(values)
    return hash_values(text, salt)


def _customer_pii_hashes(raw: dict[str, pa.Array], context: ChunkContext) -> dict[str, pa.Array]:
    """Hashes of the customer PII columns present: email and phone normalized first (so they link
    people), full name and birth date as written."""
    hashes = {}
    for name, values in raw.items():
        if name == "email":
            hashes[PII_HASH_COLUMNS[name]] = hash_values(normalize_email(values), context.salt)
        elif name == "phone":
            phone = normalize_phone(values, context.phone_country_code, context.phone_min_digits)
            hashes[PII_HASH_COLUMNS[name]] = hash_values(phone, context.salt)
        elif name in PII_HASH_COLUMNS:
            hashes[PII_HASH_COLUMNS[name]] = _hashed(values, context.salt)
    return hashes


def _identity_hashes(rows: pa.Table, context: ChunkContext) -> dict[str, pa.Array]:
    """Declared identity keys (a loyalty card, a person id) may be personal: only their hashes are staged."""
    hashes = {}
    for key in context.identity_columns:
        if IDENTITY + key not in rows.column_names:
            raise RuntimeError(f"identity key {key} was declared but the chunk has no {IDENTITY + key} column")
        hashes[identity_field(key)] = _hashed(rows.column(IDENTITY + key).combine_chunks(), context.salt)
    return hashes


def _raw_for_staging(raw: dict[str, pa.Array], pii_hashes: dict[str, pa.Array]) -> dict[str, pa.Array]:
    staged = {}
    for name, values in raw.items():
        if name in PII_HASH_COLUMNS and PII_HASH_COLUMNS[name] in pii_hashes:
            staged[PII_HASH_COLUMNS[name]] = pii_hashes[PII_HASH_COLUMNS[name]]
        else:
            staged[name] = values
    return staged


def _typed_for_staging(
    contract: TableContract,
    parsed: dict[str, _Parsed],
    pii_hashes: dict[str, pa.Array],
    context: ChunkContext,
    n: int,
) -> dict[str, pa.Array]:
    typed: dict[str, pa.Array] = {}
    for field_ in typed_fields(contract):
        name = field_.name.removeprefix(TYPED)
        if name in parsed:
            typed[field_.name] = parsed[name].values.cast(field_.type)
        elif name in pii_hashes:
            typed[field_.name] = pii_hashes[name]
        elif name == "birth_year" and "birth_date" in parsed:
            typed[field_.name] = pc.year(parsed["birth_date"].values).cast(pa.int64())
        else:
            typed[field_.name] = _null(field_.type, n)
    if contract.name in ("surveys", "tickets") and context.default_source is not None:
        typed[TYPED + "source"] = pc.fill_null(typed[TYPED + "source"], context.default_source)
    return typed
