"""Ingest on tiny hand-made exports: every bad row is quarantined with its reason, counts
reconcile, bad files are refused by name, the lake is typed, exact, PII-free and repeatable."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from pydantic import SecretStr
from rich.console import Console

from custlens.errors import CustlensError
from custlens.settings import BusinessSettings, Settings
from features.lake.contracts import CONTRACTS, QUARANTINE_REASONS
from features.lake.ingest import ingest
from features.lake.pii import salt_file
from tests.support.business import SAMPLE_CONFIG

Rows = list[dict[str, str]]


def _quarantine(settings: Settings, table: str) -> pd.DataFrame:
    return pd.read_parquet(settings.quarantine_dir / f"{table}.parquet")


def _lake(settings: Settings, table: str) -> pd.DataFrame:
    return pd.read_parquet(settings.lake_dir / f"{table}.parquet")


def _report(settings: Settings) -> dict:
    return json.loads((settings.reports_dir / "ingest_report.json").read_text(encoding="utf-8"))


def _lake_bytes(settings: Settings) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(settings.lake_dir.iterdir())}


# ---------------------------------------------------------------- bad rows and their reasons

# (table, row index, column, bad value, reason code): one bad value each
BAD_VALUES = [
    ("customers", 2, "signup_at", "", "missing_value"),
    ("customers", 2, "signup_at", "31/12/2023 10:00", "unparseable_timestamp"),
    ("customers", 2, "birth_date", "1985-02-30", "unparseable_date"),
    ("customers", 2, "marketing_opt_in", "maybe", "unparseable_boolean"),
    ("orders", 1, "net_amount", "12,50", "unparseable_number"),
    ("orders", 1, "items", "two", "unparseable_number"),
    ("orders", 0, "net_amount", "-250000", "negative_amount"),  # order 0 is completed: not a refund
    ("orders", 1, "discount_amount", "-1", "negative_amount"),
    ("orders", 1, "status", "refunded", "unknown_status"),
    ("orders", 1, "source_customer_id", "nobody", "unknown_customer"),
    ("engagement_events", 0, "event_type", "teleport", "unknown_event_type"),
    ("engagement_events", 0, "page_views", "-3", "negative_amount"),
    ("surveys", 0, "survey_type", "ces", "unknown_survey_type"),
    ("surveys", 0, "score", "11", "score_out_of_range"),
    ("surveys", 1, "score", "0", "score_out_of_range"),
    ("tickets", 0, "first_response_at", "2024-02-12 08:59:59", "first_response_before_opened"),
    ("tickets", 0, "resolved_at", "2024-02-11 10:00:00", "resolved_before_opened"),
    ("marketing_spend", 0, "spend", "-100", "negative_amount"),
    ("marketing_spend", 0, "date", "01/02/2024", "unparseable_date"),
]


@pytest.mark.parametrize(("table", "row", "column", "value", "reason"), BAD_VALUES, ids=lambda v: str(v))
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(
    exports: Callable[..., Path],
    lenient: Settings,
    tables: dict[str, Rows],
    table: str,
    row: int,
    column: str,
    value: str,
    reason: str,
) -> None:
    # given clean exports with one bad value
    tables[table][row][column] = value
    source = exports(tables)
    # when they are ingested
    report = ingest(lenient, source)
    # then exactly that row is in the quarantine, with that reason, and the others are accepted
    quarantined = _quarantine(lenient, table)
    assert quarantined["_row_number"].tolist() == [row + 1]
    assert quarantined["reason"].tolist() == [reason]
    assert f"{column}: {reason}" in quarantined["reason_detail"].iloc[0]
    assert report.tables[table].quarantined_by_reason == {reason: 1}
    assert report.tables[table].accepted == len(tables[table]) - 1


def test_every_quarantine_reason_code_is_known(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    for table, row, column, value, _ in BAD_VALUES[:12]:
        tables[table][row][column] = value
    ingest(lenient, exports(tables))
    found = {reason for table in CONTRACTS for reason in _quarantine(lenient, table)["reason"]}
    # (the later of two bad values in one cell wins, so not every listed reason is found)
    assert found and found <= set(QUARANTINE_REASONS)
    assert {reason for *_, reason in BAD_VALUES} <= set(QUARANTINE_REASONS)


def test_row_failing_several_checks_is_quarantined_once_with_all_failures(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    # given an order with a bad timestamp, a negative amount and an unknown status
    tables["orders"][2].update(ordered_at="yesterday", net_amount="-5", status="lost")
    # when ingested
    ingest(lenient, exports(tables))
    # then it is one quarantine row: the first reason in the fixed order, every failure in detail
    quarantined = _quarantine(lenient, "orders")
    assert len(quarantined) == 1
    assert quarantined["reason"].iloc[0] == "unparseable_timestamp"
    detail = quarantined["reason_detail"].iloc[0]
    assert "ordered_at: unparseable_timestamp (yesterday)" in detail
    assert "net_amount: negative_amount (-5)" in detail
    assert "status: unknown_status (lost)" in detail


def test_quarantine_keeps_the_original_values_and_where_they_came_from(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    tables["orders"][1].update(net_amount=" -250000 ", status="completed")  # negative and not a refund
    source = exports(tables)
    ingest(lenient, source)
    row = _quarantine(lenient, "orders").iloc[0]
    assert row["net_amount"] == " -250000 "
    assert row["category"] == "Mỹ phẩm"
    assert row["_file"] == str(source / "orders.csv")
    assert row["_row_number"] == 2


def test_orders_of_a_quarantined_customer_are_unknown_customer(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    tables["customers"][3]["signup_at"] = "not a date"  # pos|p-9 owns order O4
    ingest(lenient, exports(tables))
    quarantined = _quarantine(lenient, "orders")
    assert quarantined[["order_id", "reason"]].values.tolist() == [["O4", "unknown_customer"]]


def test_counts_reconcile_on_dirty_input(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    # given exports with bad rows, exact duplicates and id conflicts in several tables
    for table, row, column, value, _ in BAD_VALUES[:14]:
        tables[table][row][column] = value
    tables["orders"].append(dict(tables["orders"][0]))
    tables["orders"].append({**tables["orders"][2], "net_amount": "1"})
    tables["engagement_events"].append(dict(tables["engagement_events"][1]))
    tables["customers"].append(dict(tables["customers"][0]))
    # when ingested
    report = ingest(lenient, exports(tables))
    # then every row of every table is accepted, quarantined or a removed duplicate, in the report too
    saved = _report(lenient)
    for table, figures in saved["tables"].items():
        assert figures["rows_in"] == len(tables[table])
        assert figures["rows_in"] == figures["accepted"] + figures["quarantined"] + figures["duplicates"]
        assert figures["quarantined"] == sum(figures["quarantined_by_reason"].values())
        assert figures["reconciled"] is True
        assert figures["quarantined"] == len(_quarantine(lenient, table))
    assert report.tables["orders"].duplicates == 1
    assert report.tables["customers"].duplicates == 1
    assert "rows_in = accepted + quarantined + duplicates" in saved["reconciliation"]


# ---------------------------------------------------------------- duplicates


def test_identical_rows_after_the_first_are_removed_and_counted(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    tables["orders"] += [dict(tables["orders"][0]), dict(tables["orders"][0])]
    report = ingest(lenient, exports(tables))
    assert report.tables["orders"].duplicates == 2
    assert report.tables["orders"].quarantined == 0
    assert _lake(lenient, "orders")["order_id"].tolist().count("O1") == 1


def test_same_id_with_different_values_keeps_the_first_and_quarantines_the_rest(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    tables["orders"].append({**tables["orders"][0], "net_amount": "1.00"})
    ingest(lenient, exports(tables))
    kept = _lake(lenient, "orders").set_index("order_id").loc["O1"]
    assert kept["net_amount"] == Decimal("1234568")  # VND has no minor unit
    quarantined = _quarantine(lenient, "orders")
    assert quarantined[["_row_number", "reason"]].values.tolist() == [[5, "duplicate_id_conflict"]]
    assert "order_id: duplicate_id_conflict (O1)" in quarantined["reason_detail"].iloc[0]


def test_customer_source_id_given_twice_with_different_values_is_a_conflict(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    tables["customers"].append({**tables["customers"][2], "city": "Huế"})
    ingest(lenient, exports(tables))
    assert _quarantine(lenient, "customers")["reason"].tolist() == ["duplicate_id_conflict"]
    assert _lake(lenient, "customers")["city"].tolist().count("Hà Nội") == 1


def test_duplicates_are_found_across_chunks(
    exports: Callable[..., Path], configure: Callable[..., Settings], lenient: Settings, tables: dict[str, Rows]
) -> None:
    # given 2,500 events read 1,000 at a time, where the last ones repeat and contradict the first
    base = tables["engagement_events"][0]
    events = [{**base, "event_id": f"E{i}"} for i in range(2_400)]
    events += [dict(events[i]) for i in range(50)]  # exact copies, in a later chunk
    events += [{**events[i], "page_views": "99"} for i in range(50, 100)]  # conflicts
    tables["engagement_events"] = events
    settings = configure(lenient, chunk_rows=1_000)
    # when ingested
    report = ingest(settings, exports(tables))
    # then copies are removed, conflicts quarantined, with the first copy kept
    result = report.tables["engagement_events"]
    assert (result.rows_in, result.duplicates, result.quarantined, result.accepted) == (2_500, 50, 50, 2_400)
    assert _quarantine(settings, "engagement_events")["_row_number"].min() == 2_451


# ---------------------------------------------------------------- files that are refused


def test_missing_required_column_is_refused_naming_file_and_column(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    for order in tables["orders"]:
        del order["net_amount"]
    source = exports(tables)
    with pytest.raises(CustlensError, match=r"orders\.csv is missing required column\(s\) net_amount"):
        ingest(settings, source)
    assert not settings.lake_dir.exists()


def test_text_in_a_parquet_file_is_refused_naming_the_file(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    (source / "surveys.csv").unlink()
    (source / "surveys.parquet").write_text("response_id,score\nR1,9\n", encoding="utf-8")
    with pytest.raises(CustlensError, match=r"surveys\.parquet is not a readable Parquet file"):
        ingest(settings, source)


def test_binary_garbage_in_a_csv_file_is_refused_naming_the_file(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    (source / "orders.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" + os.urandom(2_000))
    with pytest.raises(CustlensError, match=r"orders\.csv"):
        ingest(settings, source)


def test_invalid_utf8_after_a_valid_header_is_refused_naming_the_file(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    with (source / "tickets.csv").open("ab") as handle:
        handle.write(b'"T9","1","2024-02-12 09:00:00","\xff\xfe\xfa","","","","",""\n')
    with pytest.raises(CustlensError, match=r"tickets\.csv cannot be read as a UTF-8 CSV file"):
        ingest(settings, source)


def test_a_table_given_as_csv_and_parquet_is_refused_naming_both(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    exports({"orders": tables["orders"]}, source.name, file_format="parquet")
    with pytest.raises(CustlensError, match=r"orders\.csv and .*orders\.parquet"):
        ingest(settings, source)


def test_missing_required_table_is_refused_naming_the_expected_file(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports({"customers": tables["customers"]}, "exports")
    with pytest.raises(CustlensError, match=r"required export .*orders\.csv \(or orders\.parquet\) is missing"):
        ingest(settings, source)


# ---------------------------------------------------------------- optional tables and columns


def test_customers_and_orders_alone_ingest_and_the_rest_is_reported_absent(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports({"customers": tables["customers"], "orders": tables["orders"]}, "exports")
    report = ingest(settings, source)
    saved = _report(settings)
    absent = ["engagement_events", "surveys", "tickets", "marketing_spend"]
    assert saved["absent_tables"] == absent
    for table in absent:
        assert saved["tables"][table]["present"] is False
        assert saved["tables"][table]["rows_in"] == 0
        assert not (settings.lake_dir / f"{table}.parquet").exists()
    assert report.ok and saved["ok"] is True
    assert sorted(path.name for path in settings.lake_dir.iterdir()) == [
        "business.json",
        "crosswalk.parquet",
        "customers.parquet",
        "orders.parquet",
    ]


def test_unknown_extra_columns_are_ignored_and_listed(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    for order in tables["orders"]:
        order["loyalty_tier"] = "gold"
    report = ingest(settings, exports(tables))
    assert report.tables["orders"].extra_columns == ("loyalty_tier",)
    assert _report(settings)["tables"]["orders"]["extra_columns"] == ["loyalty_tier"]
    assert "loyalty_tier" not in _lake(settings, "orders").columns


def test_missing_optional_columns_are_null_in_the_lake(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    tables["orders"] = [{key: value for key, value in order.items() if key != "items"} for order in tables["orders"]]
    ingest(settings, exports(tables))
    assert _lake(settings, "orders")["items"].isna().all()


def test_surveys_without_a_source_column_use_the_default_source(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    tables["surveys"].append(
        {**tables["surveys"][0], "response_id": "R3", "source": "web", "source_customer_id": "w-1"}
    )
    ingest(settings, exports(tables))
    surveys = _lake(settings, "surveys").set_index("response_id")
    assert surveys.loc["R1", "source"] == "crm"  # empty source -> default_source.surveys
    assert surveys.loc["R3", "source"] == "web"
    assert surveys.loc["R1", "customer_id"] == surveys.loc["R3", "customer_id"]


def test_parquet_exports_ingest_like_csv(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    ingest(settings, exports(tables, "csv"))
    from_csv = {table: _lake(settings, table) for table in ("orders", "customers", "surveys")}
    ingest(settings, exports(tables, "parquet", file_format="parquet"))
    for table, frame in from_csv.items():
        pd.testing.assert_frame_equal(frame, _lake(settings, table), obj=table)


def test_typed_parquet_columns_are_read(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports({"customers": tables["customers"]}, "exports")
    orders = pd.DataFrame(tables["orders"])
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], format="ISO8601", utc=True)  # O1: 12:00 UTC
    orders["items"] = orders["items"].astype("int64")
    orders["net_amount"] = orders["net_amount"].astype("float64")
    orders.to_parquet(source / "orders.parquet", index=False)
    ingest(settings, source)
    lake = _lake(settings, "orders").set_index("order_id")
    assert lake.loc["O1", "ordered_at"] == pd.Timestamp("2024-02-01 12:00:00", tz="UTC")
    assert lake.loc["O1", "net_amount"] == Decimal("1234568")  # VND has no minor unit
    assert lake.loc["O1", "items"] == 3


# ---------------------------------------------------------------- values in the lake


def test_vietnamese_text_survives(exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]) -> None:
    ingest(settings, exports(tables))
    assert "Giao hàng nhanh, rất hài lòng" in _lake(settings, "surveys")["comment"].tolist()
    assert {"Hồ Chí Minh", "Hà Nội", "Đà Nẵng"} == set(_lake(settings, "customers")["city"])
    assert "Thời trang" in _lake(settings, "orders")["category"].tolist()


def test_timestamps_with_z_offset_or_none_land_at_the_right_utc_instant(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    # given the same instant, 03:00 UTC, written four ways (naive = Asia/Ho_Chi_Minh, UTC+7)
    written = ["2024-02-05T03:00:00Z", "2024-02-05T10:00:00+07:00", "2024-02-05 10:00:00", "2024-02-05T10:00:00"]
    for order, value in zip(tables["orders"], written, strict=True):
        order["ordered_at"] = value
    ingest(settings, exports(tables))
    ordered_at = _lake(settings, "orders")["ordered_at"]
    assert str(ordered_at.dt.tz) == "UTC"
    assert set(ordered_at) == {pd.Timestamp(datetime(2024, 2, 5, 3, tzinfo=UTC))}


def test_naive_timestamps_follow_the_business_timezone(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    berlin = settings.model_copy(update={"business": BusinessSettings(timezone="Europe/Berlin", currency="VND")})
    ingest(berlin, exports(tables))
    orders = _lake(berlin, "orders").set_index("order_id")
    assert orders.loc["O1", "ordered_at"] == pd.Timestamp("2024-02-01 11:00:00", tz="UTC")  # 12:00 CET


def test_money_stays_exact(exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]) -> None:
    tables["orders"][2]["net_amount"] = "999999999999999.99"  # the largest amount below 10^15
    for order in tables["orders"]:
        order["currency"] = "USD"
    dollars = settings.model_copy(update={"business": BusinessSettings(timezone="Asia/Ho_Chi_Minh", currency="USD")})
    ingest(dollars, exports(tables))
    orders = _lake(dollars, "orders").set_index("order_id")
    assert orders.loc["O1", "net_amount"] == Decimal("1234567.89")
    assert orders.loc["O1", "discount_amount"] == Decimal("65432.11")
    assert orders.loc["O3", "net_amount"] == Decimal("999999999999999.99")
    schema = duckdb.connect().execute(f"DESCRIBE SELECT * FROM '{dollars.lake_dir / 'orders.parquet'}'").fetchall()
    assert {name: kind for name, kind, *_ in schema}["net_amount"] == "DECIMAL(18,2)"


def test_money_is_stored_with_the_currency_minor_units(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    ingest(settings, exports(tables))  # VND: no minor unit
    orders = _lake(settings, "orders").set_index("order_id")
    assert orders.loc["O1", "net_amount"] == Decimal("1234568")
    assert orders.loc["O3", "net_amount"] == Decimal("99001")  # 99000.5 rounds half away from zero
    schema = duckdb.connect().execute(f"DESCRIBE SELECT * FROM '{settings.lake_dir / 'orders.parquet'}'").fetchall()
    assert {name: kind for name, kind, *_ in schema}["net_amount"] == "DECIMAL(18,0)"
    assert _report(settings)["tables"]["orders"]["rounded_amounts"] == {"net_amount": 2, "gross_amount": 1,
                                                                       "discount_amount": 1}  # fmt: skip


def test_money_with_more_decimals_is_accepted_not_quarantined(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    # a plain pandas sum writes 145.79999999999998: ingest rounds it to the currency's minor units
    tables["orders"][0]["net_amount"] = "1234567.891"
    ingest(lenient, exports(tables))
    assert _quarantine(lenient, "orders").empty


def test_booleans_read_true_false_one_zero_yes_no(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    ingest(settings, exports(tables))
    customers = _lake(settings, "customers").set_index("sources")
    assert customers.loc["crm,web", "marketing_opt_in"]  # the CRM's "yes" wins over the web's "false"
    assert customers["marketing_opt_in"].tolist().count(True) == 2  # "yes", "1"
    assert customers.loc["pos", "marketing_opt_in"] == False  # noqa: E712 - "NO"


def test_lake_tables_have_the_documented_columns(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    ingest(settings, exports(tables))
    for table in ("orders", "engagement_events", "surveys", "tickets"):
        assert _lake(settings, table).columns.tolist() == ["customer_id", *CONTRACTS[table].column_names]
    assert _lake(settings, "marketing_spend").columns.tolist() == list(CONTRACTS["marketing_spend"].column_names)
    assert _lake(settings, "customers").columns.tolist() == [
        "customer_id", "signup_at", "email_hash", "phone_hash", "city", "gender", "birth_year",
        "acquisition_channel", "marketing_opt_in", "n_source_ids", "sources",
    ]  # fmt: skip
    assert _lake(settings, "crosswalk").columns.tolist() == ["source", "source_customer_id", "customer_id", "signup_at"]


def test_lake_rows_are_sorted_by_customer_and_time(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    ingest(settings, exports(tables))
    orders = _lake(settings, "orders")
    assert orders.equals(orders.sort_values(["customer_id", "ordered_at", "order_id"], ignore_index=True))


# ---------------------------------------------------------------- PII


def test_no_raw_email_phone_or_name_anywhere_in_the_lake_or_quarantine(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows]
) -> None:
    # given customers with contact data, one of them quarantined
    tables["customers"][2]["signup_at"] = "bad"
    ingest(lenient, exports(tables))
    raw = pd.DataFrame(tables["customers"])
    secrets = {v.strip() for column in ("email", "phone", "full_name", "birth_date") for v in raw[column] if v.strip()}
    secrets |= {value.lower() for value in secrets}
    secrets |= {"".join(ch for ch in value if ch.isdigit()) for value in raw["phone"] if value.strip()}
    secrets |= {"0987654321", "0912345678"}  # normalized phones
    # then no string value of any lake or quarantine file contains one of them
    files = [*lenient.lake_dir.glob("*.parquet"), *lenient.quarantine_dir.glob("*.parquet")]
    assert len(files) >= 10
    for path in files:
        frame = pd.read_parquet(path)
        for column in frame.columns:
            values = [str(value) for value in frame[column].dropna()]
            leaked = [value for value in values for secret in secrets if secret in value]
            assert not leaked, f"{path.name}.{column} holds PII: {leaked[:3]}"
    assert {"email_hash", "phone_hash", "full_name_hash"} <= set(_quarantine(lenient, "customers").columns)


def test_salt_is_created_once_private_and_reused(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    unsalted = settings.model_copy(update={"pii_salt": None})
    source = exports(tables)
    ingest(unsalted, source)
    path = salt_file(unsalted)
    first_salt = path.read_text(encoding="utf-8")
    first_hashes = _lake(unsalted, "customers")["email_hash"].tolist()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ingest(unsalted, source)
    assert path.read_text(encoding="utf-8") == first_salt
    assert _lake(unsalted, "customers")["email_hash"].tolist() == first_hashes
    assert _report(unsalted)["pii"]["salt_from"] == "file"


def test_a_different_salt_gives_different_hashes(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    ingest(settings, source)
    before = set(_lake(settings, "customers")["email_hash"].dropna())
    ingest(settings.model_copy(update={"pii_salt": SecretStr("another")}), source)
    assert before.isdisjoint(set(_lake(settings, "customers")["email_hash"].dropna()))


# ---------------------------------------------------------------- the run as a whole


def test_same_input_twice_gives_a_byte_identical_lake(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    source = exports(tables)
    ingest(settings, source)
    first = _lake_bytes(settings)
    ingest(settings, source)
    assert _lake_bytes(settings) == first


def test_threshold_breach_fails_and_leaves_the_previous_lake_untouched(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    # given a lake from a good run
    ingest(settings, exports(tables, "good"))
    before = _lake_bytes(settings)
    # when a later export has 2 bad orders of 4 (50% > 5%)
    tables["orders"][0]["net_amount"] = "-1"
    tables["orders"][3]["status"] = "lost"
    with pytest.raises(CustlensError) as failure:
        ingest(settings, exports(tables, "bad"))
    # then the message names table, share, threshold and report; the lake is as it was
    message = str(failure.value)
    assert "orders: 50.00% of rows quarantined" in message
    assert "max_bad_row_share 5.00%" in message
    assert str(settings.reports_dir / "ingest_report.json") in message
    assert _lake_bytes(settings) == before
    # and the report and quarantine of the failed run are written
    saved = _report(settings)
    assert saved["ok"] is False and saved["failed_tables"] == ["orders"]
    assert len(_quarantine(settings, "orders")) == 2
    assert not list(settings.data_dir.glob(".lake-*")) and not list(settings.data_dir.glob(".ingest-work-*"))


def test_report_json_has_the_documented_shape(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    report = ingest(settings, exports(tables))
    saved = _report(settings)
    assert report.path == settings.reports_dir / "ingest_report.json"
    assert set(saved) >= {"ok", "tables", "absent_tables", "identity", "lake_dir", "quarantine_dir"}
    assert set(saved["tables"]) == set(CONTRACTS)
    assert set(saved["tables"]["orders"]) >= {
        "present", "file", "rows_in", "accepted", "quarantined", "duplicates", "quarantined_by_reason",
        "bad_row_share", "extra_columns",
    }  # fmt: skip
    assert saved["identity"] == {
        "source_ids": 4, "customers": 3, "source_ids_merged": 1, "shared_contacts_ignored": 0,
        "identity_keys": [], "merged_by_identity_keys": 0,
    }  # fmt: skip
    assert saved["business"]["timezone"] == "Asia/Ho_Chi_Minh" and saved["business"]["currency"] == "VND"
    assert saved["lake_dir"] == str(settings.lake_dir)


def test_render_shows_each_table_and_where_the_output_is(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    console = Console(record=True, width=200)
    report = ingest(settings, exports({k: tables[k] for k in ("customers", "orders")}, "exports"),
                    console=console)  # fmt: skip
    console.print(report.render())
    text = console.export_text()
    assert "orders" in text and "absent" in text
    assert str(settings.lake_dir) in text and str(report.path) in text


def test_cli_ingest_prints_the_summary_and_refuses_a_breach_without_traceback(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from custlens.cli import app

    monkeypatch.setenv("CUSTLENS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CUSTLENS_PII_SALT", "test-salt")
    sample = ["--config", str(SAMPLE_CONFIG)]  # the test exports' naive times are Ho Chi Minh wall time
    good = CliRunner().invoke(app, ["ingest", "--source", str(exports(tables, "good")), *sample])
    assert good.exit_code == 0, good.output
    assert "ingest_report.json" in good.output and "customers" in good.output
    tables["orders"][0]["status"] = "lost"
    bad = CliRunner().invoke(app, ["ingest", "--source", str(exports(tables, "bad")), *sample])
    assert bad.exit_code == 2
    assert "orders: 25.00% of rows quarantined" in bad.output and "Traceback" not in bad.output


def test_a_killed_ingests_staging_folder_is_removed_by_the_next_run(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    import subprocess
    import sys

    # given the folder of an ingest whose process is gone, and one of a process still running
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    settings.data_dir.mkdir(parents=True)
    stale = settings.data_dir / f".ingest-work-{finished.stdout.strip()}-abc123"
    (stale / "duckdb").mkdir(parents=True)
    running = settings.data_dir / f".ingest-work-{os.getpid()}-def456"
    running.mkdir()
    # when ingest runs
    ingest(settings, exports(tables))
    # then the dead run's leftovers are gone and the live one's folder is untouched
    assert not stale.exists()
    assert running.is_dir()
