"""The KPI engine on a tiny hand-made lake: each KPI against a hand-computed value, missing (never 0)
where a KPI has no data, the one set of rules for a question's period and grouping (as the CLI and
the service ask), and the cache seeing a rebuilt cube. The cube against a direct scan of a generated
lake is tests/integration/test_kpis.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from custlens.cli import app
from custlens.errors import CustlensError
from custlens.settings import Settings
from features.kpis import (
    GROUPINGS,
    HTTP_SPELLING,
    MAX_KPI_DAYS,
    CubeMeta,
    Grouping,
    KpiArgumentError,
    KpiCache,
    KpiTable,
    build_kpi_cube,
    build_segment_cubes,
    check_grouping,
    check_period,
    kpi_dir,
    kpi_period,
    kpis,
    kpis_direct,
    segment_dir,
)
from features.kpis.answer import Z_90
from features.kpis.arguments import EARLIEST_KPI_DAY, LATEST_KPI_DAY
from features.kpis.cube import VARIANCE_COLUMN
from features.lake.tables import Business, table_path, write_business

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)
TEXT = pa.string()
# the lake's columns and types, as features/ingest.py writes them (only what the KPIs read and the ids)
LAKE = {
    "customers": [("customer_id", TEXT), ("signup_at", TS), ("city", TEXT), ("acquisition_channel", TEXT)],
    "orders": [("customer_id", TEXT), ("order_id", TEXT), ("ordered_at", TS), ("status", TEXT),
               ("net_amount", MONEY), ("channel", TEXT)],
    "engagement_events": [("customer_id", TEXT), ("event_id", TEXT), ("occurred_at", TS), ("event_type", TEXT),
                          ("channel", TEXT), ("session_id", TEXT), ("duration_s", pa.float64())],
    "surveys": [("customer_id", TEXT), ("response_id", TEXT), ("responded_at", TS), ("survey_type", TEXT),
                ("score", pa.int64()), ("channel", TEXT)],
    "tickets": [("customer_id", TEXT), ("ticket_id", TEXT), ("opened_at", TS), ("first_response_at", TS),
                ("resolved_at", TS), ("channel", TEXT)],
    "marketing_spend": [("date", pa.date32()), ("channel", TEXT), ("spend", MONEY), ("new_customers", pa.int64())],
    # orders without a customer id: the orders contract's columns, no customer_id
    "guest_orders": [("order_id", TEXT), ("source", TEXT), ("source_customer_id", TEXT), ("ordered_at", TS),
                     ("status", TEXT), ("net_amount", MONEY), ("channel", TEXT)],
}  # fmt: skip
MARCH = (date(2024, 3, 1), date(2024, 3, 31))


def at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def tiny_lake() -> dict[str, list[tuple[Any, ...]]]:
    """Three customers; March 2024 is the period the hand-computed values are about."""
    return {
        "customers": [
            ("A", at("2023-12-01 00:00"), "Hà Nội", "organic"),
            ("B", at("2024-03-01 00:00"), "Hồ Chí Minh", "paid_search"),
            ("C", at("2024-05-01 00:00"), "Hà Nội", "paid_search"),
        ],
        "orders": [
            ("A", "O1", at("2024-01-10 10:00"), "completed", Decimal("100"), "web"),
            ("A", "O2", at("2024-03-05 10:00"), "completed", Decimal("300"), "web"),
            ("A", "O3", at("2024-03-20 10:00"), "returned", Decimal("50"), "web"),
            ("B", "O4", at("2024-03-10 09:05"), "completed", Decimal("200"), "app"),
            ("B", "O5", at("2024-03-12 20:00"), "completed", Decimal("100"), "app"),
            ("B", "O6", at("2024-03-15 10:00"), "cancelled", Decimal("80"), "app"),
            ("C", "O7", at("2024-06-01 10:00"), "completed", Decimal("400"), "pos"),
        ],
        "engagement_events": [
            # B: a session that ends in order O4, and one that leaves a cart behind
            ("B", "E01", at("2024-03-10 09:00"), "session_start", "web", "s1", 600.0),
            ("B", "E02", at("2024-03-10 09:02"), "add_to_cart", "web", "s1", None),
            ("B", "E03", at("2024-03-11 10:00"), "session_start", "app", "s2", 60.0),
            ("B", "E04", at("2024-03-11 10:00"), "add_to_cart", "app", "s2", None),
            # A: a bounce, and a session without a duration
            ("A", "E05", at("2024-03-12 08:00"), "session_start", "web", "s3", 10.0),
            ("A", "E06", at("2024-03-12 08:00"), "bounce", "web", "s3", None),
            ("A", "E07", at("2024-03-13 08:00"), "session_start", "web", "s4", None),
            *[("A", f"E1{k}", at("2024-03-01 08:00"), "email_sent", "email", None, None) for k in range(4)],
            ("A", "E20", at("2024-03-01 09:00"), "email_open", "email", None, None),
            ("A", "E21", at("2024-03-02 09:00"), "email_open", "email", None, None),
            ("A", "E22", at("2024-03-02 09:01"), "email_click", "email", None, None),
            ("A", "E23", at("2024-03-03 09:00"), "email_unsubscribe", "email", None, None),
            ("B", "E24", at("2024-03-04 09:00"), "sms_sent", "sms", None, None),
            ("B", "E25", at("2024-03-04 09:00"), "sms_sent", "sms", None, None),
            ("B", "E26", at("2024-03-04 09:01"), "sms_delivered", "sms", None, None),
            ("A", "E27", at("2024-03-06 09:00"), "social_share", "web", None, None),
            ("A", "E28", at("2024-03-06 09:00"), "referral", "web", None, None),
            ("B", "E29", at("2024-03-16 09:00"), "referral", "app", None, None),
        ],
        "surveys": [
            ("A", "R1", at("2024-03-05 12:00"), "csat", 5, "email"),
            ("A", "R2", at("2024-03-06 12:00"), "csat", 4, "email"),
            ("B", "R3", at("2024-03-07 12:00"), "csat", 2, "app"),
            ("A", "R4", at("2024-03-08 12:00"), "nps", 10, "email"),
            ("B", "R5", at("2024-03-08 12:00"), "nps", 9, "app"),
            ("B", "R6", at("2024-03-09 12:00"), "nps", 7, "app"),
            ("A", "R7", at("2024-03-09 12:00"), "nps", 3, "email"),
        ],
        "tickets": [
            ("A", "T1", at("2024-03-05 10:00"), at("2024-03-05 12:00"), at("2024-03-06 10:00"), "chat"),
            ("B", "T2", at("2024-03-07 10:00"), at("2024-03-07 11:00"), at("2024-03-07 14:00"), "phone"),
            ("B", "T3", at("2024-03-08 10:00"), None, None, "phone"),  # never answered
            ("A", "T4", at("2024-03-09 10:00"), at("2024-03-09 16:00"), None, "chat"),
        ],
        "marketing_spend": [
            (date(2024, 3, 1), "paid_search", Decimal("600"), 3),
            (date(2024, 3, 2), "organic", Decimal("100"), None),
        ],
    }


def write_lake(
    settings: Settings, tables: dict[str, list[tuple[Any, ...]]], business: Business | None = None
) -> Settings:
    """The tables as ingest writes them; with `business`, its record too and money in its minor units."""
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    money = MONEY
    if business is not None:
        write_business(settings.lake_dir, business)
        money = pa.decimal128(18, business.minor_units)
    for table, rows in tables.items():
        schema = pa.schema([(name, money if kind == MONEY else kind) for name, kind in LAKE[table]])
        arrays = [pa.array([row[number] for row in rows], type=field.type) for number, field in enumerate(schema)]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), table_path(settings, table))
    return settings


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    settings = write_lake(Settings(data_dir=tmp_path / "data"), tiny_lake())
    build_kpi_cube(settings)
    return settings


@pytest.fixture
def march(lake: Settings) -> KpiTable:
    return kpis(lake, *MARCH)


def value(table: KpiTable, kpi: str, group: str = "all") -> float | None:
    return table.get(kpi, group).value


# ---------------------------------------------------------------- each KPI, by hand


@pytest.mark.parametrize(
    ("kpi", "expected"),
    [
        ("csat", 2 / 3),  # 5 and 4 of 5, 4, 2
        ("nps", 25.0),  # (2 promoters - 1 detractor) / 4 responses
        ("nps_responses", 4),
        ("frt_mean_hours", 3.0),  # 2 h, 1 h, 6 h; the ticket never answered is left out
        ("frt_median_hours", 2.0),
        ("ttr_mean_hours", 14.0),  # 24 h and 4 h
        ("ttr_median_hours", 14.0),
        ("tickets", 4),
        ("tickets_per_100_active", 200.0),  # 4 tickets, 2 active customers
        ("sessions", 4),
        ("bounce_rate", 0.25),
        ("conversion_rate", 0.25),  # s1 ends in O4
        ("cart_abandonment_rate", 0.5),  # s2 carted and bought nothing
        ("email_open_rate", 0.5),
        ("email_ctr", 0.25),
        ("email_unsubscribe_rate", 0.25),
        ("email_spam_report_rate", 0.0),
        ("sms_delivery_rate", 0.5),
        ("new_customers", 1),  # B's first order
        ("returning_customers", 1),  # A
        ("new_customer_share", 0.5),
        ("social_shares", 1),
        ("referrals", 2),
        ("revenue", 600.0),  # O2 + O4 + O5; returned and cancelled orders are not revenue
        ("orders", 3),
        ("aov", 200.0),
        ("return_rate", 0.25),  # O3 of O2, O3, O4, O5
        ("repeat_purchase_rate", 0.5),  # B ordered twice
        ("active_customers", 2),
        ("churn_rate", 0.0),  # A bought in the year before March and again within 90 days
        ("retention_rate", 1.0),
        ("marketing_spend", 700.0),
        ("cac", 700.0),  # 700 / 1 new customer
        ("historic_clv", 350.0),  # 700 of completed revenue by 31 March over A and B
        ("ltv_to_cac", 0.5),
    ],
)
def test_each_kpi_matches_the_hand_computed_value(march: KpiTable, kpi: str, expected: float) -> None:
    assert value(march, kpi) == pytest.approx(expected)
    assert march.get(kpi).missing is None


def test_nps_reports_its_response_count(march: KpiTable) -> None:
    nps = march.get("nps")
    assert (nps.numerator, nps.denominator) == (1, 4)


def test_a_month_grouping_splits_the_period_and_keeps_empty_months(lake: Settings) -> None:
    table = kpis(lake, date(2024, 1, 5), date(2024, 3, 31), by="month")
    assert table.groups == ("2024-01", "2024-02", "2024-03")
    assert [value(table, "orders", month) for month in table.groups] == [1, 0, 3]
    assert table.get("aov", "2024-02").missing == "no completed orders in the period"


def test_customers_group_by_acquisition_channel(lake: Settings) -> None:
    table = kpis(lake, *MARCH, by="channel")
    assert value(table, "active_customers", "paid_search") == 1
    assert value(table, "cac", "paid_search") == pytest.approx(600.0)
    assert value(table, "orders", "app") == 2


# ---------------------------------------------------------------- missing, never 0


def test_a_period_without_sessions_reports_rates_missing_not_zero(lake: Settings) -> None:
    table = kpis(lake, date(2024, 2, 1), date(2024, 2, 29))
    assert value(table, "sessions") == 0
    assert table.get("bounce_rate").value is None
    assert table.get("bounce_rate").missing == "no sessions in the period"
    assert table.get("conversion_rate").missing == "no sessions in the period"


def test_a_period_without_responses_reports_csat_and_nps_missing(lake: Settings) -> None:
    table = kpis(lake, date(2024, 2, 1), date(2024, 2, 29))
    assert table.get("csat").missing == "no CSAT responses in the period"
    assert table.get("nps").missing == "no NPS responses in the period"
    assert value(table, "nps_responses") == 0


def test_tickets_never_answered_are_left_out_of_response_times(lake: Settings) -> None:
    table = kpis(lake, date(2024, 3, 8), date(2024, 3, 8))  # only T3, never answered
    assert value(table, "tickets") == 1
    assert table.get("frt_median_hours").missing == "no ticket opened in the period got a first response"
    assert table.get("ttr_mean_hours").missing == "no ticket was resolved in the period"


def test_a_lake_without_a_surveys_export_says_so(tmp_path: Path) -> None:
    tables = tiny_lake()
    del tables["surveys"]
    settings = write_lake(Settings(data_dir=tmp_path / "data"), tables)
    build_kpi_cube(settings)
    table = kpis(settings, *MARCH)
    assert table.get("csat").missing == "no surveys export in the lake"
    assert table.get("nps_responses").missing == "no surveys export in the lake"
    assert value(table, "orders") == 3


def test_churn_is_missing_while_its_window_is_still_open(lake: Settings) -> None:
    table = kpis(lake, date(2024, 5, 1), date(2024, 5, 31))  # 90 days from 1 May end after 1 June
    assert table.get("churn_rate").value is None
    assert "churn window from 2024-05-01" in str(table.get("churn_rate").missing)


# ---------------------------------------------------------------- bad arguments and output


def test_start_after_end_is_a_clear_error(lake: Settings) -> None:
    with pytest.raises(CustlensError, match="--from must not be after --to"):
        kpis(lake, date(2024, 3, 2), date(2024, 3, 1))


def test_an_unknown_grouping_is_a_clear_error(lake: Settings) -> None:
    with pytest.raises(CustlensError, match="unknown grouping 'product'"):
        kpis(lake, *MARCH, by="product")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the rules of a question (one place)


def test_every_grouping_is_accepted_and_none_means_ungrouped() -> None:
    for by in (*GROUPINGS, None):
        assert check_grouping(by) == by


def test_an_unknown_grouping_names_the_groupings_and_the_field() -> None:
    with pytest.raises(
        KpiArgumentError, match="group KPIs by one of month, week, channel, city, segment, behaviour"
    ) as error:
        check_grouping("planet")
    assert error.value.field == "by"


def test_a_backwards_period_is_refused_in_the_askers_words() -> None:
    with pytest.raises(KpiArgumentError, match="after its end 2024-03-01; --from must not be after --to") as error:
        check_period(date(2024, 3, 2), date(2024, 3, 1))
    assert error.value.field == "from"
    with pytest.raises(KpiArgumentError, match="`from` must not be after `to`"):
        check_period(date(2024, 3, 2), date(2024, 3, 1), HTTP_SPELLING)


def test_a_period_longer_than_the_limit_is_refused_only_where_a_limit_is_asked() -> None:
    start = date(2020, 1, 1)
    check_period(start, start + timedelta(days=MAX_KPI_DAYS - 1), max_days=MAX_KPI_DAYS)  # 3,660 days: allowed
    with pytest.raises(KpiArgumentError, match="spans 3,661 days; ask for at most 3,660 per request") as error:
        check_period(start, start + timedelta(days=MAX_KPI_DAYS), max_days=MAX_KPI_DAYS)
    assert error.value.field == "to"
    check_period(start, start + timedelta(days=10 * MAX_KPI_DAYS))  # the CLI asks for no limit


@pytest.mark.parametrize("by", [None, "month", "week", "channel"])
def test_a_period_at_the_calendars_ends_is_answered_or_refused_never_an_overflow(
    lake: Settings, by: Grouping | None
) -> None:
    # given the first and last days KPIs are computed for, then a month at each end is answered
    # by every grouping (the engine looks a churn window and a week or month past a period)
    late, early = kpis(lake, date(9899, 12, 1), LATEST_KPI_DAY, by), kpis(lake, EARLIEST_KPI_DAY, date(100, 1, 31), by)
    assert late.end == LATEST_KPI_DAY and early.start == EARLIEST_KPI_DAY
    # and a period past either end is refused with the field and a message, where the last week of
    # 9999 overflowed Python's calendar into a 500 and a traceback
    with pytest.raises(KpiArgumentError, match="--to 9999-12-31 is after 9899-12-31, the last day") as late_error:
        kpis(lake, date(9999, 12, 27), date(9999, 12, 31), by)
    with pytest.raises(KpiArgumentError, match="--from 0001-01-01 is before 0100-01-01, the first day") as early_error:
        kpis_direct(lake, date(1, 1, 1), date(1, 1, 31), by)
    assert (late_error.value.field, early_error.value.field) == ("to", "from")


def test_one_day_of_the_period_without_the_other_is_refused(lake: Settings) -> None:
    with pytest.raises(KpiArgumentError, match="give both --from and --to, or neither") as error:
        kpi_period(lake, date(2024, 3, 1), None)
    assert error.value.field == "from"
    with pytest.raises(KpiArgumentError, match="give both `from` and `to`, or neither"):
        kpi_period(lake, None, date(2024, 3, 1), HTTP_SPELLING)


def test_no_period_means_the_last_full_month_of_the_orders(lake: Settings) -> None:
    # the tiny lake's last order is on 1 June 2024: June is not complete yet, May is
    assert kpi_period(lake, None, None) == (date(2024, 5, 1), date(2024, 5, 31))
    assert kpi_period(lake, *MARCH) == MARCH


def test_orders_up_to_a_month_end_make_that_month_the_default(tmp_path: Path) -> None:
    tables = tiny_lake()
    tables["orders"][-1] = ("C", "O7", at("2024-06-30 23:59"), "completed", Decimal("400"), "pos")
    settings = write_lake(Settings(data_dir=tmp_path / "data"), tables)
    assert kpi_period(settings, None, None) == (date(2024, 6, 1), date(2024, 6, 30))


def test_the_cli_asks_the_same_rules(lake: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTLENS_DATA_DIR", raising=False)
    config = tmp_path / "lake.yaml"
    config.write_text(f"data_dir: {json.dumps(str(lake.data_dir))}\n", encoding="utf-8")
    runner = CliRunner()
    answer = runner.invoke(app, ["kpis", "--config", str(config), "--format", "json"])
    assert answer.exit_code == 0, answer.output
    assert (json.loads(answer.output)["start"], json.loads(answer.output)["end"]) == ("2024-05-01", "2024-05-31")
    for arguments, words in [
        (["--from", "2024-03-01"], "give both --from and --to"),
        (["--from", "2024-03-02", "--to", "2024-03-01"], "--from must not be after --to"),
        (["--by", "planet"], "unknown grouping 'planet'"),
        (["--from", "9999-12-30", "--to", "9999-12-31"], "--to 9999-12-31 is after 9899-12-31"),
    ]:
        refused = runner.invoke(app, ["kpis", "--config", str(config), *arguments])
        assert refused.exit_code == 2 and words in " ".join(refused.output.split()), refused.output  # unwrapped


# ---------------------------------------------------------------- the cache its caller owns


def test_a_cache_loads_each_cube_once(lake: Settings) -> None:
    meta = CubeMeta.read(kpi_dir(lake) / "meta.json")
    with KpiCache() as cache:
        assert kpis(lake, *MARCH, cache=cache) == kpis(lake, *MARCH)
        assert cache.cube(kpi_dir(lake), meta) is cache.cube(kpi_dir(lake), meta)
        assert cache.cubes_loaded() == 1


def test_a_rebuilt_cube_replaces_the_stale_one_in_the_cache(lake: Settings) -> None:
    with KpiCache() as cache:
        # given a cache that answered March
        assert value(kpis(lake, *MARCH, cache=cache), "orders") == 3
        stale = cache.cube(kpi_dir(lake), CubeMeta.read(kpi_dir(lake) / "meta.json"))
        # when a new ingest brings one more March order
        tables = tiny_lake()
        tables["orders"].append(("C", "O8", at("2024-03-25 10:00"), "completed", Decimal("50"), "pos"))
        write_lake(lake, tables)
        # then the old cube is refused, never answered from memory
        with pytest.raises(CustlensError, match="older lake"):
            kpis(lake, *MARCH, cache=cache)
        # and once the cube is rebuilt the cache answers from the new one and lets the old one go
        build_kpi_cube(lake)
        assert value(kpis(lake, *MARCH, cache=cache), "orders") == 4
        assert cache.cubes_loaded() == 1
        with pytest.raises(duckdb.ConnectionException):
            stale.con.execute("SELECT 1")


def test_new_scores_replace_the_predicted_values_in_the_cache(lake: Settings) -> None:
    with KpiCache() as cache:
        build_segment_cubes(lake, scores_of([("A", "Champions", "Loyal", 1000.0)]), date(2024, 4, 1))
        assert value(kpis(lake, *MARCH, cache=cache), "predicted_clv") == 1000.0
        assert value(kpis(lake, *MARCH, by="segment", cache=cache), "revenue", "Champions") == 300.0
        scores = scores_of([("A", "At risk", "Loyal", 400.0), ("B", "At risk", "Deal", 200.0)])
        build_segment_cubes(lake, scores, date(2024, 4, 2))
        assert value(kpis(lake, *MARCH, cache=cache), "predicted_clv") == 300.0
        assert value(kpis(lake, *MARCH, by="segment", cache=cache), "revenue", "At risk") == 600.0


# ---------------------------------------------------------------- by segment, predicted value


def scores_of(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "rfm_segment", "behavioural_segment", "predicted_clv"])


def test_grouping_by_segment_before_any_scoring_says_to_score(lake: Settings) -> None:
    with pytest.raises(CustlensError, match="run `custlens score` first"):
        kpis(lake, *MARCH, by="segment")
    assert kpis(lake, *MARCH).get("predicted_clv").missing == (
        "no batch scores for these customers yet; run `custlens score`"
    )


def test_kpis_by_segment_group_customers_by_their_latest_segment(lake: Settings) -> None:
    # A is a champion, B at risk; C was not scored (and does nothing in March)
    build_segment_cubes(lake, scores_of([("A", "Champions", "Loyal", 1000.0), ("B", "At risk", "Deal", 500.0)]),
                        date(2024, 4, 1))  # fmt: skip
    table = kpis(lake, *MARCH, by="segment")
    assert table.by == "segment"
    assert set(table.groups) >= {"Champions", "At risk"}
    assert table.get("revenue", "Champions").value == 300.0  # A's O2
    assert table.get("revenue", "At risk").value == 300.0  # B's O4 + O5
    assert table.get("csat", "At risk").value == 0.0  # B's one CSAT answer is a 2
    assert table.get("predicted_clv", "Champions").value == 1000.0
    assert table.get("cac", "Champions").missing == "marketing spend is not split by segment"
    behaviour = kpis(lake, *MARCH, by="behaviour")
    assert behaviour.get("orders", "Deal").value == 2.0
    assert kpis(lake, *MARCH).get("predicted_clv").value == 750.0  # (1000 + 500) / 2 scored customers
    assert kpis(lake, *MARCH, by="month").get("predicted_clv", "2024-03").missing == (
        "a prediction from the latest scores is not split by month"
    )
    for by in ("segment", "behaviour", None):
        assert kpis(lake, *MARCH, by=by) == kpis_direct(lake, *MARCH, by=by)


def test_scores_kept_from_before_the_rename_still_give_the_predicted_value(lake: Settings) -> None:
    # given the latest scores as a `custlens score` wrote them before the outputs lost their window
    build_segment_cubes(lake, scores_of([("A", "Champions", "Loyal", 1000.0), ("B", "At risk", "Deal", 500.0)]),
                        date(2024, 4, 1))  # fmt: skip
    assignments = segment_dir(lake) / "assignments.parquet"
    older = pd.read_parquet(assignments).rename(columns={"predicted_clv": "predicted_clv_12m"})
    older.to_parquet(assignments, index=False)
    # then the predicted value is read from the older column
    assert kpis(lake, *MARCH).get("predicted_clv").value == 750.0
    assert kpis(lake, *MARCH, by="segment").get("predicted_clv", "Champions").value == 1000.0


def test_asking_before_the_cube_exists_says_how_to_build_it(tmp_path: Path) -> None:
    settings = write_lake(Settings(data_dir=tmp_path / "data"), tiny_lake())
    with pytest.raises(CustlensError, match="no KPI cube"):
        kpis(settings, *MARCH)


def test_the_table_renders_as_json_and_csv(march: KpiTable) -> None:
    loaded = json.loads(march.to_json())
    assert loaded["groups"] == ["all"] and len(loaded["kpis"]) == len(march.values)
    lines = march.to_csv().splitlines()
    assert lines[0] == "start,end,group,kpi,value,numerator,denominator,missing,unit,currency"
    assert len(lines) == 1 + len(march.values)
    assert march.render() is not None


# ---------------------------------------------------------------- the business's local calendar

NEW_YORK, HO_CHI_MINH = "America/New_York", "Asia/Ho_Chi_Minh"


def local(text: str, zone: str, fold: int = 0) -> datetime:
    """A wall-clock time in `zone` as the UTC instant the lake stores (`fold=1`: the second of a
    time that happens twice when the clocks go back)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def shop(tmp_path: Path, orders: list[tuple[Any, ...]], business: Business, **more: list[tuple[Any, ...]]) -> Settings:
    """A lake of one or two customers (A in Hà Nội, D in Huế), these orders and `more` tables, with
    its cube built."""
    tables = {
        "customers": [("A", at("2023-01-01 00:00"), "Hà Nội", "organic"),
                      ("D", at("2023-01-01 00:00"), "Huế", "paid_search")],
        "orders": orders,
        **more,
    }  # fmt: skip
    settings = write_lake(Settings(data_dir=tmp_path / "data"), tables, business)
    build_kpi_cube(settings)
    return settings


def completed(order_id: str, ordered_at: datetime, customer: str = "A", amount: str = "10") -> tuple[Any, ...]:
    return (customer, order_id, ordered_at, "completed", Decimal(amount), "web")


def answered(settings: Settings, start: date, end: date, by: Grouping | None = None) -> KpiTable:
    """The cube's answer, checked against the direct scan of the lake."""
    cube, direct = kpis(settings, start, end, by), kpis_direct(settings, start, end, by)
    assert (cube.groups, cube.currency, cube.timezone) == (direct.groups, direct.currency, direct.timezone)
    for fast, slow in zip(cube.values, direct.values, strict=True):
        assert (fast.group, fast.kpi, fast.missing) == (slow.group, slow.kpi, slow.missing)
        assert fast.value == (None if slow.value is None else pytest.approx(slow.value)), (fast, slow)
    return cube


def orders_per_day(settings: Settings, days: list[date]) -> list[float | None]:
    return [value(answered(settings, day, day), "orders") for day in days]


MARCH_5_6 = [date(2024, 3, 5), date(2024, 3, 6)]


@pytest.mark.parametrize(("zone", "utc_counts"), [(NEW_YORK, [0, 2]), (HO_CHI_MINH, [2, 0])])
def test_orders_either_side_of_local_midnight_land_on_their_local_days(
    tmp_path: Path, zone: str, utc_counts: list[int]
) -> None:
    # given an order at 23:30 and one at 00:30 the next day, the business's wall-clock times
    orders = [completed("O1", local("2024-03-05 23:30", zone)), completed("O2", local("2024-03-06 00:30", zone))]
    # when the lake's business is in that zone, each is on its own local day
    assert orders_per_day(shop(tmp_path / "local", orders, Business(zone)), MARCH_5_6) == [1, 1]
    # and a UTC business counts the same instants on one UTC day
    assert orders_per_day(shop(tmp_path / "utc", orders, Business("UTC")), MARCH_5_6) == utc_counts


def test_the_spring_forward_day_counts_its_orders_on_local_days(tmp_path: Path) -> None:
    # 2024-03-10 in New York has 23 hours: 02:00 EST jumps to 03:00 EDT
    times = ["2024-03-09 23:30", "2024-03-10 00:30", "2024-03-10 03:30", "2024-03-10 23:30", "2024-03-11 00:30"]
    orders = [completed(f"O{number}", local(text, NEW_YORK)) for number, text in enumerate(times)]
    days = [date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 11)]
    assert orders_per_day(shop(tmp_path / "local", orders, Business(NEW_YORK)), days) == [1, 3, 1]
    assert orders_per_day(shop(tmp_path / "utc", orders, Business("UTC")), days) == [0, 3, 2]


def test_the_fall_back_day_counts_both_of_its_repeated_hours(tmp_path: Path) -> None:
    # 2024-11-03 in New York has 25 hours: 01:30 happens in EDT and again in EST
    orders = [
        completed("O1", local("2024-11-02 23:30", NEW_YORK)),
        completed("O2", local("2024-11-03 00:30", NEW_YORK)),
        completed("O3", local("2024-11-03 01:30", NEW_YORK, fold=0)),
        completed("O4", local("2024-11-03 01:30", NEW_YORK, fold=1)),
        completed("O5", local("2024-11-03 23:30", NEW_YORK)),
    ]
    assert orders[2][2] != orders[3][2]  # two instants an hour apart
    days = [date(2024, 11, 2), date(2024, 11, 3), date(2024, 11, 4)]
    assert orders_per_day(shop(tmp_path / "local", orders, Business(NEW_YORK)), days) == [1, 4, 0]
    assert orders_per_day(shop(tmp_path / "utc", orders, Business("UTC")), days) == [0, 4, 1]


def test_months_and_weeks_are_local_too(tmp_path: Path) -> None:
    # Sunday 31 March 23:30 in New York is Monday 1 April 03:30 UTC
    orders = [completed("O1", local("2024-03-31 23:30", NEW_YORK))]
    settings = shop(tmp_path, orders, Business(NEW_YORK))
    by_month = answered(settings, date(2024, 3, 1), date(2024, 4, 30), "month")
    assert [value(by_month, "orders", month) for month in by_month.groups] == [1, 0]
    by_week = answered(settings, date(2024, 3, 25), date(2024, 4, 7), "week")
    assert [value(by_week, "orders", week) for week in by_week.groups] == [1, 0]
    assert by_week.groups == ("2024-03-25", "2024-04-01")


def test_the_default_period_ends_on_the_last_local_order_day(tmp_path: Path) -> None:
    # the last order is on Saturday 29 June in New York, already 30 June in UTC
    orders = [
        completed("O1", local("2024-05-10 12:00", NEW_YORK)),
        completed("O2", local("2024-06-29 21:00", NEW_YORK)),
    ]
    assert kpi_period(shop(tmp_path / "local", orders, Business(NEW_YORK)), None, None) == (
        date(2024, 5, 1), date(2024, 5, 31)
    )  # fmt: skip
    assert kpi_period(shop(tmp_path / "utc", orders, Business("UTC")), None, None) == (
        date(2024, 6, 1), date(2024, 6, 30)
    )  # fmt: skip


def test_a_cube_of_another_calendar_is_refused(tmp_path: Path) -> None:
    settings = shop(tmp_path, [completed("O1", at("2024-03-05 10:00"))], Business("UTC", "USD"))
    write_business(settings.lake_dir, Business(NEW_YORK, "USD"))  # the lake is now a New York shop's
    with pytest.raises(CustlensError, match=r"counts UTC days in USD, but the lake .* is America/New_York, USD"):
        kpis(settings, *MARCH)
    build_kpi_cube(settings)
    assert kpis(settings, *MARCH).timezone == NEW_YORK


# ---------------------------------------------------------------- net revenue: refunds netted


def refunded_shop(tmp_path: Path, **more: list[tuple[Any, ...]]) -> Settings:
    """A pays 37.42 and 20.00 and sends back a 20.00 order whole; D pays 100.00 and gets a credit
    note of -100.00: March's net revenue is 57.42, D's is 0."""
    orders = [
        completed("O1", at("2024-03-05 10:00"), "A", "37.42"),
        completed("O2", at("2024-03-06 10:00"), "A", "20.00"),
        ("A", "O3", at("2024-03-07 10:00"), "returned", Decimal("20.00"), "web"),  # sent back whole: 0
        completed("O4", at("2024-03-05 11:00"), "D", "100.00"),
        ("D", "O5", at("2024-03-08 10:00"), "returned", Decimal("-100.00"), "app"),  # the credit note
    ]
    return shop(tmp_path, orders, Business("UTC", "USD", 2), **more)


def test_revenue_and_aov_are_net_of_refunds(tmp_path: Path) -> None:
    table = answered(refunded_shop(tmp_path), *MARCH)
    assert value(table, "revenue") == pytest.approx(57.42)
    assert value(table, "orders") == 3  # a credit note is not an order
    assert value(table, "aov") == pytest.approx(57.42 / 3)
    assert value(table, "return_rate") == pytest.approx(2 / 5)  # returned rows count as before


def test_a_fully_refunded_customer_has_no_net_revenue(tmp_path: Path) -> None:
    table = answered(refunded_shop(tmp_path), *MARCH, by="city")
    assert value(table, "revenue", "Huế") == 0.0
    assert value(table, "historic_clv", "Huế") == 0.0  # 0 net over the one customer who bought
    assert value(table, "revenue", "Hà Nội") == pytest.approx(57.42)
    assert value(table, "historic_clv", "Hà Nội") == pytest.approx(57.42)


def test_a_refund_counts_on_its_own_day(tmp_path: Path) -> None:
    settings = refunded_shop(tmp_path)
    assert value(answered(settings, date(2024, 3, 5), date(2024, 3, 7)), "revenue") == pytest.approx(157.42)
    assert value(answered(settings, date(2024, 3, 8), date(2024, 3, 8)), "revenue") == pytest.approx(-100.0)
    historic = [value(answered(settings, day, day), "historic_clv") for day in (date(2024, 3, 7), date(2024, 3, 8))]
    assert historic == [pytest.approx(157.42 / 2), pytest.approx(57.42 / 2)]


# ---------------------------------------------------------------- guest orders

GUEST_ORDERS = [
    (f"G{number}", "pos", None, ordered_at, status, Decimal(amount), channel)
    for number, (ordered_at, status, amount, channel) in enumerate([
        (at("2024-03-05 12:00"), "completed", "50.00", "web"),
        (at("2024-03-06 12:00"), "completed", "30.00", "pos"),
        (at("2024-03-07 12:00"), "returned", "-10.00", "pos"),  # a refund of part of G1
        (at("2024-03-07 13:00"), "cancelled", "99.00", "pos"),
    ])
]  # fmt: skip


def test_guest_orders_count_in_orders_revenue_and_aov(tmp_path: Path) -> None:
    table = answered(refunded_shop(tmp_path, guest_orders=GUEST_ORDERS), *MARCH)
    assert value(table, "orders") == 3 + 2
    assert value(table, "revenue") == pytest.approx(57.42 + 70.0)
    assert value(table, "aov") == pytest.approx((57.42 + 70.0) / 5)
    assert value(table, "return_rate") == pytest.approx((2 + 1) / (5 + 3))


def test_guest_orders_are_never_customers(tmp_path: Path) -> None:
    without = answered(refunded_shop(tmp_path / "without"), *MARCH)
    table = answered(refunded_shop(tmp_path / "with", guest_orders=GUEST_ORDERS), *MARCH)
    for kpi in ("active_customers", "new_customers", "repeat_purchase_rate", "historic_clv", "churn_rate"):
        assert table.get(kpi) == without.get(kpi), kpi


def test_grouped_by_city_guests_are_a_line_of_their_own(tmp_path: Path) -> None:
    table = answered(refunded_shop(tmp_path, guest_orders=GUEST_ORDERS), *MARCH, by="city")
    assert set(table.groups) == {"(guests)", "Hà Nội", "Huế"}
    assert (value(table, "orders", "(guests)"), value(table, "revenue", "(guests)")) == (2, pytest.approx(70.0))
    assert value(table, "aov", "(guests)") == pytest.approx(35.0)
    assert table.get("active_customers", "(guests)").missing == (
        "guest orders have no customer: only orders, net revenue, AOV and return rate count them"
    )
    assert value(table, "orders", "Hà Nội") == 2  # the customers' lines are as without guests


def test_grouped_by_channel_or_day_guests_fall_in_their_channel_and_day(tmp_path: Path) -> None:
    settings = refunded_shop(tmp_path, guest_orders=GUEST_ORDERS)
    by_channel = answered(settings, *MARCH, by="channel")
    assert "(guests)" not in by_channel.groups
    assert value(by_channel, "orders", "pos") == 1 and value(by_channel, "revenue", "pos") == pytest.approx(20.0)
    assert value(answered(settings, date(2024, 3, 6), date(2024, 3, 6)), "orders") == 1 + 1  # O2 and G1
    by_week = answered(settings, *MARCH, by="week")
    assert value(by_week, "revenue", "2024-03-04") == pytest.approx(57.42 + 70.0)


def test_grouped_by_segment_guests_are_a_line_of_their_own(tmp_path: Path) -> None:
    settings = refunded_shop(tmp_path, guest_orders=GUEST_ORDERS)
    build_segment_cubes(settings, scores_of([("A", "Champions", "Loyal", 90.0), ("D", "Lost", "Deal", 0.0)]),
                        date(2024, 4, 1))  # fmt: skip
    for by in ("segment", "behaviour"):
        table = answered(settings, *MARCH, by=by)  # type: ignore[arg-type]
        assert value(table, "revenue", "(guests)") == pytest.approx(70.0)
        assert table.get("predicted_clv", "(guests)").missing is not None


# ---------------------------------------------------------------- money with its unit


def shown_text(table: KpiTable) -> str:
    console = Console(record=True, width=240)
    console.print(table.render())
    return console.export_text()


def test_money_is_shown_with_its_currency_and_its_decimals(tmp_path: Path) -> None:
    table = answered(refunded_shop(tmp_path), *MARCH)  # AOV 57.42 / 3 = 19.14, revenue 57.42
    text = shown_text(table)
    assert "USD 57.42" in text and "USD 19.14" in text
    assert "money in USD" in " ".join(text.split())  # the title wraps to the table's width


def test_json_rounds_money_to_minor_units_and_names_the_currency(tmp_path: Path) -> None:
    orders = [completed(f"O{number}", at("2024-03-05 10:00"), "A", "33.34") for number in range(2)]
    orders.append(completed("O3", at("2024-03-06 10:00"), "A", "33.33"))
    loaded = json.loads(answered(shop(tmp_path, orders, Business("UTC", "USD", 2)), *MARCH).to_json())
    assert (loaded["currency"], loaded["timezone"]) == ("USD", "UTC")
    kpis_of = {entry["kpi"]: entry for entry in loaded["kpis"]}
    assert kpis_of["aov"]["value"] == 33.34  # 100.01 / 3 = 33.336666...
    assert (kpis_of["aov"]["unit"], kpis_of["aov"]["currency"]) == ("money", "USD")
    assert kpis_of["revenue"]["value"] == 100.01 and kpis_of["aov"]["numerator"] == 100.01
    assert (kpis_of["orders"]["unit"], kpis_of["orders"]["currency"]) == ("count", None)
    for entry in loaded["kpis"]:
        if entry["unit"] == "money" and entry["value"] is not None:
            assert round(entry["value"], 2) == entry["value"], entry


def test_a_currency_without_minor_units_shows_none(tmp_path: Path) -> None:
    orders = [completed(f"O{number}", at("2024-03-05 10:00"), "A", "1250000") for number in range(2)]
    orders.append(completed("O3", at("2024-03-06 10:00"), "A", "1000000"))
    table = answered(shop(tmp_path, orders, Business(HO_CHI_MINH, "VND", 0)), *MARCH)
    assert "VND 1,166,667" in shown_text(table)  # 3,500,000 / 3
    assert {entry["kpi"]: entry for entry in json.loads(table.to_json())["kpis"]}["aov"]["value"] == 1_166_667


def test_csv_carries_the_unit_and_currency_of_each_value(tmp_path: Path) -> None:
    rows = {row["kpi"]: row for row in csv.DictReader(io.StringIO(answered(refunded_shop(tmp_path), *MARCH).to_csv()))}
    assert (rows["aov"]["value"], rows["aov"]["unit"], rows["aov"]["currency"]) == ("19.14", "money", "USD")
    assert (rows["orders"]["unit"], rows["orders"]["currency"]) == ("count", "")


# ---------------------------------------------------------------- predicted revenue and its range


def test_a_segments_predicted_revenue_has_the_range_of_its_total(lake: Settings) -> None:
    scores = scores_of([("A", "Champions", "Loyal", 1000.0), ("C", "Champions", "Deal", 500.0),
                        ("B", "At risk", "Deal", 300.0)])  # fmt: skip
    scores[VARIANCE_COLUMN] = [300.0**2, 400.0**2, np.nan]  # B's CLV version had no range
    build_segment_cubes(lake, scores, date(2024, 4, 1))
    table = kpis(lake, *MARCH, by="segment")
    assert table.get("predicted_revenue", "Champions").value == 1500.0
    assert table.get("predicted_revenue_p10", "Champions").value == pytest.approx(1500.0 - Z_90 * 500.0)
    assert table.get("predicted_revenue_p90", "Champions").value == pytest.approx(1500.0 + Z_90 * 500.0)
    assert table.get("predicted_revenue", "At risk").value == 300.0
    assert "has no range" in (table.get("predicted_revenue_p90", "At risk").missing or "")
    assert kpis(lake, *MARCH, by="month").get("predicted_revenue_p10", "2024-03").missing == (
        "a prediction from the latest scores is not split by month"
    )


def test_scores_from_before_ranges_give_the_total_without_a_range(lake: Settings) -> None:
    build_segment_cubes(lake, scores_of([("A", "Champions", "Loyal", 1000.0)]), date(2024, 4, 1))
    table = kpis(lake, *MARCH, by="segment")
    assert table.get("predicted_revenue", "Champions").value == 1000.0
    assert table.get("predicted_revenue_p10", "Champions").value is None


def test_before_any_scoring_the_predicted_revenue_says_to_score(lake: Settings) -> None:
    assert kpis(lake, *MARCH).get("predicted_revenue_p10").missing == (
        "no batch scores for these customers yet; run `custlens score`"
    )
