"""What the cube path and the direct path share: a question's groups and their day spans, the parts
summed per group, and dividing those parts into the KpiTable (or saying why a KPI has no value)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from features.kpis.arguments import PERIOD_GROUPINGS, SEGMENT_GROUPINGS
from features.kpis.cube import CubeMeta, PredictedSum
from features.kpis.definitions import (
    ALL,
    GUEST_KPIS,
    GUEST_MISSING,
    GUESTS,
    KPI_BY_NAME,
    KPIS,
    NONE_LABEL,
    PREDICTED_KPIS,  # fmt: skip
    KpiTable,
    KpiValue,
)
from features.lake.tables import sql_date

CUSTOMER_PARTS = ("active_customers", "new_customers", "repeat_customers")
# The standard normal's 90th percentile: a normal total's P10 and P90 are its mean -/+ this many sd.
Z_90 = 1.2815515655446004
Span = tuple[date, date]  # the first and last day a group covers


@dataclass(frozen=True)
class Question:
    """One question: its period, its grouping, and the groups that grouping makes of the period."""

    start: date
    end: date
    by: str | None  # as asked
    dimension: str | None  # the cube column it reads: a segment sits in the city's place of its own cube
    labels: tuple[str, ...]  # the groups known up front (every month or week, or `all`); () for customers
    spans: dict[str, Span]
    label_sql: str  # SQL of a row's group label from its `day`, `channel`, `city`
    start_sql: str  # SQL of the first day of a row's group

    @classmethod
    def of(cls, start: date, end: date, by: str | None) -> Question:
        dimension = "city" if by in SEGMENT_GROUPINGS else by
        start_literal = sql_date(start)
        if dimension in ("month", "week"):
            spans: dict[str, Span] = {}
            day = start
            while day <= end:
                if dimension == "month":
                    label = day.strftime("%Y-%m")
                    next_day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
                else:
                    monday = day - timedelta(days=day.weekday())
                    label = monday.isoformat()
                    next_day = monday + timedelta(days=7)
                spans[label] = (day, min(end, next_day - timedelta(days=1)))
                day = next_day
            label_sql = (
                "strftime(day, '%Y-%m')" if dimension == "month" else "strftime(date_trunc('week', day), '%Y-%m-%d')"
            )
            start_sql = f"greatest(CAST(date_trunc('{dimension}', day) AS DATE), {start_literal})"
            return cls(start, end, by, dimension, tuple(spans), spans, label_sql, start_sql)
        if dimension in ("channel", "city"):
            return cls(start, end, by, dimension, (), {}, f"coalesce({dimension}, '{NONE_LABEL}')", start_literal)
        return cls(start, end, by, dimension, (ALL,), {ALL: (start, end)}, f"'{ALL}'", start_literal)

    @property
    def by_customer(self) -> bool:
        """Grouped by a customer column (channel, city or a segment) rather than by period."""
        return self.dimension in ("channel", "city")

    @property
    def within_sql(self) -> str:
        """SQL: a row's `day` is in the period."""
        return f"day BETWEEN {sql_date(self.start)} AND {sql_date(self.end)}"

    def groups(self, parts: Parts, meta: CubeMeta) -> Groups:
        """The groups of the answer: every month or week of the period (or `all`); by a customer
        column, every value that has data."""
        labels = self.labels or tuple(sorted(parts.sums))
        spans = self.spans or {label: (self.start, self.end) for label in labels}
        # a churn rate needs its whole churn window from the group's first day inside the data
        complete = {label for label in labels if spans[label][0] + timedelta(days=meta.churn_days - 1) <= meta.last_day}
        return Groups(labels, spans, complete)


@dataclass(frozen=True)
class Groups:
    labels: tuple[str, ...]
    spans: dict[str, Span]
    complete: set[str]  # the groups whose churn cohort can be counted


@dataclass
class Parts:
    """The additive parts of one answer per group label, and the exact median hours per measure."""

    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    medians: dict[str, dict[str, float]] = field(default_factory=dict)

    def of(self, label: str) -> dict[str, float]:
        return self.sums.setdefault(label, {})

    def add(self, rows: Iterable[Sequence[object]], names: Sequence[str]) -> None:
        """Add rows of (label, *values) to the parts `names`; NULL adds nothing."""
        for row in rows:
            values = self.of(str(row[0]))
            for name, value in zip(names, row[1:], strict=True):
                values[name] = values.get(name, 0.0) + (float(value) if value is not None else 0.0)  # type: ignore[arg-type]

    def set_durations(self, rows: Iterable[tuple[object, str, float, float, float]]) -> None:
        """Rows of (label, measure, count, sum of hours, median hours) of ticket durations."""
        for label, measure, count, total, median in rows:
            values = self.of(str(label))
            values[f"{measure}_count"] = float(count)
            values[f"{measure}_sum"] = float(total)
            self.medians.setdefault(str(label), {})[measure] = float(median)

    def set_predicted(self, predicted: dict[str, PredictedSum] | None, groups: Groups) -> None:
        """The latest batch scores' predicted value per customer group (not per period), and the
        P10-P90 range of its total where every customer of the group has a variance
        (total_range)."""
        for label, found in (predicted or {}).items():
            if label in groups.spans:
                self.of(label).update(predicted_clv_total=found.total, scored_customers=found.customers)
                if found.variance is not None:
                    low, high = total_range(found.total, found.variance)
                    self.of(label).update(predicted_clv_total_p10=low, predicted_clv_total_p90=high)


def total_range(total: float, variance: float) -> tuple[float, float]:
    """P10 and P90 of a group's predicted revenue: a sum of many customers' values is close to
    normal, with the sum of their predictions as its mean and the sum of their variances
    (training.value_range) as its variance, customers' outcomes independent given their
    predictions. Not the sum of the customers' P10s and P90s, which is far wider: a group's
    customers do not all land at their own P10 at once."""
    spread = Z_90 * math.sqrt(max(variance, 0.0))
    # predicted revenue of a group is not below 0 (a net refund is rare and small): the normal
    # approximation of a small group would say so; its P10 is 0 then
    return max(total - spread, 0.0) if total >= 0 else total - spread, total + spread


def kpi_table(question: Question, groups: Groups, parts: Parts, meta: CubeMeta) -> KpiTable:
    values: list[KpiValue] = []
    for label in groups.labels:
        values.extend(
            _divide(parts.sums.get(label, {}), parts.medians.get(label, {}), label, groups.spans[label], question, meta)
        )
    return KpiTable(start=question.start, end=question.end, by=question.by, groups=groups.labels,
                    values=tuple(values), currency=meta.currency, timezone=meta.timezone)  # fmt: skip


def _divide(
    parts: dict[str, float], medians: dict[str, float], label: str, span: Span, question: Question, meta: CubeMeta
) -> list[KpiValue]:
    """Divide the summed parts of one group into its KPIs, or say why a KPI has no value."""
    parts = dict(parts)
    parts["nps_net"] = parts.get("nps_promoters", 0.0) - parts.get("nps_detractors", 0.0)
    parts["returning_customers"] = parts.get("active_customers", 0.0) - parts.get("new_customers", 0.0)
    out: dict[str, KpiValue] = {}
    for definition in KPIS:
        name = definition.name
        if label == GUESTS and question.dimension == "city" and name not in GUEST_KPIS:  # city or a segment
            out[name] = KpiValue(label, name, None, missing=GUEST_MISSING)
            continue
        if definition.table not in meta.tables:
            out[name] = KpiValue(label, name, None, missing=f"no {definition.table} export in the lake")
            continue
        if name in ("cac", "ltv_to_cac") and question.dimension == "city":
            out[name] = KpiValue(label, name, None, missing=f"marketing spend is not split by {question.by}")
            continue
        if name in PREDICTED_KPIS and question.by in PERIOD_GROUPINGS:
            missing = f"a prediction from the latest scores is not split by {question.by}"
            out[name] = KpiValue(label, name, None, missing=missing)
            continue
        if name in PREDICTED_KPIS and definition.denominator is None and definition.numerator not in parts:
            missing = (KPI_BY_NAME["predicted_clv"].empty if "predicted_clv_total" not in parts else
                       "the CLV version of the latest scores has no range: retrain clv and run `custlens score`")
            out[name] = KpiValue(label, name, None, missing=missing)
            continue
        if name in ("churn_rate", "retention_rate") and "churn_base" not in parts:
            window_end = span[0] + timedelta(days=meta.churn_days - 1)
            out[name] = KpiValue(
                label, name, None,
                missing=f"the {meta.churn_days}-day churn window from {span[0].isoformat()} ends "
                f"{window_end.isoformat()}, after the last order day {meta.last_day.isoformat()}",
            )  # fmt: skip
            continue
        if name == "ltv_to_cac":
            clv, cac = out["historic_clv"], out["cac"]
            if clv.value is None or cac.value is None or cac.value == 0:
                reason = clv.missing or cac.missing or "CAC is 0 (spend without cost)"
                out[name] = KpiValue(label, name, None, clv.value, cac.value, missing=f"LTV:CAC undefined: {reason}")
            else:
                out[name] = KpiValue(label, name, clv.value / cac.value, clv.value, cac.value)
            continue
        numerator = parts.get(definition.numerator, 0.0) if definition.numerator else None
        if definition.denominator is None:
            out[name] = KpiValue(label, name, numerator, numerator)
            continue
        denominator = parts.get(definition.denominator, 0.0)
        if denominator == 0:
            reason = definition.empty
            if name in ("churn_rate", "retention_rate"):
                reason = f"no customers bought in the {meta.activity_days} days before {span[0].isoformat()}"
            elif name == "historic_clv":
                reason = f"no customer had bought by {span[1].isoformat()}"
            out[name] = KpiValue(label, name, None, numerator, denominator, missing=reason)
            continue
        if definition.numerator is None:  # a median: the count is its denominator
            value = medians.get(name.split("_")[0], 0.0)
            out[name] = KpiValue(label, name, value, None, denominator)
            continue
        assert numerator is not None
        out[name] = KpiValue(label, name, definition.scale * numerator / denominator, numerator, denominator)
    return [out[definition.name] for definition in KPIS]
