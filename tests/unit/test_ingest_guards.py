"""Ingest refuses an export that would silently replace the lake with much less — header-only or
truncated files, tables left out, nothing accepted — unless told it is meant; the lake and its KPI
cube are built in staging and swapped in together; every failed run leaves a report saying
`ok: false`; timestamps no real business has are quarantined as implausible."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from custlens.errors import CustlensError
from custlens.settings import Settings, load_settings
from features.kpis import kpi_dir
from features.kpis.cube import read_cube_meta
from features.lake.ingest import ingest
from tests.conftest import Rows, with_ingest
from tests.support.business import SAMPLE_CONFIG


def _bytes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _report(settings: Settings) -> dict:
    return json.loads((settings.reports_dir / "ingest_report.json").read_text(encoding="utf-8"))


def _header_only(folder: Path, table: str, tables: dict[str, Rows]) -> None:
    (folder / f"{table}.csv").write_text(",".join(tables[table][0]) + "\n", encoding="utf-8")


@pytest.fixture
def good(exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]) -> dict[str, dict[str, str]]:
    """A lake and cube from a complete export; their bytes."""
    ingest(settings, exports(tables, "good"))
    return {"lake": _bytes(settings.lake_dir), "cube": _bytes(kpi_dir(settings))}


def test_header_only_customers_and_orders_are_refused_and_nothing_changes(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], good: dict[str, dict[str, str]]
) -> None:
    # given a lake from a complete export, then an export whose customers and orders are header-only
    source = exports(tables, "empty")
    _header_only(source, "customers", tables)
    _header_only(source, "orders", tables)
    # when it is ingested, even with --allow-shrink
    with pytest.raises(CustlensError) as refused:
        ingest(settings, source, allow_shrink=True)
    # then it is refused saying what is wrong, and the lake and cube are byte-identical
    assert "orders: no row was accepted" in str(refused.value)
    assert _bytes(settings.lake_dir) == good["lake"] and _bytes(kpi_dir(settings)) == good["cube"]
    report = _report(settings)
    assert report["ok"] is False and report["lake_written"] is False
    assert any(reason.startswith("orders: no row was accepted") for reason in report["refused"])


def test_a_truncated_export_missing_tables_is_refused_with_what_changed(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], good: dict[str, dict[str, str]]
) -> None:
    # given an export whose orders were cut to 1 of 4 rows and whose optional tables were left out
    cut = {"customers": tables["customers"], "orders": tables["orders"][:1]}
    with pytest.raises(CustlensError) as refused:
        ingest(settings, exports(cut, "cut"))
    message = str(refused.value)
    # then each change is named, with the option that would say it is meant
    assert (
        "orders: 4 -> 1 rows (-75.0%) but ingest.max_shrink_share allows -50%" in message
        and "--allow-shrink" in message
    )
    for table in ("engagement_events", "surveys", "tickets", "marketing_spend"):
        assert f"the export has no {table}; export it, or pass --drop-table {table}" in message
    assert "Traceback" not in message
    assert _bytes(settings.lake_dir) == good["lake"]
    assert _report(settings)["lake_rows_before_after"]["orders"] == [4, 1]


def test_allow_shrink_and_drop_table_say_the_shrink_is_meant(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], good: dict[str, dict[str, str]]
) -> None:
    cut = {name: rows for name, rows in tables.items() if name != "surveys"}
    cut["orders"] = tables["orders"][:1]
    source = exports(cut, "cut")
    with pytest.raises(CustlensError, match="--drop-table surveys"):
        ingest(settings, source, allow_shrink=True)  # a table left out needs its own word
    report = ingest(settings, source, allow_shrink=True, drop_tables=("surveys",))
    assert report.ok and report.dropped_tables == ("surveys",)
    assert not (settings.lake_dir / "surveys.parquet").exists()
    assert len(pd.read_parquet(settings.lake_dir / "orders.parquet")) == 1
    # and a shrink within ingest.max_shrink_share passes without any option
    assert ingest(with_ingest(settings, max_shrink_share=0.9), exports(tables, "full")).ok


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nope", "--drop-table nope: not a table"),
        ("orders", "--drop-table orders: orders is required"),
        ("tickets", "--drop-table tickets: the export has tickets"),
    ],
)
def test_drop_table_names_a_table_the_export_left_out(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], name: str, expected: str
) -> None:
    with pytest.raises(CustlensError, match=expected):
        ingest(settings, exports(tables), drop_tables=(name,))


def test_the_lake_and_its_cube_are_swapped_in_together(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], good: dict[str, dict[str, str]]
) -> None:
    # the cube describes exactly the lake in place (built from it in staging, before the swap)
    read_cube_meta(settings)  # raises when the cube is older than the lake
    tables["orders"].append({**tables["orders"][0], "order_id": "O5", "ordered_at": "2024-03-05 10:00:00"})
    ingest(settings, exports(tables, "more"))
    assert read_cube_meta(settings).last_day.isoformat() == "2024-03-05"
    assert not list(settings.data_dir.glob(".ingest-work-*")) and not list(settings.data_dir.glob(".*-new-*"))


def test_a_failing_cube_leaves_lake_cube_and_an_ok_false_report(
    exports: Callable[..., Path],
    settings: Settings,
    tables: dict[str, Rows],
    good: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import features.lake.ingest as ingest_module

    def broken(staging: Settings) -> Path:
        raise CustlensError("building the KPI cube failed: disk full")

    monkeypatch.setattr(ingest_module, "build_kpi_cube", broken)
    tables["orders"].append({**tables["orders"][0], "order_id": "O5"})
    with pytest.raises(CustlensError, match="disk full"):
        ingest(settings, exports(tables, "more"))
    assert _bytes(settings.lake_dir) == good["lake"] and _bytes(kpi_dir(settings)) == good["cube"]
    report = _report(settings)
    assert report["ok"] is False and "disk full" in report["error"] and report["lake_written"] is False


def test_a_run_failing_before_any_count_still_reports_ok_false(
    settings: Settings, tmp_path: Path, good: dict[str, dict[str, str]]
) -> None:
    assert _report(settings)["ok"] is True
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(CustlensError):
        ingest(settings, empty)
    report = _report(settings)
    assert report["ok"] is False and "orders" in report["error"]


def test_cli_refuses_a_truncated_export_in_one_message_and_takes_the_options(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows], monkeypatch: pytest.MonkeyPatch
) -> None:
    from custlens.cli import app

    monkeypatch.setenv("CUSTLENS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CUSTLENS_PII_SALT", "test-salt")
    config = ["--config", str(SAMPLE_CONFIG)]
    assert CliRunner().invoke(app, ["ingest", "--source", str(exports(tables, "good")), *config]).exit_code == 0
    cut = {name: rows for name, rows in tables.items() if name != "tickets"}
    cut["orders"] = tables["orders"][:1]
    source = str(exports(cut, "cut"))
    refused = CliRunner().invoke(app, ["ingest", "--source", source, *config])
    assert refused.exit_code == 2 and "orders: 4 -> 1 rows" in refused.output and "Traceback" not in refused.output
    meant = CliRunner().invoke(
        app, ["ingest", "--source", source, "--allow-shrink", "--drop-table", "tickets", *config]
    )
    assert meant.exit_code == 0, meant.output


# ---------------------------------------------------------------- plausible time


IMPLAUSIBLE = [
    ("1680-01-01 10:00:00", "before ingest.earliest 1990-01-01"),
    ("0001-01-01", "before ingest.earliest 1990-01-01"),
    ("2999-06-01 10:00:00", "after now + ingest.future_tolerance"),
    ("2062-05-01T10:00:00Z", "after now + ingest.future_tolerance"),
]


@pytest.mark.parametrize(("value", "why"), IMPLAUSIBLE)
def test_an_order_at_an_impossible_time_is_quarantined_as_implausible(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows], value: str, why: str
) -> None:
    tables["orders"][2]["ordered_at"] = value
    tables["orders"][1]["ordered_at"] = "2024-13-45 10:00:00"  # unreadable stays unreadable
    report = ingest(lenient, exports(tables))
    quarantined = pd.read_parquet(lenient.quarantine_dir / "orders.parquet").set_index("order_id")
    assert quarantined.loc["O3", "reason"] == "implausible_timestamp"
    assert f"ordered_at: implausible_timestamp ({value}): {why}" in quarantined.loc["O3", "reason_detail"]
    assert quarantined.loc["O2", "reason"] == "unparseable_timestamp"
    # and no later stage meets it: the lake's times are all within the window
    lake = pd.read_parquet(lenient.lake_dir / "orders.parquet")
    assert lake["ordered_at"].max() < pd.Timestamp.now(tz="UTC") and report.tables["orders"].accepted == 2


def test_the_window_is_configurable_and_a_spelled_tolerance_reads(
    exports: Callable[..., Path], lenient: Settings, tables: dict[str, Rows], tmp_path: Path
) -> None:
    tomorrow_noon = (datetime.now(UTC) + timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tables["orders"][2]["ordered_at"] = tomorrow_noon  # 30 hours ahead: beyond the default 1 day
    tables["marketing_spend"][0]["date"] = "1985-06-01"
    source = exports(tables)
    ingest(lenient, source)
    orders = pd.read_parquet(lenient.quarantine_dir / "orders.parquet")
    spend = pd.read_parquet(lenient.quarantine_dir / "marketing_spend.parquet")
    assert orders["reason"].tolist() == ["implausible_timestamp"]
    assert spend["reason"].tolist() == ["implausible_date"]
    config = tmp_path / "window.yaml"
    config.write_text("ingest:\n  earliest: 1980-01-01\n  future_tolerance: 36 hours\n", encoding="utf-8")
    window = load_settings(config).ingest
    assert window.future_tolerance == timedelta(hours=36)
    wide = with_ingest(lenient, earliest=window.earliest, future_tolerance=window.future_tolerance)
    ingest(wide, source)
    assert pd.read_parquet(wide.quarantine_dir / "orders.parquet").empty


def test_birth_dates_are_not_judged_by_the_business_window(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    tables["customers"][0]["birth_date"] = "1931-05-02"
    report = ingest(settings, exports(tables))
    assert report.tables["customers"].quarantined == 0
