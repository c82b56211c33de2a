"""`custlens generate`: a simulated Vietnamese shop exported the way its systems would export it
(all six input tables as text, with realistic mess on demand), plus the ground truth behind it.
This module is the entry point: the arguments, the chunks and their random streams, the files.

Output in `out_dir`: `<table>.csv` (or `.parquet`, every column a string) for each table of
`features.lake.contracts.CONTRACTS`, columns in contract order; and in `out_dir/truth/`, which ingest
never reads, the files of `features.sample.truth`. People are simulated in chunks of
`chunk_customers`, chunk k from its own streams (`SeedSequence(seed, spawn_key=(1, k))`, dirt from
`(2, k)`; the campaign calendar from `(0,)`, the marketing spend from `(3,)`), each chunk appended
to the files: memory is bounded by the chunk and the same arguments give the same bytes.

The package, by idea: `world` (parameters and laws of behaviour, the calendar), `people` (persons
and their accounts), `activity` (orders, tickets, surveys, marketing spend), `engagement`
(sessions, shares, campaigns), `dirt` (defects on purpose), `formats` (how each system writes
values), `exports` (the export tables and the writer), `truth` (the truth folder).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from custlens.errors import CustlensError
from custlens.progress import chunks
from features.lake.contracts import CONTRACTS
from features.sample.activity import (
    PAID_CHANNELS,
    paid_acquisitions,
    simulate_marketing_spend,
    simulate_orders,
    simulate_surveys,
    simulate_tickets,
)
from features.sample.dirt import unknown_ids_from, with_dirt
from features.sample.engagement import Campaigns, simulate_engagement
from features.sample.exports import (
    Counters,
    FileFormat,
    Writer,
    events_table,
    export_schema,
    orders_table,
    surveys_table,
    tickets_table,
)
from features.sample.formats import MAX_CUSTOMERS
from features.sample.people import simulate_accounts, simulate_people
from features.sample.truth import TRUTH_SCHEMAS, identities_table, persons_table, truth_file, truth_folder
from features.sample.world import CRM, Window

DEFAULT_END: date = date(2026, 10, 31)  # fixed so the same seed gives the same bytes on any day

# ---------------------------------------------------------------- the summary


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote and where."""

    out_dir: Path
    file_format: FileFormat
    persons: int
    rows: dict[str, int]  # rows written per table (bad rows and duplicates included)
    dirty_rows: dict[str, int]  # rows made bad or duplicated on purpose, per table
    table_paths: dict[str, Path]
    truth_paths: dict[str, Path]
    seconds: float

    def render(self) -> RenderableType:
        table = Table(title=f"sample data: {self.persons:,} people in {self.seconds:.1f} s", title_justify="left")
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("made bad / duplicated", justify="right")
        for name, count in self.rows.items():
            table.add_row(name, f"{count:,}", f"{self.dirty_rows.get(name, 0):,}")
        where = Text.assemble(
            ("exports: ", "bold"), f"{self.out_dir} ({self.file_format})\n",
            ("ground truth (ingest never reads it): ", "bold"), str(truth_folder(self.out_dir)),
        )  # fmt: skip
        return Group(table, where)


# ---------------------------------------------------------------- the entry point


def _check_arguments(out_dir: Path, customers: int, seed: int, start: date, end: date, dirty_rate: float,
                     file_format: str, chunk_customers: int) -> None:  # fmt: skip
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise CustlensError(f"customers must be between 1 and {MAX_CUSTOMERS:,}, not {customers:,}")
    if seed < 0:
        raise CustlensError(f"seed must be a non-negative integer, not {seed}")
    if start >= end:
        raise CustlensError(f"start {start} must be before end {end}; give an earlier --start or a later --end")
    if (end - start).days < 27:
        raise CustlensError(f"the history from {start} to {end} is shorter than 4 weeks; give an earlier --start")
    if not 0.0 <= dirty_rate <= 0.5:
        raise CustlensError(f"dirty_rate must be between 0 and 0.5, not {dirty_rate}")
    if file_format not in ("csv", "parquet"):
        raise CustlensError(f"file format must be 'csv' or 'parquet', not {file_format!r}")
    if chunk_customers < 1:
        raise CustlensError(f"chunk_customers must be at least 1, not {chunk_customers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise CustlensError(f"output folder {out_dir} is a file; pass --out with a folder")


def _three_years_before(end: date) -> date:
    try:
        return end.replace(year=end.year - 3)
    except ValueError:  # 29 February
        return end.replace(year=end.year - 3, day=28)


def generate(
    out_dir: Path,
    customers: int,
    seed: int,
    start: date | None,
    end: date,
    dirty_rate: float,
    file_format: FileFormat,
    console: Console | None = None,
    chunk_customers: int = 50_000,
) -> GenerateSummary:
    """Simulate `customers` people from `start` (default: 3 years before `end`) through `end` and
    write their exports and the ground truth to `out_dir`. Same arguments, same bytes."""
    began = time.perf_counter()
    start = start if start is not None else _three_years_before(end)
    _check_arguments(out_dir, customers, seed, start, end, dirty_rate, file_format, chunk_customers)
    window = Window.of(start, end)
    truth_dir = truth_folder(out_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    other = "parquet" if file_format == "csv" else "csv"
    for name in CONTRACTS:  # a stale export in the other format would make ingest refuse the folder
        (out_dir / f"{name}.{other}").unlink(missing_ok=True)
    writers = {name: Writer(out_dir / f"{name}.{file_format}", export_schema(name), file_format) for name in CONTRACTS}
    truth = {name: Writer(truth_file(truth_dir, name), schema, "parquet") for name, schema in TRUTH_SCHEMAS.items()}
    dirty_counts = dict.fromkeys(CONTRACTS, 0)
    campaigns = Campaigns.schedule(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), window)
    new_customers = np.zeros((window.days, len(PAID_CHANNELS)), dtype=np.int64)
    counters = Counters()

    def put(name: str, rows: pa.Table, dirty: pa.Table) -> None:
        writers[name].write(rows)
        truth["dirty_rows"].write(dirty)
        dirty_counts[name] += dirty.num_rows

    for chunk, part in enumerate(chunks(console, "simulating customers", customers, chunk_customers)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk)))
        dirt_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, chunk)))
        unknown_ids = unknown_ids_from(dirt_rng, customers)
        chunk_tables = _simulate_chunk(rng, part.start, part.stop - part.start, window, campaigns, counters,
                                       new_customers)  # fmt: skip
        for name, rows, corruptible in chunk_tables:
            if name in truth:
                truth[name].write(rows)
            else:
                put(name, *with_dirt(dirt_rng, name, rows, dirty_rate, unknown_ids, corruptible))
    spend_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    spend = simulate_marketing_spend(spend_rng, window, new_customers)
    spend, dirt = with_dirt(spend_rng, "marketing_spend", spend, dirty_rate, unknown_ids_from(spend_rng, customers))
    put("marketing_spend", spend, dirt)
    for writer in (*writers.values(), *truth.values()):
        writer.close()

    return GenerateSummary(
        out_dir=out_dir,
        file_format=file_format,
        persons=customers,
        rows={name: writer.rows for name, writer in writers.items()},
        dirty_rows=dirty_counts,
        table_paths={name: writer.path for name, writer in writers.items()},
        truth_paths={name: writer.path for name, writer in truth.items()},
        seconds=time.perf_counter() - began,
    )


def _simulate_chunk(
    rng: np.random.Generator,
    first: int,
    size: int,
    window: Window,
    campaigns: Campaigns,
    counters: Counters,
    new_customers: np.ndarray,
) -> Iterator[tuple[str, pa.Table, np.ndarray | None]]:
    """Simulate people `first`.. `first + size - 1`; yield each export table (with the rows that may
    be corrupted, when that is restricted) and each truth table, one at a time to bound memory."""
    people = simulate_people(rng, first, size, window)
    accounts = simulate_accounts(rng, people, window)
    orders = simulate_orders(rng, people, accounts, window)
    events = simulate_engagement(rng, people, accounts, orders, window, campaigns)
    tickets = simulate_tickets(rng, people, accounts, orders, window)
    surveys = simulate_surveys(rng, people, accounts, orders, tickets, window)
    np.add.at(new_customers, paid_acquisitions(people), 1)
    event_rows = events.collected(until=window.days)
    del events

    active = np.zeros(len(accounts.person), dtype=bool)
    active[orders.account] = True
    active[event_rows["account"]] = True
    active[accounts.of_person[np.concatenate([surveys.person, tickets.person]), CRM]] = True
    # a quarantined customer row orphans its activity: only idle, non-crm rows are made bad
    yield "customers", accounts.rows, ~active & (accounts.source != CRM)
    yield "orders", orders_table(orders, accounts, window, counters), None
    yield "engagement_events", events_table(event_rows, accounts, window, campaigns, counters), None
    del event_rows
    yield "surveys", surveys_table(surveys, accounts, window, counters), None
    yield "tickets", tickets_table(tickets, accounts, window, counters), None
    yield "persons", persons_table(people, window), None
    yield "identities", identities_table(people, accounts, window), None
