"""Dirt on purpose: the defects a table's rows can be given (each with the quarantine reason ingest
must give it), re-exported copies, and the record of every such row for the truth folder.

With dirty_rate > 0, per chunk and table about dirty_rate of the rows get exactly one defect of
DEFECTS[table]; a duplicate_id_conflict is a later row with the same id and other valid content,
and about dirty_rate / 2 rows are re-exported unchanged (exact_duplicate); those copies follow the
chunk's rows. Customer rows are only corrupted in place when no activity refers to them and they
are not crm records, so a quarantined customer row never orphans other rows. The record
(`dirty_rows.parquet`) names each row by its table and row_key (source|source_customer_id for
customers, date|channel for marketing_spend, else the row id), its kind, and the column made bad
(in the copy for a conflict; null for an exact duplicate).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.lake.contracts import CONTRACTS, QUARANTINE_REASONS
from features.sample.formats import MAX_CUSTOMERS, format_timestamps, join, number_strings, pick, source_customer_ids
from features.sample.world import CRM

EXACT_DUPLICATE = "exact_duplicate"
EXTRA_ROW_KINDS = ("duplicate_id_conflict", EXACT_DUPLICATE)  # kinds that add a row to the export rather than spoil one

# every defect a table can get, each with exactly one reason code (conflicts are extra later rows)
DEFECTS: dict[str, tuple[str, ...]] = {
    "customers": ("unparseable_timestamp", "missing_value", "unparseable_date", "unparseable_boolean",
                  "duplicate_id_conflict"),
    "orders": ("unparseable_timestamp", "negative_amount", "unparseable_number", "unknown_status", "missing_value",
               "unknown_customer", "duplicate_id_conflict"),
    "engagement_events": ("unparseable_timestamp", "unknown_event_type", "missing_value", "unknown_customer",
                          "duplicate_id_conflict"),
    "surveys": ("score_out_of_range", "unparseable_timestamp", "missing_value", "unknown_customer",
                "duplicate_id_conflict"),
    "tickets": ("first_response_before_opened", "unparseable_timestamp", "missing_value", "unknown_customer",
                "duplicate_id_conflict"),
    "marketing_spend": ("negative_amount", "unparseable_number", "missing_value", "duplicate_id_conflict"),
}  # fmt: skip
assert all(kind in QUARANTINE_REASONS for kinds in DEFECTS.values() for kind in kinds)

UnknownIds = Callable[[np.ndarray], pa.Array]


def unknown_ids_from(rng: np.random.Generator, customers: int) -> UnknownIds:
    """Source ids (one per source code given) that no person of a `customers`-people sample has."""

    def unknown_ids(source: np.ndarray) -> pa.Array:
        # numbers no person has: the id formats are bijections, so these ids exist nowhere
        numbers = customers + 1 + rng.integers(0, MAX_CUSTOMERS, len(source))
        out = np.empty(len(source), dtype=object)
        for code in np.unique(source):
            mine = source == code
            out[mine] = source_customer_ids(int(code), numbers[mine]).to_numpy(zero_copy_only=False)
        return pa.array(out, type=pa.string())

    return unknown_ids


def _row_keys(name: str, rows: pa.Table) -> pa.Array:
    if name == "customers":
        return _array(join(rows.column("source"), "|", rows.column("source_customer_id")))
    if name == "marketing_spend":
        return _array(join(rows.column("date"), "|", rows.column("channel")))
    row_id = CONTRACTS[name].row_id
    assert row_id is not None
    return rows.column(row_id).combine_chunks()


def _defect(
    rng: np.random.Generator, name: str, kind: str, rows: pa.Table, unknown_ids: UnknownIds
) -> dict[str, pa.Array]:
    """New values for some columns of `rows` that give each row exactly the reason `kind`."""
    count = rows.num_rows

    def text(*choices: str) -> pa.Array:
        return pick(choices, rng.integers(0, len(choices), count))

    timestamp = {"customers": "signup_at", "orders": "ordered_at", "engagement_events": "occurred_at",
                 "surveys": "responded_at", "tickets": "opened_at"}.get(name, "")  # fmt: skip
    amount = {"orders": "net_amount", "marketing_spend": "spend"}.get(name, "")
    if kind == "unparseable_timestamp":
        return {timestamp: text("not a date", "2024-13-45 25:61:00", "31/02/2025 10:00", "hôm qua")}
    if kind == "missing_value":
        column = {"orders": "status", "engagement_events": "event_type", "surveys": "score",
                  "marketing_spend": "spend"}.get(name, timestamp)  # fmt: skip
        return {column: text("")}
    if kind == "negative_amount":
        negative = {amount: join("-", rows.column(amount))}
        # a negative amount on a returned order is a refund (valid); on a completed one it is not
        return negative | ({"status": text("completed")} if name == "orders" else {})
    if kind == "unparseable_number":  # a letter O typed for a zero; every amount is a multiple of 1,000
        return {amount: pc.replace_substring(rows.column(amount), "0", "O", max_replacements=1)}
    if kind == "unparseable_date":
        return {"birth_date": text("1990-02-30", "31/12/1990", "1988-13-01")}
    if kind == "unparseable_boolean":
        return {"marketing_opt_in": text("maybe", "có", "N/A")}
    if kind == "unknown_status":
        return {"status": text("shipped", "delivered", "pending")}
    if kind == "unknown_event_type":
        return {"event_type": text("pageview", "click", "PageView")}
    if kind == "score_out_of_range":
        nps = np.asarray(pc.equal(rows.column("survey_type"), "nps").to_numpy(zero_copy_only=False), dtype=bool)
        low = rng.random(count) < 0.5
        return {"score": pick(("0", "6", "-1", "11"), nps * 2 + (~low).astype(np.int64))}
    if kind == "first_response_before_opened":
        opened = rows.column("_seconds").to_numpy()
        early = opened - rng.integers(60, 7200, count)
        return {"first_response_at": format_timestamps(early, np.full(count, CRM))}
    if kind == "unknown_customer":
        source = rows.column("_source").to_numpy() if "_source" in rows.column_names else np.full(count, CRM)
        return {"source_customer_id": unknown_ids(source)}
    raise AssertionError(f"no defect {kind} for {name}")


def _conflicting_version(rng: np.random.Generator, name: str, rows: pa.Table) -> dict[str, pa.Array]:
    """A later export of the same id whose content differs, every value still valid."""
    count = rows.num_rows
    if name == "customers":
        return {"city": pc.if_else(pc.equal(rows.column("city"), "Huế"), "Hà Nội", "Huế")}
    if name in ("orders", "marketing_spend"):
        amount = "net_amount" if name == "orders" else "spend"
        changed = pc.cast(rows.column(amount), pa.int64()).to_numpy() + 1000 * rng.integers(1, 50, count)
        return {amount: number_strings(changed)}
    if name == "engagement_events":
        seconds = rows.column("_seconds").to_numpy() + rng.integers(1, 600, count)
        return {"occurred_at": format_timestamps(seconds, rows.column("_source").to_numpy())}
    if name == "surveys":
        score = pc.cast(rows.column("score"), pa.int64()).to_numpy()
        nps = np.asarray(pc.equal(rows.column("survey_type"), "nps").to_numpy(zero_copy_only=False), dtype=bool)
        return {"score": number_strings(np.where(nps, (score + 1) % 11, score % 5 + 1))}
    if name == "tickets":
        return {"channel": pc.if_else(pc.equal(rows.column("channel"), "phone"), "chat", "phone")}
    raise AssertionError(f"no conflicting version for {name}")


def with_dirt(
    rng: np.random.Generator,
    name: str,
    rows: pa.Table,
    dirty_rate: float,
    unknown_ids: UnknownIds,
    corruptible: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table]:
    """`rows` with about `dirty_rate` of them made bad (one defect each) and dirty_rate / 2 exact
    duplicates placed after their original; and the record of each (table, row_key, kind, column)."""
    count = rows.num_rows
    if dirty_rate <= 0 or count == 0:
        return rows, _dirty_record([], [], [], [])
    kinds = DEFECTS[name]
    bad = rng.binomial(count, dirty_rate)
    kind_of_bad = rng.integers(0, len(kinds), bad)
    conflicts = int((kind_of_bad == kinds.index("duplicate_id_conflict")).sum())
    in_place_kinds = kind_of_bad[kind_of_bad != kinds.index("duplicate_id_conflict")]
    duplicates = rng.binomial(count, dirty_rate / 2)
    allowed = np.arange(count) if corruptible is None else np.flatnonzero(corruptible)
    in_place = rng.choice(allowed, size=min(len(in_place_kinds), len(allowed)), replace=False)
    in_place_kinds = in_place_kinds[: len(in_place)]
    untouched = np.ones(count, dtype=bool)
    untouched[in_place] = False
    candidates = np.flatnonzero(untouched)
    copied = rng.choice(candidates, size=min(conflicts + duplicates, len(candidates)), replace=False)
    conflicts = min(conflicts, len(copied))
    duplicates = len(copied) - conflicts
    conflict_of, duplicate_of = copied[:conflicts], copied[conflicts:]

    changed = rows
    column_of_kind: dict[int, str] = {}
    for code in np.unique(in_place_kinds):
        positions = np.sort(in_place[in_place_kinds == code])
        changes = _defect(rng, name, kinds[code], rows.take(pa.array(positions)), unknown_ids)
        column_of_kind[int(code)] = next(iter(changes))  # the column made bad (a status may come along)
        changed = _replace_rows(changed, positions, changes)

    # the copies follow the chunk's rows, shuffled, as a re-export appended to the file would
    copied = rng.permutation(np.concatenate([conflict_of, duplicate_of]))
    is_conflict = np.isin(copied, conflict_of)
    copies = changed.take(pa.array(copied, type=pa.int64()))
    conflict_column = None
    if conflicts:
        position = np.flatnonzero(is_conflict)
        changes = _conflicting_version(rng, name, copies.take(pa.array(position)))
        (conflict_column,) = changes
        copies = _replace_rows(copies, position, changes)
    out = pa.concat_tables([changed, copies])
    in_place_order = np.argsort(in_place, kind="stable")
    keys = pa.concat_arrays(
        [_row_keys(name, changed.take(pa.array(in_place[in_place_order], type=pa.int64()))), _row_keys(name, copies)]
    )
    bad_kinds = [kinds[code] for code in in_place_kinds[in_place_order]]
    bad_kinds += np.where(is_conflict, "duplicate_id_conflict", EXACT_DUPLICATE).tolist()
    columns: list[str | None] = [column_of_kind[int(code)] for code in in_place_kinds[in_place_order]]
    columns += [conflict_column if conflict else None for conflict in is_conflict.tolist()]
    return out, _dirty_record([name] * len(bad_kinds), keys.to_pylist(), bad_kinds, columns)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _replace_rows(rows: pa.Table, positions: np.ndarray, changes: dict[str, pa.Array]) -> pa.Table:
    """`rows` with the values of some columns at the (sorted) `positions` replaced."""
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[positions] = True
    for column, values in changes.items():
        replaced = pc.replace_with_mask(rows.column(column).combine_chunks(), pa.array(mask), _array(values))
        rows = rows.set_column(rows.column_names.index(column), column, replaced)
    return rows


def _dirty_record(tables: list[str], keys: list[str], kinds: list[str], columns: list[str | None]) -> pa.Table:
    return pa.table({"table": pa.array(tables, pa.string()), "row_key": pa.array(keys, pa.string()),
                     "kind": pa.array(kinds, pa.string()), "column": pa.array(columns, pa.string())})  # fmt: skip
