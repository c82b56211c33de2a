"""What one ingest run did, for the user: per table counts and reasons (with an example row each),
what was detected and assumed (time zone, currency, formats, derived columns, identity merges,
guests, refunds), as JSON (`data/reports/ingest_report.json`) and as the printed summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from features.lake.identity import IdentityResult
from features.lake.tables import Business

REPORT_NAME = "ingest_report.json"
_PATH_LINES = ("lake:", "quarantine:", "report:")
PII_NOTE = (
    "customers quarantine keeps email_hash, phone_hash, full_name_hash and birth_date_hash "
    "(HMAC-SHA256) instead of the raw values; no raw email, phone, name, birth date or declared "
    "identity key is stored anywhere"
)


@dataclass(frozen=True)
class Example:
    """One quarantined row, so that a reason can be recognized in the file."""

    reason: str
    count: int
    row_number: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "count": self.count, "row": self.row_number, "detail": self.detail}


@dataclass(frozen=True)
class TableResult:
    """What happened to one input table."""

    table: str
    present: bool
    file: str | None = None
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    examples: tuple[Example, ...] = ()
    extra_columns: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)  # contract column -> where its values came from
    derived: dict[str, str] = field(default_factory=dict)  # contract column -> how custlens made it
    timestamp_formats: dict[str, dict[str, int]] = field(default_factory=dict)
    reformatted_numbers: dict[str, int] = field(default_factory=dict)
    rounded_amounts: dict[str, int] = field(default_factory=dict)
    date_range: tuple[str, str] | None = None
    guests: int = 0  # accepted orders without a customer (orders only)
    cascade: int = 0  # unknown_customer rows whose customer row was itself quarantined

    @property
    def bad_row_share(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.accepted + self.quarantined + self.duplicates

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "present": self.present,
            "file": self.file,
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "reconciled": self.reconciled,
            "quarantined_by_reason": self.quarantined_by_reason,
            "examples": [example.to_dict() for example in self.examples],
            "bad_row_share": round(self.bad_row_share, 6),
            "extra_columns": list(self.extra_columns),
            "columns": self.columns,
            "derived": self.derived,
            "timestamp_formats": self.timestamp_formats,
            "reformatted_numbers": self.reformatted_numbers,
            "rounded_amounts": self.rounded_amounts,
            "date_range": list(self.date_range) if self.date_range else None,
        }
        if self.table == "orders":
            out["guest_orders"] = self.guests
        if self.cascade:
            out["unknown_customer_because_customer_quarantined"] = self.cascade
        return out


@dataclass(frozen=True)
class IdentityStats:
    source_ids: int = 0
    customers: int = 0
    source_ids_merged: int = 0
    shared_contacts_ignored: int = 0
    merged_by_key: int = 0
    keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: IdentityResult, keys: tuple[str, ...]) -> IdentityStats:
        return cls(
            result.source_ids,
            result.customers,
            result.source_ids_merged,
            result.shared_contacts_ignored,
            result.merged_by_key,
            keys,
        )


@dataclass(frozen=True)
class Money:
    """Guests and refunds: the shares of the shop's books that are not plain customer orders."""

    guest_orders: int = 0
    guest_revenue: float = 0.0
    refunds: int = 0
    refunded: float = 0.0  # a positive amount: what the refunds gave back
    completed_revenue: float = 0.0  # customers' and guests' completed orders, before refunds
    converted_orders: int = 0  # rows in another currency converted with ingest.exchange_rates

    def to_dict(self, currency: str | None, minor_units: int) -> dict[str, Any]:
        net = self.completed_revenue - self.refunded
        return {
            "currency": currency,
            "completed_revenue": round(self.completed_revenue, minor_units),
            "refunds": self.refunds,
            "refunded": round(self.refunded, minor_units),
            "refund_share": round(self.refunded / self.completed_revenue, 6) if self.completed_revenue else 0.0,
            "net_revenue": round(net, minor_units),
            "guest_orders": self.guest_orders,
            "guest_revenue": round(self.guest_revenue, minor_units),
            "guest_revenue_share": round(self.guest_revenue / net, 6) if net else 0.0,
            "converted_orders": self.converted_orders,
        }


@dataclass(frozen=True)
class IngestReport:
    """The outcome of one ingest run; `path` is the JSON copy of it (none for a --check)."""

    path: Path
    ok: bool
    source_dir: Path
    tables: dict[str, TableResult]
    identity: IdentityStats
    business: Business
    money: Money
    lake_dir: Path
    quarantine_dir: Path
    max_bad_row_share: float
    failed_tables: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # why the export may not replace the lake (features/lake/guards.py)
    lake_rows: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)  # table: (lake, export)
    dropped_tables: tuple[str, ...] = ()  # --drop-table
    error: str | None = None  # a step after the checks failed (the KPI cube, say)
    salt_origin: str = "settings"
    seconds: float = 0.0
    check_only: bool = False

    @property
    def absent_tables(self) -> tuple[str, ...]:
        return tuple(name for name, result in self.tables.items() if not result.present)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "check_only": self.check_only,
            "source_dir": str(self.source_dir),
            "business": self.business.to_dict(),
            "tables": {name: result.to_dict() for name, result in self.tables.items()},
            "absent_tables": list(self.absent_tables),
            "identity": {
                "source_ids": self.identity.source_ids,
                "customers": self.identity.customers,
                "source_ids_merged": self.identity.source_ids_merged,
                "shared_contacts_ignored": self.identity.shared_contacts_ignored,
                "identity_keys": list(self.identity.keys),
                "merged_by_identity_keys": self.identity.merged_by_key,
            },
            "money": self.money.to_dict(self.business.currency, self.business.minor_units),
            "reconciliation": "for every present table: rows_in = accepted + quarantined + duplicates",
            "max_bad_row_share": self.max_bad_row_share,
            "failed_tables": list(self.failed_tables),
            "refused": list(self.refused),
            "lake_rows_before_after": {table: list(counts) for table, counts in self.lake_rows.items()},
            "dropped_tables": list(self.dropped_tables),
            "error": self.error,
            "lake_dir": str(self.lake_dir),
            "lake_written": self.ok and not self.check_only,
            "quarantine_dir": str(self.quarantine_dir),
            "pii": {"hash": "HMAC-SHA256", "salt_from": self.salt_origin, "note": PII_NOTE},
            "timestamps": "UTC instants (Parquet TIMESTAMP with isAdjustedToUTC=true); naive and date-only "
            f"values were read in {self.business.timezone}",
            "seconds": round(self.seconds, 2),
        }

    def render(self) -> RenderableType:
        title = "custlens ingest --check (nothing written)" if self.check_only else "custlens ingest"
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in ("table", "rows in", "accepted", "quarantined", "duplicates", "bad share", "top reasons"):
            table.add_column(column, justify="left" if column in ("table", "top reasons") else "right")
        for name, result in self.tables.items():
            if not result.present:
                table.add_row(name, "[dim]absent[/]", "", "", "", "", "")
                continue
            reasons = sorted(result.quarantined_by_reason.items(), key=lambda item: (-item[1], item[0]))
            top = ", ".join(f"{reason} {count:,}" for reason, count in reasons[:3])
            share = f"{result.bad_row_share:.2%}"
            if name in self.failed_tables:
                share = f"[bold red]{share}[/]"
            label = name + (" [dim](derived)[/]" if "table" in result.derived else "")
            table.add_row(
                label,
                f"{result.rows_in:,}",
                f"{result.accepted:,}",
                f"{result.quarantined:,}",
                f"{result.duplicates:,}",
                share,
                top,
            )
        # paths stay on one line, so they can be copied even from a narrow terminal; the rest wraps
        lines = [
            Text.from_markup(line, overflow="ignore" if line.startswith(_PATH_LINES) else "fold")
            for line in self._lines()
        ]
        return Group(table, *lines)

    def _lines(self) -> list[str]:
        business, identity, money = self.business, self.identity, self.money
        by = ", ".join(["shared email/phone", *identity.keys])
        lines = [
            f"business:   time zone {business.timezone} ({business.timezone_from}); "
            f"currency {business.currency or '-'} ({business.currency_from}, {business.minor_units} decimals)",
            f"customers:  {identity.customers:,} from {identity.source_ids:,} source ids "
            f"({identity.source_ids_merged:,} merged by {by}"
            + (f", {identity.merged_by_key:,} by the identity keys alone" if identity.keys else "")
            + (
                f", {identity.shared_contacts_ignored:,} shared placeholder contacts ignored"
                if identity.shared_contacts_ignored
                else ""
            )
            + ")",
        ]
        money_view = money.to_dict(business.currency, business.minor_units)
        if money.guest_orders or money.refunds or money.converted_orders:
            lines.append(
                f"orders:     {money.guest_orders:,} guest orders ({money_view['guest_revenue_share']:.1%} of net "
                f"revenue), {money.refunds:,} refund{'' if money.refunds == 1 else 's'} "
                f"({money_view['refund_share']:.1%} of revenue given back)"
                + (f", {money.converted_orders:,} converted to {business.currency}" if money.converted_orders else "")
            )
        for name, result in self.tables.items():
            notes = []
            if result.derived:
                notes.append("derived " + "; ".join(f"{column}: {how}" for column, how in result.derived.items()))
            formats = {
                f"{column} {fmt}"
                for column, counts in result.timestamp_formats.items()
                for fmt in counts
                if counts[fmt]
            }
            if formats:
                notes.append("read " + ", ".join(sorted(formats)))
            rounded = sum(result.rounded_amounts.values())
            if rounded:
                notes.append(f"{rounded:,} amounts rounded to {business.minor_units} decimals")
            if result.date_range:
                notes.append(f"{result.date_range[0]} .. {result.date_range[1]}")
            if result.cascade:
                notes.append(f"{result.cascade:,} unknown_customer rows belong to quarantined customer rows")
            notes += [f"e.g. row {example.row_number}: {example.detail}" for example in result.examples[:3]]
            if notes:
                lines.append(f"{name}: " + " · ".join(notes))
        lines.append("every table: rows in = accepted + quarantined + duplicates")
        if self.check_only:
            lines.append("--check: the lake, quarantine and report were not written")
        else:
            lines += [
                f"lake:       {self.lake_dir}" + ("" if self.ok else "  [bold red](not written)[/]"),
                f"quarantine: {self.quarantine_dir}",
                f"report:     {self.path}",
            ]
        return lines

    def failure_message(self) -> str:
        """Why ingest failed: the export would shrink the lake (what changed, and the option that says
        it is meant), and per failed table the bad share, the top reasons with an example row each,
        and when orders and the rest fail because their customers were rejected, that cause."""
        parts = [f"refused: {reason}" for reason in self.refused]
        for name in self.failed_tables:
            result = self.tables[name]
            reasons = "; ".join(
                f"{example.reason} {example.count:,} (e.g. row {example.row_number}: {example.detail})"
                for example in result.examples[:3]
            )
            cascade = (
                f" — {result.cascade:,} of these rows are unknown_customer because their customer row was "
                "quarantined: fix the customers export first"
                if result.cascade
                else ""
            )
            parts.append(
                f"{name}: {result.bad_row_share:.2%} of rows quarantined "
                f"({result.quarantined:,} of {result.rows_in:,}), "
                f"above max_bad_row_share {self.max_bad_row_share:.2%}; top reasons: {reasons}{cascade}"
            )
        where = (
            "Nothing was written (--check)."
            if self.check_only
            else f"The lake was not changed. See the report {self.path} and the quarantine in {self.quarantine_dir}."
        )
        advice = (
            " Fix the export or its description (ingest.tables), or raise ingest.max_bad_row_share if these rows "
            "are expected."
            if self.failed_tables
            else ""
        )
        return "\n".join(parts) + f"\n{where}{advice}"
