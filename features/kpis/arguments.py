"""What a KPI question may ask, checked in this one place for the CLI, the service and `kpis()`:
the groupings, a period's order and longest length, and the default period (the last full month)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal, get_args

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.kpis.source import last_order_day

Grouping = Literal["month", "week", "channel", "city", "segment", "behaviour"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)
# Groupings by the customers' latest batch scores (`custlens score`): name -> the score column. Each
# has its own cube, built like the main one with the segment standing in the city's place.
SEGMENT_GROUPINGS: dict[str, str] = {"segment": "rfm_segment", "behaviour": "behavioural_segment"}
PERIOD_GROUPINGS = ("month", "week")  # groupings that split the period; the others split customers
# The service refuses a period longer than this: the schemathesis run found that a week grouping over
# 6,000 years runs past BentoML's 60 s timeout; ten years of weeks answer in a few milliseconds.
MAX_KPI_DAYS = 3_660
# The KPI engine looks past a period's days (each group's churn window from its first day, the
# next week's or month's first day), and Python's calendar ends on 9999-12-31: a period outside
# these days is refused with a message, where it overflowed the calendar into a traceback. A
# century on each side is room for any window a business configures.
EARLIEST_KPI_DAY = date(100, 1, 1)
LATEST_KPI_DAY = date(9899, 12, 31)

Field = Literal["from", "to", "by"]


class KpiArgumentError(CustlensError):
    """A KPI question asked wrongly; `field` names the argument at fault (the service's 4xx field)."""

    def __init__(self, message: str, field: Field) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Spelling:
    """How the asker's user writes the period's first and last day, for the messages."""

    start: str
    end: str


CLI_SPELLING = Spelling("--from", "--to")
HTTP_SPELLING = Spelling("`from`", "`to`")


def check_grouping(by: str | None) -> Grouping | None:
    """`by` as a Grouping, or a clear error naming the groupings there are."""
    if by is not None and by not in GROUPINGS:
        raise KpiArgumentError(
            f"unknown grouping {by!r}; group KPIs by one of {', '.join(GROUPINGS)} (or not at all)", "by"
        )
    return by  # type: ignore[return-value]  # checked against GROUPINGS, Grouping's own values


def check_period(start: date, end: date, spelling: Spelling = CLI_SPELLING, max_days: int | None = None) -> None:
    """[start, end] runs forward, lies within EARLIEST_KPI_DAY..LATEST_KPI_DAY and, when
    `max_days` is given, spans fewer days than that."""
    if start < EARLIEST_KPI_DAY:
        raise KpiArgumentError(
            f"{spelling.start} {start.isoformat()} is before {EARLIEST_KPI_DAY.isoformat()}, the first day KPIs "
            "are computed for",
            "from",
        )
    if end > LATEST_KPI_DAY:
        raise KpiArgumentError(
            f"{spelling.end} {end.isoformat()} is after {LATEST_KPI_DAY.isoformat()}, the last day KPIs are "
            "computed for",
            "to",
        )
    if start > end:
        raise KpiArgumentError(
            f"the period starts on {start.isoformat()}, after its end {end.isoformat()}; "
            f"{spelling.start} must not be after {spelling.end}",
            "from",
        )
    if max_days is not None and (end - start).days >= max_days:
        raise KpiArgumentError(
            f"the period spans {(end - start).days + 1:,} days; ask for at most {max_days:,} per request", "to"
        )


def kpi_period(
    settings: Settings,
    start: date | None,
    end: date | None,
    spelling: Spelling = CLI_SPELLING,
    max_days: int | None = None,
) -> tuple[date, date]:
    """The period asked for: both days (checked), or neither for the last full month of the lake."""
    if start is None and end is None:
        return last_full_month(settings)
    if start is None or end is None:
        raise KpiArgumentError(
            f"give both {spelling.start} and {spelling.end}, or neither for the last full month of the data", "from"
        )
    check_period(start, end, spelling, max_days)
    return start, end


def last_full_month(settings: Settings) -> tuple[date, date]:
    """The last calendar month wholly covered by the lake's orders, in the business's local days:
    the default KPI period."""
    last_day = last_order_day(settings)
    end = last_day + timedelta(days=1)
    if end.day != 1:  # the last month is not complete: take the one before it
        last_day = end.replace(day=1) - timedelta(days=1)
    return last_day.replace(day=1), last_day
