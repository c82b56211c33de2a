"""Real businesses' exports read as they come (issue 12): a described file instead of a rewritten
one, derived columns, guests, refunds, currencies, declared identity keys, errors that say why,
and the --check dry run. The worked examples of the README run here: the CDNOW sample and an
order-lines file aggregated by `sql:`."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pydantic import SecretStr

from custlens.errors import CustlensError
from custlens.settings import PROJECT_ROOT, Settings, load_settings
from features.lake.ingest import ingest
from features.lake.tables import GUEST_ORDERS, lake_business

CDNOW = PROJECT_ROOT / "examples" / "cdnow"
Rows = list[dict[str, str]]


def _settings(tmp_path: Path, config: dict[str, Any] | None = None) -> Settings:
    """A user's own settings (nothing Vietnamese assumed), with `config` merged over the defaults."""
    path = tmp_path / "custlens.yaml"
    path.write_text(yaml.safe_dump(config or {}), encoding="utf-8")
    return load_settings(path).model_copy(update={"data_dir": tmp_path / "data", "pii_salt": SecretStr("salt")})


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def _lake(settings: Settings, table: str) -> pd.DataFrame:
    return pd.read_parquet(settings.lake_dir / f"{table}.parquet")


def _report(settings: Settings) -> dict[str, Any]:
    return json.loads((settings.reports_dir / "ingest_report.json").read_text(encoding="utf-8"))


def _bytes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _cdnow_settings(tmp_path: Path) -> Settings:
    config = yaml.safe_load((CDNOW / "custlens.yaml").read_text(encoding="utf-8"))
    config["data_dir"] = str(tmp_path / "data")
    return _settings(tmp_path, config)


# ---------------------------------------------------------------- the CDNOW sample, as it ships


def test_cdnow_sample_loads_as_it_ships(tmp_path: Path) -> None:
    settings = _cdnow_settings(tmp_path)
    report = ingest(settings, CDNOW)
    orders = _lake(settings, "orders")
    assert report.ok
    assert report.identity.customers == 2357
    assert report.tables["orders"].rows_in == 6919
    assert all(result.quarantined == 0 for result in report.tables.values() if result.present)
    assert all(result.reconciled for result in report.tables.values() if result.present)
    assert len(orders) == 6919  # identical lines of one customer on one day stay separate purchases
    assert orders["order_id"].is_unique
    # a calendar day of a US store is local midnight: 1997-01-01 00:00 New York = 05:00 UTC
    first = orders["ordered_at"].min()
    assert first == pd.Timestamp("1997-01-01 05:00:00", tz="UTC")
    assert (orders["ordered_at"].dt.tz_convert("America/New_York").dt.hour == 0).all()
    assert orders["net_amount"].iloc[0] == Decimal(str(orders["net_amount"].iloc[0]))
    assert str(orders["net_amount"].map(lambda value: value.as_tuple().exponent).unique()) == "[-2]"
    assert set(orders["status"]) == {"completed"}
    business = lake_business(settings)
    assert (business.timezone, business.currency, business.minor_units) == ("America/New_York", "USD", 2)
    derived = report.tables["orders"].derived
    assert set(derived) == {"order_id", "source", "status"}
    assert report.tables["customers"].derived  # no customers export: one per id in orders
    customers = _lake(settings, "customers")
    assert len(customers) == 2357
    assert customers["signup_at"].min() == first


def test_cdnow_reingest_is_byte_identical(tmp_path: Path) -> None:
    settings = _cdnow_settings(tmp_path)
    ingest(settings, CDNOW)
    first = _bytes(settings.lake_dir)
    ingest(settings, CDNOW)
    assert _bytes(settings.lake_dir) == first


def test_check_reads_everything_and_writes_nothing(tmp_path: Path) -> None:
    settings = _cdnow_settings(tmp_path)
    report = ingest(settings, CDNOW, check=True)
    assert report.ok and report.check_only
    assert report.identity.customers == 2357
    assert report.tables["orders"].timestamp_formats  # says which format read the dates
    assert not settings.data_dir.exists()  # no lake, quarantine, report or salt file


def test_check_on_an_existing_lake_leaves_it_byte_identical(tmp_path: Path) -> None:
    settings = _cdnow_settings(tmp_path)
    ingest(settings, CDNOW)
    before = {name: _bytes(settings.data_dir / name) for name in ("lake", "quarantine", "reports")}
    shorter = tmp_path / "short"
    shorter.mkdir()
    lines = (CDNOW / "CDNOW_sample.txt").read_text(encoding="utf-8").splitlines()[:100]
    (shorter / "CDNOW_sample.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ingest(settings, shorter, check=True)
    assert report.tables["orders"].rows_in == 100
    assert {name: _bytes(settings.data_dir / name) for name in before} == before


# ---------------------------------------------------------------- the business: time zone and currency

ORDERS_ONLY = "customer,when,amount\nA,2024-03-01,10.00\nB,2024-03-02,20.50\n"
ORDERS_MAPPING = {"orders": {"file": "orders.csv", "columns": {
    "source_customer_id": "customer", "ordered_at": "when", "net_amount": "amount"}}}  # fmt: skip


def test_naive_times_without_a_business_timezone_are_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "orders.csv", ORDERS_ONLY)
    settings = _settings(tmp_path, {"business": {"currency": "USD"}, "ingest": {"tables": ORDERS_MAPPING}})
    with pytest.raises(CustlensError, match=r"business\.timezone"):
        ingest(settings, source)
    assert not settings.lake_dir.exists()


def test_amounts_without_a_currency_are_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "orders.csv", ORDERS_ONLY)
    settings = _settings(tmp_path, {"business": {"timezone": "UTC"}, "ingest": {"tables": ORDERS_MAPPING}})
    with pytest.raises(CustlensError, match=r"business\.currency"):
        ingest(settings, source)


def test_the_currency_column_says_the_currency_when_it_holds_one_code(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "in", "orders.csv", "customer,when,amount,cur\nA,2024-03-01,10,eur\nB,2024-03-02,2,EUR\n"
    )
    tables = {
        "orders": {**ORDERS_MAPPING["orders"], "columns": {**ORDERS_MAPPING["orders"]["columns"], "currency": "cur"}}
    }
    settings = _settings(tmp_path, {"business": {"timezone": "Europe/Berlin"}, "ingest": {"tables": tables}})
    report = ingest(settings, source)
    assert (report.business.currency, report.business.currency_from) == ("EUR", "the orders' currency column")
    two = _write(tmp_path / "two", "orders.csv", "customer,when,amount,cur\nA,2024-03-01,10,EUR\nB,2024-03-02,2,GBP\n")
    with pytest.raises(CustlensError, match=r"EUR .*GBP|GBP .*EUR"):
        ingest(settings, two)


def test_offsets_on_every_timestamp_need_no_timezone(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "orders.csv", "customer,when,amount\nA,2024-03-01T23:30:00-05:00,10.00\n")
    settings = _settings(tmp_path, {"business": {"currency": "USD"}, "ingest": {"tables": ORDERS_MAPPING}})
    report = ingest(settings, source)
    assert report.business.timezone == "UTC"
    assert _lake(settings, "orders")["ordered_at"].iloc[0] == pd.Timestamp("2024-03-02 04:30", tz="UTC")


def test_rows_in_another_currency_are_quarantined_or_converted(tmp_path: Path) -> None:
    text = "customer,when,amount,cur\nA,2024-03-01,10.00,GBP\nB,2024-03-05,20.00,EUR\nC,2024-02-01,5.00,EUR\n"
    source = _write(tmp_path / "in", "orders.csv", text)
    tables = {
        "orders": {**ORDERS_MAPPING["orders"], "columns": {**ORDERS_MAPPING["orders"]["columns"], "currency": "cur"}}
    }
    config = {"business": {"timezone": "Europe/London", "currency": "GBP"}, "ingest": {"tables": tables,
              "max_bad_row_share": 1.0}}  # fmt: skip
    report = ingest(_settings(tmp_path, config), source)
    assert report.tables["orders"].quarantined_by_reason == {"currency_mismatch": 2}

    _write(source, "rates.csv", "date,currency,rate\n2024-03-01,EUR,0.85\n")
    config["ingest"]["exchange_rates"] = "rates.csv"
    settings = _settings(tmp_path, config)
    report = ingest(settings, source)
    assert report.tables["orders"].quarantined_by_reason == {"no_exchange_rate": 1}  # C is before any rate
    orders = _lake(settings, "orders").set_index("source_customer_id")
    assert orders.loc["B", "net_amount"] == Decimal("17.00")
    assert orders.loc["B", "currency"] == "GBP"
    assert report.money.converted_orders == 1


# ---------------------------------------------------------------- derived columns, guests, refunds


def _lines_source(tmp_path: Path) -> Path:
    """An invoice-lines export: several lines per invoice, guests (no customer), a credit note."""
    return _write(tmp_path / "lines", "lines.csv", (
        "invoice,customer,ts,qty,price\n"
        "1001,c1,2024-05-01 10:00,2,5.00\n"
        "1001,c1,2024-05-01 10:00,1,7.50\n"
        "1002,,2024-05-02 11:00,1,40.00\n"        # a guest
        "1003,c2,2024-05-03 12:00,3,1.10\n"
        "C1004,c1,2024-05-04 09:00,-2,5.00\n"     # a credit note for part of 1001
        "1005,c3,2024-05-05 09:00,1,30.00\n"
        "C1006,c3,2024-05-06 09:00,-1,30.00\n"    # c3 got everything back
    ))  # fmt: skip


LINES_SQL = """
SELECT invoice AS order_id, nullif(customer, '') AS source_customer_id, min(ts) AS ordered_at,
       CASE WHEN invoice LIKE 'C%' THEN 'returned' ELSE 'completed' END AS status,
       sum(qty * price) AS net_amount, sum(qty) AS items
FROM read_csv('lines.csv', types = {'customer': 'VARCHAR', 'invoice': 'VARCHAR'})
GROUP BY ALL
"""


def _lines_settings(tmp_path: Path) -> Settings:
    config = {
        "business": {"timezone": "Europe/London", "currency": "GBP"},
        "ingest": {"tables": {"orders": {"sql": LINES_SQL, "defaults": {"source": "shop"}}}},
    }
    return _settings(tmp_path, config)


def test_order_lines_become_orders_with_guests_and_refunds(tmp_path: Path) -> None:
    settings = _lines_settings(tmp_path)
    report = ingest(settings, _lines_source(tmp_path))
    assert report.ok
    orders = _lake(settings, "orders")
    guests = _lake(settings, GUEST_ORDERS)
    assert sorted(orders["order_id"]) == ["1001", "1003", "1005", "C1004", "C1006"]
    assert list(guests["order_id"]) == ["1002"] and guests["net_amount"].iloc[0] == Decimal("40.00")
    assert "customer_id" not in guests.columns
    refunds = orders.loc[orders["status"] == "returned", "net_amount"]
    assert sorted(refunds) == [Decimal("-30.00"), Decimal("-10.00")]
    assert report.tables["orders"].guests == 1
    money = report.money
    assert (money.guest_orders, money.refunds) == (1, 2)
    assert money.refunded == pytest.approx(40.0)
    assert money.completed_revenue == pytest.approx(17.5 + 40 + 3.3 + 30)
    assert report.identity.customers == 3  # guests make no customer


def test_a_negative_amount_that_is_not_a_refund_is_quarantined(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "orders.csv", "customer,when,amount\nA,2024-03-01,-10.00\nB,2024-03-01,1\n")
    config = {"business": {"timezone": "UTC", "currency": "USD"},
              "ingest": {"tables": ORDERS_MAPPING, "max_bad_row_share": 1.0}}  # fmt: skip
    report = ingest(_settings(tmp_path, config), source)
    assert report.tables["orders"].quarantined_by_reason == {"negative_amount": 1}


def test_amounts_are_rounded_to_the_currency_and_counted(tmp_path: Path) -> None:
    text = 'customer,when,amount\nA,2024-03-01,145.79999999999998\nB,2024-03-01,"1,234.50"\nC,2024-03-01,$12.00\n'
    source = _write(tmp_path / "in", "orders.csv", text)
    settings = _settings(
        tmp_path, {"business": {"timezone": "UTC", "currency": "USD"}, "ingest": {"tables": ORDERS_MAPPING}}
    )
    report = ingest(settings, source)
    amounts = _lake(settings, "orders").set_index("source_customer_id")["net_amount"]
    assert amounts.to_dict() == {"A": Decimal("145.80"), "B": Decimal("1234.50"), "C": Decimal("12.00")}
    assert report.tables["orders"].rounded_amounts == {"net_amount": 1}


def test_status_values_map_and_match_without_case(tmp_path: Path) -> None:
    text = "customer,when,amount,state\nA,2024-03-01,1,Completed\nB,2024-03-01,1,Shipped\nC,2024-03-01,-1,REFUNDED\n"
    source = _write(tmp_path / "in", "orders.csv", text)
    columns = {**ORDERS_MAPPING["orders"]["columns"], "status": "state"}
    tables = {"orders": {**ORDERS_MAPPING["orders"], "columns": columns,
                         "values": {"status": {"shipped": "completed", "Refunded": "returned"}}}}  # fmt: skip
    settings = _settings(tmp_path, {"business": {"timezone": "UTC", "currency": "USD"}, "ingest": {"tables": tables}})
    ingest(settings, source)
    statuses = _lake(settings, "orders").set_index("source_customer_id")["status"].to_dict()
    assert statuses == {"A": "completed", "B": "completed", "C": "returned"}


# ---------------------------------------------------------------- identity


def _people(n: int, key: str = "card", shared: str = "L-1", email: str = "shared@example.com") -> str:
    rows = [f"web,{i},2024-01-0{1 + i % 9} 10:00:00,{email.format(i=i)},{shared}" for i in range(n)]
    return f"source,source_customer_id,signup_at,email,{key}\n" + "\n".join(rows) + "\n"


def test_declared_identity_keys_merge_more_than_ten_ids(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "customers.csv", _people(12))
    _write(source, "orders.csv", "order_id,source,source_customer_id,ordered_at,status,net_amount\n"
           "O1,web,3,2024-02-01 10:00:00,completed,5\n")  # fmt: skip
    base = {"business": {"timezone": "Asia/Tokyo", "currency": "JPY"}}
    shared_email_only = ingest(_settings(tmp_path, base), source)
    assert shared_email_only.identity.customers == 12  # 12 ids on one email: a placeholder, links nobody
    settings = _settings(tmp_path, {**base, "ingest": {"identity_keys": ["card"]}})
    report = ingest(settings, source)
    assert report.identity.customers == 1
    assert report.identity.merged_by_key == 11
    lake = json.dumps(_report(settings))
    assert "L-1" not in lake and "L-1" not in (settings.lake_dir / "customers.parquet").read_bytes().decode("latin-1")


def test_an_identity_key_the_file_lacks_is_refused(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "customers.csv", _people(2))
    _write(source, "orders.csv", "order_id,source,source_customer_id,ordered_at,status,net_amount\n")
    settings = _settings(tmp_path, {"business": {"timezone": "UTC", "currency": "USD"},
                                    "ingest": {"identity_keys": ["loyalty"]}})  # fmt: skip
    with pytest.raises(CustlensError, match="loyalty"):
        ingest(settings, source)


def test_a_crosswalk_file_merges_ids_the_business_resolved(tmp_path: Path) -> None:
    source = _write(tmp_path / "in", "customers.csv", _people(3, key="x", shared="", email="p{i}@example.com"))
    _write(source, "orders.csv", "order_id,source,source_customer_id,ordered_at,status,net_amount\n"
           "O1,web,0,2024-02-01 10:00:00+00:00,completed,5\n")  # fmt: skip
    _write(source, "people.csv", "source,source_customer_id,person_key\nweb,0,P1\nweb,2,P1\n")
    settings = _settings(tmp_path, {"business": {"timezone": "UTC", "currency": "USD"},
                                    "ingest": {"crosswalk": "people.csv"}})  # fmt: skip
    report = ingest(settings, source)
    crosswalk = _lake(settings, "crosswalk").set_index("source_customer_id")["customer_id"]
    assert crosswalk["0"] == crosswalk["2"] != crosswalk["1"]
    assert report.identity.customers == 2


# ---------------------------------------------------------------- errors that say why


def test_the_bad_share_failure_names_reasons_examples_and_the_cascade(tmp_path: Path) -> None:
    customers = "source,source_customer_id,signup_at\n" + "".join(f"crm,{i},31/12/2023\n" for i in range(5))
    orders = "order_id,source,source_customer_id,ordered_at,status,net_amount\n" + "".join(
        f"O{i},crm,{i},2024-01-02 10:00:00,completed,5\n" for i in range(5)
    )
    source = _write(tmp_path / "in", "customers.csv", customers)
    _write(source, "orders.csv", orders)
    settings = _settings(tmp_path, {"business": {"timezone": "UTC", "currency": "USD"}})
    with pytest.raises(CustlensError) as failure:
        ingest(settings, source)
    message = str(failure.value)
    assert "customers: 100.00%" in message and "unparseable_timestamp 5" in message
    assert "row 1" in message and "31/12/2023" in message  # one example row, its value shown
    assert "because their customer row was quarantined" in message
    report = _report(settings)
    assert report["tables"]["orders"]["unknown_customer_because_customer_quarantined"] == 5
    assert report["tables"]["customers"]["examples"][0]["reason"] == "unparseable_timestamp"


def test_a_bad_sql_query_names_the_table_and_duckdbs_message(tmp_path: Path) -> None:
    source = _lines_source(tmp_path)
    config = {"business": {"timezone": "UTC", "currency": "GBP"},
              "ingest": {"tables": {"orders": {"sql": "SELECT nope FROM read_csv('lines.csv')"}}}}  # fmt: skip
    with pytest.raises(CustlensError, match=r"ingest\.tables\.orders\.sql"):
        ingest(_settings(tmp_path, config), source)


def test_a_misspelled_table_or_column_in_the_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(CustlensError, match="order"):
        _settings(tmp_path, {"ingest": {"tables": {"order": {"file": "x.csv"}}}})
    with pytest.raises(CustlensError, match="order_date"):
        _settings(tmp_path, {"ingest": {"tables": {"orders": {"columns": {"order_date": "x"}}}}})
    with pytest.raises(CustlensError, match=r"business\.timezone"):
        _settings(tmp_path, {"ingest": {"source_timezone": "UTC"}})


def test_check_prints_what_it_assumed_and_an_example_of_each_reason(tmp_path: Path) -> None:
    from rich.console import Console

    text = "customer,when,amount\nA,2024-03-01,12.5O\nB,2024-03-02,20.50\n"
    source = _write(tmp_path / "in", "orders.csv", text)
    config = {"business": {"timezone": "UTC", "currency": "USD"},
              "ingest": {"tables": ORDERS_MAPPING, "max_bad_row_share": 1.0}}  # fmt: skip
    report = ingest(_settings(tmp_path, config), source, check=True)
    console = Console(width=200, record=True)
    console.print(report.render())
    shown = console.export_text()
    assert "time zone UTC (business.timezone)" in shown and "currency USD" in shown
    assert "derived order_id" in shown and "status: completed" in shown
    assert "e.g. row 1: net_amount: unparseable_number (12.5O)" in shown
    assert "unknown_customer" not in shown  # no customers export: the bad order's own reason says it
    assert "nothing written" in shown
