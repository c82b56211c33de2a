"""The data layer end to end on a few thousand generated customers: generate -> ingest -> lake."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custlens.settings import Settings, load_settings
from features.lake.contracts import CONTRACTS
from features.lake.ingest import ingest
from features.lake.tables import crosswalk_path, read_table_sql, table_path
from features.sample.generate import DEFAULT_END, generate
from features.sample.truth import pairwise_merge_quality
from tests.support.business import SAMPLE_CONFIG

CUSTOMERS = 3_000


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    base = load_settings(SAMPLE_CONFIG)
    return base.model_copy(update={"data_dir": data_dir})


@pytest.fixture(scope="module")
def sample(settings: Settings) -> Path:
    generate(
        out_dir=settings.sample_dir,
        customers=CUSTOMERS,
        seed=11,
        start=None,
        end=DEFAULT_END,
        dirty_rate=0.02,
        file_format="csv",
    )
    return settings.sample_dir


@pytest.fixture(scope="module")
def report(settings: Settings, sample: Path) -> dict:
    ingest(settings, sample)
    return json.loads((settings.reports_dir / "ingest_report.json").read_text(encoding="utf-8"))


def _quarantine(settings: Settings, table: str) -> pd.DataFrame:
    path = settings.quarantine_dir / f"{table}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["reason"])


def _key_of(table: str, frame: pd.DataFrame) -> pd.Series:
    if table == "customers":
        return frame["source"].astype(str) + "|" + frame["source_customer_id"].astype(str)
    if table == "marketing_spend":
        return frame["date"].astype(str) + "|" + frame["channel"].astype(str)
    row_id = CONTRACTS[table].row_id
    assert row_id is not None
    return frame[row_id].astype(str)


def test_counts_reconcile_for_every_table(report: dict) -> None:
    assert set(report["tables"]) == set(CONTRACTS)
    for table, figures in report["tables"].items():
        assert figures["present"], f"the generator writes every table, {table} too"
        assert figures["rows_in"] == figures["accepted"] + figures["quarantined"] + figures["duplicates"], table
        assert figures["quarantined"] == sum(figures["quarantined_by_reason"].values()), table


def test_every_injected_bad_row_is_quarantined_with_its_reason(settings: Settings, sample: Path, report: dict) -> None:
    injected = pd.read_parquet(sample / "truth" / "dirty_rows.parquet")
    bad = injected[injected["kind"] != "exact_duplicate"]
    assert set(bad["kind"]) >= {
        "unparseable_timestamp",
        "negative_amount",
        "score_out_of_range",
        "first_response_before_opened",
        "unknown_customer",
        "duplicate_id_conflict",
    }
    for table, expected in bad.groupby("table"):
        quarantined = _quarantine(settings, str(table))
        found = pd.DataFrame({"row_key": _key_of(str(table), quarantined), "reason": quarantined["reason"]})
        merged = expected.merge(found, on="row_key", how="left")
        # a duplicated id has two rows with the key: the kept first copy is not in quarantine
        hit = (merged["reason"] == merged["kind"]).groupby([merged["row_key"], merged["kind"]]).any()
        missing = hit[~hit]
        assert missing.empty, f"{table}: injected bad rows not quarantined with their reason: {missing.index[:5]}"


def test_exact_duplicates_are_removed_and_counted(sample: Path, report: dict) -> None:
    injected = pd.read_parquet(sample / "truth" / "dirty_rows.parquet")
    exact = injected[injected["kind"] == "exact_duplicate"]
    assert not exact.empty
    for table, duplicates in exact.groupby("table"):
        assert report["tables"][table]["duplicates"] >= len(duplicates), table


def test_identity_merge_is_precise_and_complete(settings: Settings, sample: Path, report: dict) -> None:
    predicted = pd.read_parquet(crosswalk_path(settings))
    truth = pd.read_parquet(sample / "truth" / "identities.parquet")
    precision, recall = pairwise_merge_quality(predicted, truth)
    print(f"identity merge on {CUSTOMERS} people: pairwise precision {precision:.4f}, recall {recall:.4f}")
    assert precision >= 0.99
    assert recall >= 0.95


def test_no_raw_email_or_phone_anywhere_in_the_lake(settings: Settings, sample: Path, report: dict) -> None:
    raw = pd.read_csv(sample / "customers.csv", dtype=str, keep_default_na=False)
    contacts = {value.strip() for value in pd.concat([raw["email"], raw["phone"]]) if value.strip()}
    contacts |= {value.strip().lower() for value in contacts}
    digits = {"".join(ch for ch in value if ch.isdigit()) for value in raw["phone"] if value.strip()}
    contacts |= {value for value in digits if len(value) >= 8}
    assert len(contacts) > CUSTOMERS  # emails and phones, as written and normalized
    checked = set()
    for path in sorted(settings.lake_dir.glob("*.parquet")):
        table = pq.read_table(path)
        for column in table.column_names:
            if not pa.types.is_string(table.schema.field(column).type):  # numbers, instants: no contact data
                continue
            values = set(table.column(column).drop_null().to_pylist())
            leaked = values & contacts
            assert not leaked, f"{path.name}.{column} holds raw contact data, e.g. {sorted(leaked)[:3]}"
            checked.add(f"{path.stem}.{column}")
    assert {"customers.email_hash", "customers.phone_hash", "crosswalk.source_customer_id"} <= checked


def test_every_lake_row_has_a_known_customer(settings: Settings, report: dict) -> None:
    con = duckdb.connect()
    customers = table_path(settings, "customers")
    for table in ("orders", "engagement_events", "surveys", "tickets"):
        path = table_path(settings, table)
        assert path.exists(), f"the generator writes {table}"
        counts = con.execute(
            f"""
            SELECT count(*), count(*) FILTER (WHERE c.customer_id IS NULL)
            FROM {read_table_sql(path)} AS t LEFT JOIN {read_table_sql(customers)} AS c USING (customer_id)
            """
        ).fetchone()
        assert counts is not None and counts[0] > 0 and counts[1] == 0, (table, counts)


def test_ingesting_the_same_input_twice_gives_the_same_lake(settings: Settings, sample: Path, report: dict) -> None:
    before = {path.name: pd.read_parquet(path) for path in sorted(settings.lake_dir.glob("*.parquet"))}
    ingest(settings, sample)
    after = {path.name: pd.read_parquet(path) for path in sorted(settings.lake_dir.glob("*.parquet"))}
    assert before.keys() == after.keys() == {table_path(settings, table).name for table in (*CONTRACTS, "crosswalk")}
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)
