"""What each KPI is (its parts, unit and why it may have no value), and the answer: one KpiValue per
KPI and group in a KpiTable, shown as a rich table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from features.lake.money import format_money, round_money

ALL = "all"  # the one group of an ungrouped question
NONE_LABEL = "(none)"  # a row without a channel or city is grouped under this label
UNSCORED = "(not scored)"  # the segment of a customer the latest batch run did not score
GUESTS = "(guests)"  # the orders without a customer, where KPIs group by a customer's city or segment
# the KPIs that count guest orders; every other KPI is about customers (or their sessions, tickets,
# answers), so the guests line has none of them
GUEST_KPIS = ("revenue", "orders", "aov", "return_rate")
GUEST_MISSING = "guest orders have no customer: only orders, net revenue, AOV and return rate count them"
# the parts that are amounts of money: rounded to the currency's minor units wherever they are shown
MONEY_PARTS = frozenset({"revenue", "marketing_spend", "clv_revenue", "predicted_clv_total", "predicted_clv_total_p10",
                         "predicted_clv_total_p90", "historic_clv", "cac"})  # fmt: skip


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI: its value is scale * numerator / denominator of the summed parts (docs/kpis.md)."""

    name: str
    label: str
    unit: Literal["count", "money", "share", "score", "hours", "ratio"]
    table: str  # the lake table it needs
    numerator: str | None = None
    denominator: str | None = None
    scale: float = 1.0
    empty: str = ""  # why there is no value when the denominator is 0


def _kpi(name: str, label: str, unit: str, table: str, numerator: str | None = None,
         denominator: str | None = None, scale: float = 1.0, empty: str = "") -> KpiDefinition:  # fmt: skip
    return KpiDefinition(name, label, unit, table, numerator, denominator, scale, empty)  # type: ignore[arg-type]


KPIS: tuple[KpiDefinition, ...] = (
    # experience
    _kpi("csat", "CSAT (share of 4-5)", "share", "surveys", "csat_satisfied", "csat_responses",
         empty="no CSAT responses in the period"),
    _kpi("nps", "NPS", "score", "surveys", "nps_net", "nps_responses", 100.0, "no NPS responses in the period"),
    _kpi("nps_responses", "NPS responses", "count", "surveys", "nps_responses"),
    _kpi("frt_mean_hours", "first response, mean (h)", "hours", "tickets", "frt_sum", "frt_count",
         empty="no ticket opened in the period got a first response"),
    _kpi("frt_median_hours", "first response, median (h)", "hours", "tickets", None, "frt_count",
         empty="no ticket opened in the period got a first response"),
    _kpi("ttr_mean_hours", "time to resolution, mean (h)", "hours", "tickets", "ttr_sum", "ttr_count",
         empty="no ticket was resolved in the period"),
    _kpi("ttr_median_hours", "time to resolution, median (h)", "hours", "tickets", None, "ttr_count",
         empty="no ticket was resolved in the period"),
    _kpi("tickets", "tickets opened", "count", "tickets", "tickets"),
    _kpi("tickets_per_100_active", "tickets per 100 active customers", "ratio", "tickets", "tickets",
         "active_customers", 100.0, "no active customers in the period"),
    # engagement and acquisition
    _kpi("sessions", "sessions", "count", "engagement_events", "sessions"),
    _kpi("bounce_rate", "bounce rate", "share", "engagement_events", "bounced_sessions", "sessions",
         empty="no sessions in the period"),
    _kpi("conversion_rate", "conversion rate", "share", "engagement_events", "converted_sessions", "sessions",
         empty="no sessions in the period"),
    _kpi("cart_abandonment_rate", "cart abandonment rate", "share", "engagement_events", "abandoned_carts",
         "carted_sessions", empty="no session added to a cart in the period"),
    _kpi("email_open_rate", "email open rate", "share", "engagement_events", "emails_opened", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_ctr", "email click-through rate", "share", "engagement_events", "emails_clicked", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_unsubscribe_rate", "unsubscribe rate", "share", "engagement_events", "unsubscribes", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_spam_report_rate", "spam-report rate", "share", "engagement_events", "spam_reports", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("sms_delivery_rate", "SMS delivery rate", "share", "engagement_events", "sms_delivered", "sms_sent",
         empty="no SMS sent in the period"),
    _kpi("new_customers", "new customers", "count", "orders", "new_customers"),
    _kpi("returning_customers", "returning customers", "count", "orders", "returning_customers"),
    _kpi("new_customer_share", "new customer share", "share", "orders", "new_customers", "active_customers",
         empty="no active customers in the period"),
    _kpi("social_shares", "social shares", "count", "engagement_events", "social_shares"),
    _kpi("referrals", "referrals", "count", "engagement_events", "referrals"),
    # commercial and retention
    # net revenue: completed orders minus refunds (returned rows with a negative amount), guests included
    _kpi("revenue", "net revenue", "money", "orders", "revenue"),
    _kpi("orders", "orders", "count", "orders", "orders"),
    _kpi("aov", "average order value (net)", "money", "orders", "revenue", "orders",
         empty="no completed orders in the period"),
    _kpi("return_rate", "return rate", "share", "orders", "returned_orders", "purchased_orders",
         empty="no purchases in the period"),
    _kpi("repeat_purchase_rate", "repeat purchase rate", "share", "orders", "repeat_customers", "active_customers",
         empty="no active customers in the period"),
    _kpi("active_customers", "active customers", "count", "orders", "active_customers"),
    _kpi("churn_rate", "realized churn rate", "share", "orders", "churned_customers", "churn_base"),
    _kpi("retention_rate", "retention rate", "share", "orders", "churn_retained", "churn_base"),
    _kpi("marketing_spend", "marketing spend", "money", "marketing_spend", "marketing_spend"),
    _kpi("cac", "CAC", "money", "marketing_spend", "marketing_spend", "new_customers",
         empty="no new customers in the period"),
    _kpi("historic_clv", "historic CLV", "money", "orders", "clv_revenue", "clv_customers"),
    _kpi("ltv_to_cac", "LTV:CAC", "ratio", "marketing_spend", "historic_clv", "cac"),
    _kpi("predicted_clv", "predicted CLV (over the CLV model's window)", "money", "orders", "predicted_clv_total",
         "scored_customers", empty="no batch scores for these customers yet; run `custlens score`"),
    # the group's total and the P10-P90 range of that total (not the sum of the customers' P10s)
    _kpi("predicted_revenue", "predicted revenue (sum of predicted CLV)", "money", "orders", "predicted_clv_total"),
    _kpi("predicted_revenue_p10", "predicted revenue, P10", "money", "orders", "predicted_clv_total_p10"),
    _kpi("predicted_revenue_p90", "predicted revenue, P90", "money", "orders", "predicted_clv_total_p90"),
)  # fmt: skip
# The KPIs read from the latest batch scores: per customer group, never per period.
PREDICTED_KPIS = ("predicted_clv", "predicted_revenue", "predicted_revenue_p10", "predicted_revenue_p90")
KPI_NAMES = tuple(definition.name for definition in KPIS)
KPI_BY_NAME = {definition.name: definition for definition in KPIS}


@dataclass(frozen=True)
class KpiValue:
    """One KPI of one group: its value with what it was divided from, or why it has none."""

    group: str
    kpi: str
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    missing: str | None = None


@dataclass(frozen=True)
class KpiTable:
    """The KPIs of a period, one column per group (or `all`): its days are `timezone` days, its
    money is in `currency` (None: the lake's data named none)."""

    start: date
    end: date
    by: str | None
    groups: tuple[str, ...]
    values: tuple[KpiValue, ...]
    currency: str | None = None
    timezone: str = "UTC"

    def get(self, kpi: str, group: str = ALL) -> KpiValue:
        for value in self.values:
            if value.kpi == kpi and value.group == group:
                return value
        raise KeyError((kpi, group))

    def records(self) -> list[dict[str, object]]:
        """One dict per KPI and group, money rounded to the currency's minor units, each with its unit
        and (for money) its currency."""
        return [{"start": self.start.isoformat(), "end": self.end.isoformat(), **self._shown(value)}
                for value in self.values]  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(
            {"start": self.start.isoformat(), "end": self.end.isoformat(), "by": self.by, "groups": list(self.groups),
             "currency": self.currency, "timezone": self.timezone,
             "kpis": [self._shown(value) for value in self.values]},
            ensure_ascii=False, indent=2,
        )  # fmt: skip

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer,
            fieldnames=["start", "end", "group", "kpi", "value", "numerator", "denominator", "missing", "unit",
                        "currency"],
        )  # fmt: skip
        writer.writeheader()
        writer.writerows(self.records())
        return buffer.getvalue()

    def _shown(self, value: KpiValue) -> dict[str, object]:
        """A value as JSON and CSV show it: money rounded to the currency's minor units."""
        definition = KPI_BY_NAME[value.kpi]
        money = definition.unit == "money"

        def rounded(amount: float | None, is_money: bool) -> float | None:
            return round_money(amount, self.currency) if is_money else amount

        return {
            **asdict(value),
            "value": rounded(value.value, money),
            "numerator": rounded(value.numerator, definition.numerator in MONEY_PARTS),
            "denominator": rounded(value.denominator, definition.denominator in MONEY_PARTS),
            "unit": definition.unit,
            "currency": self.currency if money else None,
        }

    def render(self) -> RenderableType:
        title = f"KPIs {self.start.isoformat()} .. {self.end.isoformat()}" + (f" by {self.by}" if self.by else "")
        title += f" ({self.timezone} days" + (f", money in {self.currency})" if self.currency else ")")
        table = Table(title=title, title_justify="left")
        table.add_column("KPI")
        for group in self.groups:
            table.add_column(group, justify="right")
        cells = {(value.kpi, value.group): value for value in self.values}
        for definition in KPIS:
            table.add_row(
                definition.label,
                *(_shown(cells[(definition.name, group)], definition, self.currency) for group in self.groups),
            )
        reasons = sorted({value.missing for value in self.values if value.missing})
        notes = [Text.from_markup(f"[dim]— {reason}[/]") for reason in reasons[:12]]
        if len(reasons) > 12:
            notes.append(Text(f"... and {len(reasons) - 12} more reasons (see --format json)", style="dim"))
        return Group(table, *notes)


def _shown(value: KpiValue, definition: KpiDefinition, currency: str | None) -> str:
    if value.value is None:
        return "[dim]missing[/]"
    if definition.unit == "share":
        return f"{value.value:.1%}"
    if definition.unit == "count":
        return f"{value.value:,.0f}"
    if definition.unit == "money":
        return format_money(value.value, currency)
    if definition.unit == "score":
        return f"{value.value:+.1f} (n={value.denominator:,.0f})"
    return f"{value.value:,.2f}"
