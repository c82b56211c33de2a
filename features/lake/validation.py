"""Row checks of one chunk against its contract: parse raw text into typed values (UTC
timestamps, exact money, ...), run the pandera schema, and say for every row whether it is
good or why not (a reason code of QUARANTINE_REASONS and every failure in detail)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
import pyarrow.compute as pc

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
from features.lake.pii import Salt, hash_values
from features.lake.readers import ROW_NUMBER

REASON = "_reason"  # first failure, in QUARANTINE_REASONS order; null for a good row
DETAIL = "_detail"  # every failure, "column: code (value)", joined by "; "
TYPED = "v__"  # prefix of the parsed value of a column in the staged rows

REASON_ORDER = {code: rank for rank, code in enumerate(QUARANTINE_REASONS)}

# Customer PII never leaves this module raw: it is staged, quarantined and stored as hashes.
PII_HASH_COLUMNS = {
    "email": "email_hash",
    "phone": "phone_hash",
    "full_name": "full_name_hash",
    "birth_date": "birth_date_hash",
}

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_NAIVE_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$"
_AWARE_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}(:?\d{2})?)$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"
# DECIMAL(18,2): at most 16 integer digits and 2 decimals (trailing zeros beyond are exact too)
_DECIMAL = r"^[+-]?\d{1,16}(\.\d{1,2}0*)?$"
_INTEGER = r"^[+-]?\d{1,18}(\.0*)?$"  # "3.0" is how spreadsheets and pandas write a whole number
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$"

_ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "decimal": pa.string(),  # validated text; DuckDB casts it to DECIMAL(18,2) exactly
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
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
    """What parsing needs to know beyond the rows themselves."""

    source_timezone: str
    salt: Salt
    phone_country_code: str
    phone_min_digits: int
    default_source: str | None = None  # for tables whose `source` column is optional


def typed_fields(contract: TableContract) -> list[pa.Field]:
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
    return fields


def raw_columns(contract: TableContract, columns: tuple[str, ...]) -> list[str]:
    """The names the file's columns are staged and quarantined under (customer PII as hashes)."""
    if contract.name != "customers":
        return list(columns)
    return [PII_HASH_COLUMNS.get(name, name) for name in columns]


def staged_schema(contract: TableContract, columns: tuple[str, ...]) -> pa.Schema:
    raw = [pa.field(name, pa.string()) for name in raw_columns(contract, columns)]
    return pa.schema(
        [
            pa.field(ROW_NUMBER, pa.int64()),
            *raw,
            *typed_fields(contract),
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


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _null(arrow_type: pa.DataType, n: int) -> pa.Array:
    return pa.nulls(n, type=arrow_type)


def _parse(raw: pa.Array, kind: ColumnKind, context: ChunkContext) -> _Parsed:
    text = pc.utf8_trim_whitespace(raw)
    empty = _mask(pc.or_kleene(pc.is_null(text), pc.equal(text, "")))
    text = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), text)
    if kind == "string":
        return _Parsed(text, empty, np.zeros(len(raw), dtype=bool))
    if kind == "timestamp":
        series = _parse_timestamps(text, context.source_timezone)
        values = pa.array(series, from_pandas=True).cast(_ARROW_TYPES["timestamp"], safe=False)
        return _Parsed(values, empty, ~empty & series.isna().to_numpy(), series)
    if kind == "date":
        valid = _mask(pc.match_substring_regex(text, _DATE))
        series = pd.to_datetime(
            pd.Series(text.to_numpy(zero_copy_only=False)).where(valid), format="%Y-%m-%d", errors="coerce"
        )
        values = pa.array(series, from_pandas=True, type=pa.timestamp("ns")).cast(pa.date32())
        return _Parsed(values, empty, ~empty & series.isna().to_numpy(), series)
    if kind == "boolean":
        lowered = pc.utf8_lower(text)
        is_true = _mask(pc.is_in(lowered, pa.array(_TRUE)))
        is_false = _mask(pc.is_in(lowered, pa.array(_FALSE)))
        values = pa.array(np.where(is_true, True, False), mask=~(is_true | is_false))
        return _Parsed(values, empty, ~empty & ~(is_true | is_false))
    # numbers: decimal (kept as validated text, checked as float), integer, number
    pattern = {"decimal": _DECIMAL, "integer": _INTEGER, "number": _NUMBER}[kind]
    valid = _mask(pc.match_substring_regex(text, pattern))
    text = pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string()))
    as_float = text.cast(pa.float64())
    if kind == "decimal":
        values = text
    elif kind == "integer":
        values = pc.replace_substring_regex(text, r"\.0*$", "").cast(pa.int64())
    else:
        as_float = pc.if_else(pc.is_finite(as_float), as_float, pa.scalar(None, pa.float64()))
        valid &= _mask(pc.is_valid(as_float))
        values = as_float
    checkable = pd.Series(as_float.to_numpy(zero_copy_only=False), dtype="float64")
    return _Parsed(values, empty, ~empty & ~valid, checkable)


def _parse_timestamps(text: pa.Array, source_timezone: str) -> pd.Series:
    """ISO 8601 with 'Z' or an offset -> that instant; without one -> wall time in `source_timezone`.

    Two vectorized passes, one per group with its own explicit format, never per-element guessing.
    """
    out = pd.Series(pd.NaT, index=range(len(text)), dtype="datetime64[ns, UTC]")
    strings = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    aware = _mask(pc.match_substring_regex(text, _AWARE_TIMESTAMP))
    naive = _mask(pc.match_substring_regex(text, _NAIVE_TIMESTAMP))
    if aware.any():
        out[aware] = pd.to_datetime(strings[aware], format="ISO8601", utc=True, errors="coerce")
    if naive.any():
        wall = pd.to_datetime(strings[naive], format="ISO8601", errors="coerce")
        # an hour that happens twice at a DST change is read as its first occurrence
        local = wall.dt.tz_localize(
            source_timezone, ambiguous=np.ones(len(wall), dtype=bool), nonexistent="shift_forward"
        )
        out[naive] = local.dt.tz_convert("UTC")
    return out


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
_VOCABULARIES = {
    ("orders", "status"): ("unknown_status", ORDER_STATUSES),
    ("engagement_events", "event_type"): ("unknown_event_type", EVENT_TYPES),
    ("surveys", "survey_type"): ("unknown_survey_type", SURVEY_TYPES),
}
_NOT_AMOUNTS = {("surveys", "score")}  # a score has its own range check, not "negative amount"


def _check(code: str, test: Callable[..., pd.Series]) -> pa_schema.Check:
    # the reason code is both name and error, so SchemaErrors.failure_cases["check"] is the code
    return pa_schema.Check(test, name=code, error=code)


def build_schema(contract: TableContract, columns: tuple[str, ...]) -> pa_schema.DataFrameSchema:
    """The pandera schema of the value checks for the columns a file has."""
    schema_columns: dict[str, pa_schema.Column] = {}
    for name in columns:
        kind = contract.kind_of(name)
        checks = []
        if (contract.name, name) in _VOCABULARIES:
            code, vocabulary = _VOCABULARIES[(contract.name, name)]
            checks.append(_check(code, lambda series, vocabulary=vocabulary: series.isin(vocabulary)))
        if kind in ("decimal", "integer", "number") and (contract.name, name) not in _NOT_AMOUNTS:
            checks.append(_check("negative_amount", lambda series: series >= 0))
        if checks or any(name in needed for _, _, needed, _ in _WIDE_CHECKS.get(contract.name, [])):
            dtype = {"timestamp": "datetime64[ns, UTC]", "string": None}.get(kind, "float64")
            schema_columns[name] = pa_schema.Column(dtype, checks=checks, nullable=True)
    wide = [
        _check(code, test)
        for code, _, needed, test in _WIDE_CHECKS.get(contract.name, [])
        if all(name in columns for name in needed)
    ]
    return pa_schema.DataFrameSchema(schema_columns, checks=wide)


# ---------------------------------------------------------------- one chunk


def validate_chunk(rows: pa.Table, contract: TableContract, context: ChunkContext) -> pa.Table:
    """Staged rows: row number, raw values (customer PII hashed), typed values, reason and detail."""
    columns = tuple(name for name in rows.column_names if name != ROW_NUMBER)
    n = rows.num_rows
    raw = {name: rows.column(name).combine_chunks() for name in columns}
    parsed = {name: _parse(raw[name], contract.kind_of(name), context) for name in columns}

    failures: list[pd.DataFrame] = []
    for name, result in parsed.items():
        required = name in contract.required_columns
        if required and result.empty.any():
            failures.append(_failures(np.flatnonzero(result.empty), "missing_value", name))
        if result.unparseable.any():
            failures.append(_failures(np.flatnonzero(result.unparseable), _UNPARSEABLE[contract.kind_of(name)], name))
    failures += _schema_failures(contract, columns, parsed)

    reason, detail = _summarize(failures, contract, columns, raw, n)
    pii_hashes = _customer_pii_hashes(raw, context) if contract.name == "customers" else {}
    staged = {ROW_NUMBER: rows.column(ROW_NUMBER).combine_chunks()}
    staged |= _raw_for_staging(raw, pii_hashes)
    staged |= _typed_for_staging(contract, parsed, pii_hashes, context, n)
    staged[REASON] = reason
    staged[DETAIL] = detail
    return pa.table(staged, schema=staged_schema(contract, columns))


def _failures(positions: np.ndarray, code: str, column: str) -> pd.DataFrame:
    return pd.DataFrame({"position": positions, "code": code, "column": column})


def _schema_failures(
    contract: TableContract, columns: tuple[str, ...], parsed: dict[str, _Parsed]
) -> list[pd.DataFrame]:
    schema = build_schema(contract, columns)
    if not schema.columns:
        return []
    frame = pd.DataFrame({name: _checkable(parsed[name]) for name in schema.columns})
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
                }
            )
        ]
    return []


def _checkable(parsed: _Parsed) -> pd.Series:
    if parsed.checkable is not None:
        return parsed.checkable
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
    found["text"] = found["column"] + ": " + found["code"] + values
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


def _customer_pii_hashes(raw: dict[str, pa.Array], context: ChunkContext) -> dict[str, pa.Array]:
    """Hashes of the customer PII columns present: email and phone normalized first (so they link
    people), full name and birth date as written."""
    hashes = {}
    for name, values in raw.items():
        if name == "email":
            text = normalize_email(values)
        elif name == "phone":
            text = normalize_phone(values, context.phone_country_code, context.phone_min_digits)
        elif name in PII_HASH_COLUMNS:
            trimmed = pc.utf8_trim_whitespace(values)
            text = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
        else:
            continue
        hashes[PII_HASH_COLUMNS[name]] = hash_values(text, context.salt)
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
    for field in typed_fields(contract):
        name = field.name.removeprefix(TYPED)
        if name in parsed:
            typed[field.name] = parsed[name].values.cast(field.type)
        elif name in pii_hashes:
            typed[field.name] = pii_hashes[name]
        elif name == "birth_year" and "birth_date" in parsed:
            typed[field.name] = pc.year(parsed["birth_date"].values).cast(pa.int64())
        else:
            typed[field.name] = _null(field.type, n)
    if contract.name in ("surveys", "tickets") and context.default_source is not None:
        typed[TYPED + "source"] = pc.fill_null(typed[TYPED + "source"], context.default_source)
    return typed
