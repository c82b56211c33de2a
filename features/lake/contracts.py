"""The input contracts of DESIGN.md: the six tables a business exports, their columns,
their vocabularies, and the machine-readable reasons a row can be quarantined for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["string", "timestamp", "date", "decimal", "integer", "number", "boolean"]

ORDER_STATUSES = ("completed", "returned", "cancelled")
SURVEY_TYPES = ("nps", "csat")
SURVEY_SCORE_RANGE = {"nps": (0, 10), "csat": (1, 5)}
EVENT_TYPES = (
    "session_start",
    "page_view",
    "bounce",
    "add_to_cart",
    "checkout_start",
    "email_sent",
    "email_open",
    "email_click",
    "email_unsubscribe",
    "email_spam_report",
    "sms_sent",
    "sms_delivered",
    "sms_failed",
    "app_open",
    "social_share",
    "referral",
    "review",
)

# Every reason a row can land in quarantine for; the quarantine `reason` column holds these codes.
QUARANTINE_REASONS = {
    "missing_value": "a required value is empty",
    "unparseable_timestamp": "a timestamp that no supported format reads",
    "implausible_timestamp": "a readable timestamp before ingest.earliest or after now + ingest.future_tolerance",
    "unparseable_date": "a date that no supported format reads",
    "implausible_date": "a readable date before ingest.earliest or after now + ingest.future_tolerance",
    "unparseable_number": "a number or amount that does not parse (NaN and infinity included)",
    "amount_out_of_range": "an amount of 10^15 or more: no real order or spend",
    "unparseable_boolean": "a yes/no value that is not true/false/1/0/yes/no",
    "negative_amount": "a money amount or count below zero (only a refund, status returned, may be negative)",
    "unknown_status": f"an order status outside {ORDER_STATUSES}",
    "unknown_event_type": "an event_type outside the vocabulary of DESIGN.md",
    "unknown_survey_type": f"a survey_type outside {SURVEY_TYPES}",
    "score_out_of_range": "an NPS score outside 0-10 or a CSAT score outside 1-5",
    "first_response_before_opened": "a ticket's first response stamped before it was opened",
    "resolved_before_opened": "a ticket resolved before it was opened",
    "duplicate_id_conflict": (
        "the same id appears again with different values (the first copy is kept, later ones held back)"
    ),
    "currency_mismatch": "an order in another currency than business.currency, and no ingest.exchange_rates",
    "no_exchange_rate": "an order in another currency that ingest.exchange_rates has no rate for, on or before its day",
    "unknown_customer": "the (source, source_customer_id) is not in the customers table",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    required: bool = False
    # a time of the business's own activity: outside ingest.earliest .. now + future_tolerance it is
    # implausible (a birth date is not one)
    activity_time: bool = True


@dataclass(frozen=True)
class TableContract:
    """One input table: its columns and the column that identifies a row, if any."""

    name: str
    columns: tuple[Column, ...]
    row_id: str | None  # duplicates of this id are removed (identical) or quarantined (conflicting)
    required_input: bool = False  # orders must exist; the rest may be absent (customers are then derived)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def kind_of(self, name: str) -> ColumnKind:
        return self.column(name).kind


def _req(name: str, kind: ColumnKind) -> Column:
    return Column(name, kind, required=True)


CONTRACTS: dict[str, TableContract] = {
    contract.name: contract
    for contract in (
        TableContract(
            "customers",
            (
                _req("source", "string"),
                _req("source_customer_id", "string"),
                _req("signup_at", "timestamp"),
                Column("email", "string"),
                Column("phone", "string"),
                Column("full_name", "string"),
                Column("birth_date", "date", activity_time=False),
                Column("gender", "string"),
                Column("city", "string"),
                Column("acquisition_channel", "string"),
                Column("marketing_opt_in", "boolean"),
            ),
            row_id=None,  # keyed by (source, source_customer_id); derived from orders when not exported
        ),
        TableContract(
            "orders",
            (
                _req("order_id", "string"),
                _req("source", "string"),
                _req("source_customer_id", "string"),
                _req("ordered_at", "timestamp"),
                _req("status", "string"),
                _req("net_amount", "decimal"),
                Column("channel", "string"),
                Column("gross_amount", "decimal"),
                Column("discount_amount", "decimal"),
                Column("items", "integer"),
                Column("category", "string"),
                Column("currency", "string"),
                Column("original_order_id", "string"),  # the order a refund (credit note) gives money back for
            ),
            row_id="order_id",
            required_input=True,
        ),
        TableContract(
            "engagement_events",
            (
                _req("event_id", "string"),
                _req("source", "string"),
                _req("source_customer_id", "string"),
                _req("occurred_at", "timestamp"),
                _req("event_type", "string"),
                Column("channel", "string"),
                Column("campaign_id", "string"),
                Column("session_id", "string"),
                Column("duration_s", "number"),
                Column("page_views", "integer"),
            ),
            row_id="event_id",
        ),
        TableContract(
            "surveys",
            (
                _req("response_id", "string"),
                _req("source_customer_id", "string"),
                _req("responded_at", "timestamp"),
                _req("survey_type", "string"),
                _req("score", "integer"),
                Column("source", "string"),
                Column("channel", "string"),
                Column("comment", "string"),
            ),
            row_id="response_id",
        ),
        TableContract(
            "tickets",
            (
                _req("ticket_id", "string"),
                _req("source_customer_id", "string"),
                _req("opened_at", "timestamp"),
                Column("source", "string"),
                Column("first_response_at", "timestamp"),
                Column("resolved_at", "timestamp"),
                Column("channel", "string"),
                Column("category", "string"),
                Column("status", "string"),
            ),
            row_id="ticket_id",
        ),
        TableContract(
            "marketing_spend",
            (
                _req("date", "date"),
                _req("channel", "string"),
                _req("spend", "decimal"),
                Column("campaign_id", "string"),
                Column("impressions", "integer"),
                Column("clicks", "integer"),
                Column("new_customers", "integer"),
            ),
            row_id=None,
        ),
    )
}

TABLES = tuple(CONTRACTS)
