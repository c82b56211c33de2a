"""What ingest refuses even when every row is good: an export that would silently replace the lake
with much less than it holds — a truncated or header-only file, a table the export left out, a
required table with nothing accepted. A shrink the business means (`--allow-shrink`) or a table it
stopped exporting (`--drop-table NAME`) is said on the command line, never assumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow.parquet as pq

from custlens.errors import CustlensError
from features.lake.contracts import CONTRACTS
from features.lake.tables import CROSSWALK, GUEST_ORDERS, lake_file

# the contract tables the next stages cannot do without, even when the business says so
REQUIRED = ("customers", "orders")


def check_drop_tables(drop_tables: Iterable[str], exported: Iterable[str]) -> tuple[str, ...]:
    """The tables named by --drop-table, each a table a lake may lack and the export does not hold."""
    dropped = tuple(dict.fromkeys(drop_tables))
    exported = set(exported)
    for name in dropped:
        if name not in CONTRACTS:
            raise CustlensError(f"--drop-table {name}: not a table; the tables are {', '.join(CONTRACTS)}")
        if name in REQUIRED:
            raise CustlensError(f"--drop-table {name}: {name} is required and cannot be dropped")
        if name in exported:
            raise CustlensError(
                f"--drop-table {name}: the export has {name}; leave it out of the export, or drop the option"
            )
    return dropped


def lake_rows(lake_dir: Path) -> dict[str, int]:
    """Rows per contract table in the current lake (customers: source ids; orders with the guest
    orders), from the Parquet footers; empty when there is no lake yet or it cannot be read."""
    counts: dict[str, int] = {}
    try:
        for table in CONTRACTS:
            # customers by source id: linking more of them into one customer is not a shrink
            path = lake_file(lake_dir, CROSSWALK if table == "customers" else table)
            if path.is_file():
                counts[table] = pq.read_metadata(path).num_rows
        guests = lake_file(lake_dir, GUEST_ORDERS)
        if "orders" in counts and guests.is_file():
            counts["orders"] += pq.read_metadata(guests).num_rows
    except (OSError, ValueError):  # a damaged lake is replaced, not compared
        return {}
    return counts


def refusals(
    before: Mapping[str, int],
    after: Mapping[str, int],
    max_shrink_share: float,
    allow_shrink: bool,
    dropped: tuple[str, ...],
) -> tuple[str, ...]:
    """Why the new lake (`after`: rows per table the export gives; a table absent from the export is
    missing) must not replace the current one (`before`), one message per table."""
    found = []
    for table in CONTRACTS:
        old, new = before.get(table), after.get(table)
        if table in REQUIRED and new == 0:
            found.append(f"{table}: no row was accepted; the export is empty or every row was quarantined")
        elif old is None or table in dropped:
            continue
        elif new is None:
            found.append(
                f"{table}: {old:,} rows in the lake, but the export has no {table}; export it, or pass "
                f"--drop-table {table} if the business no longer keeps it"
            )
        elif not allow_shrink and old and new < old * (1 - max_shrink_share):
            unit = "source ids" if table == "customers" else "rows"
            found.append(
                f"{table}: {old:,} -> {new:,} {unit} ({new / old - 1:+.1%}) but ingest.max_shrink_share allows "
                f"-{max_shrink_share:.0%}; a truncated export? If it is complete, pass --allow-shrink"
            )
    return tuple(found)
