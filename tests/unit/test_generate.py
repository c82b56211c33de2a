"""The sample-data generator: same seed same bytes, the contract's tables, bad rows exactly as
recorded, learnable signal in the behaviour, and the pairwise merge score."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from custlens.errors import CustlensError
from features.lake.contracts import CONTRACTS, EVENT_TYPES, ORDER_STATUSES
from features.sample.dirt import DEFECTS, EXACT_DUPLICATE
from features.sample.formats import MAX_CUSTOMERS, source_customer_ids
from features.sample.generate import DEFAULT_END, generate
from features.sample.truth import pairwise_merge_quality
from features.sample.world import ENTRY_ACCOUNT_WEIGHT, OTHER_ACCOUNT_WEIGHT, SOURCES

PEOPLE = 2_000
CHUNK = 700  # several chunks, so appending across chunks is exercised


def _generate(out_dir: Path, **changes: object) -> Path:
    arguments: dict = dict(out_dir=out_dir, customers=300, seed=7, start=None, end=DEFAULT_END, dirty_rate=0.0,
                           file_format="csv", chunk_customers=120)  # fmt: skip
    generate(**(arguments | changes))
    return out_dir


def _read(folder: Path, table: str) -> pd.DataFrame:
    csv = folder / f"{table}.csv"
    if csv.exists():
        return pd.read_csv(csv, dtype=str, keep_default_na=False)
    return pd.read_parquet(folder / f"{table}.parquet")


def _instants(frame: pd.DataFrame, column: str) -> pd.Series:
    """A timestamp column written each source's way as UTC instants (pos: local time, no offset)."""
    pos = frame["source"] == "pos"
    local = pd.to_datetime(frame.loc[pos, column]).dt.tz_localize("Asia/Ho_Chi_Minh").dt.tz_convert("UTC")
    return pd.concat([pd.to_datetime(frame.loc[~pos, column], format="ISO8601", utc=True), local]).sort_index()


def _row_key(table: str, frame: pd.DataFrame) -> pd.Series:
    if table == "customers":
        return frame["source"] + "|" + frame["source_customer_id"]
    if table == "marketing_spend":
        return frame["date"] + "|" + frame["channel"]
    return frame[CONTRACTS[table].row_id]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    generate(out, PEOPLE, 3, None, DEFAULT_END, 0.0, "parquet", chunk_customers=CHUNK)
    return out


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dirty")
    generate(out, PEOPLE, 4, None, DEFAULT_END, 0.05, "csv", chunk_customers=CHUNK)
    return out


@pytest.fixture(scope="module")
def truth(clean: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(clean / "truth" / f"{name}.parquet") for name in ("persons", "identities")}


# ---------------------------------------------------------------- files


def test_same_seed_and_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    for file_format in ("csv", "parquet"):
        # given two runs with the same arguments
        first = _generate(tmp_path / f"a-{file_format}", file_format=file_format, dirty_rate=0.05)
        second = _generate(tmp_path / f"b-{file_format}", file_format=file_format, dirty_rate=0.05)
        # then every file has the same bytes
        names = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
        assert len(names) == 9
        for name in names:
            assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_different_seed_gives_different_data(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a", seed=1)
    second = _generate(tmp_path / "b", seed=2)
    for table in ("customers", "orders", "engagement_events"):
        assert (first / f"{table}.csv").read_bytes() != (second / f"{table}.csv").read_bytes(), table


def test_every_table_has_the_contract_columns_in_order_as_strings(clean: Path, dirty: Path) -> None:
    for table, contract in CONTRACTS.items():
        schema = pq.read_schema(clean / f"{table}.parquet")
        assert tuple(schema.names) == contract.column_names, table
        assert all(str(field.type) == "string" for field in schema), table
        header = (dirty / f"{table}.csv").read_text(encoding="utf-8").splitlines()[0]
        assert tuple(name.strip('"') for name in header.split(",")) == contract.column_names, table
        assert len(_read(clean, table)) > 0, table


def test_start_defaults_to_three_years_before_end(clean: Path) -> None:
    days = pd.to_datetime(_read(clean, "marketing_spend")["date"])
    assert days.min().date() == date(2023, 10, 31)
    assert days.max().date() == DEFAULT_END


def test_each_source_writes_timestamps_its_own_way(clean: Path) -> None:
    customers = _read(clean, "customers")
    patterns = {
        "pos": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        "crm": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+07:00$",
        "web": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        "app": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        "email": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
    }
    for source, pattern in patterns.items():
        written = customers.loc[customers["source"] == source, "signup_at"]
        assert len(written) > 0 and written.str.match(pattern).all(), source


def test_the_same_phone_is_written_in_different_ways(clean: Path) -> None:
    phones = _read(clean, "customers")["phone"]
    phones = phones[phones != ""]
    assert phones.str.startswith("+84 ").any()
    assert phones.str.match(r"^84\d{9}$").any()
    assert phones.str.contains("-").any()
    assert phones.str.match(r"^0\d{3} \d{3} \d{3}$").any()


def test_source_ids_are_distinct_for_distinct_people() -> None:
    # given the numbers of 200,000 people and a few far beyond (as unknown-customer ids use)
    numbers = np.concatenate([np.arange(200_000), MAX_CUSTOMERS + np.arange(0, 10**7, 97)])
    for source in range(len(SOURCES)):
        ids = source_customer_ids(source, numbers).to_pandas()
        assert ids.is_unique, SOURCES[source]


# ---------------------------------------------------------------- bad rows


def test_no_dirty_rate_means_no_bad_rows_and_unique_ids(clean: Path) -> None:
    assert pd.read_parquet(clean / "truth" / "dirty_rows.parquet").empty
    customers = _read(clean, "customers")
    known = set(_row_key("customers", customers))
    for table in CONTRACTS:
        frame = _read(clean, table)
        assert not _row_key(table, frame).duplicated().any(), table
    orders = _read(clean, "orders")
    assert orders["status"].isin(ORDER_STATUSES).all()
    assert (orders["net_amount"].astype(int) >= 0).all()
    events = _read(clean, "engagement_events")
    assert events["event_type"].isin(EVENT_TYPES).all()
    for table in ("orders", "engagement_events"):
        frame = _read(clean, table)
        assert set(frame["source"] + "|" + frame["source_customer_id"]) <= known, table
    for table in ("surveys", "tickets"):
        assert set("crm|" + _read(clean, table)["source_customer_id"]) <= known, table


def test_dirty_rows_cover_every_kind_and_each_exists_in_its_file(dirty: Path) -> None:
    # given a sample with 5% bad rows
    recorded = pd.read_parquet(dirty / "truth" / "dirty_rows.parquet")
    # then every defect of every table was injected, plus exact duplicates
    for table, kinds in DEFECTS.items():
        got = set(recorded.loc[recorded["table"] == table, "kind"])
        assert got == {*kinds, EXACT_DUPLICATE}, table
    # and each recorded row is in the file with that key
    for table, rows in recorded.groupby("table"):
        frame = _read(dirty, str(table))
        keys = _row_key(str(table), frame)
        assert set(rows["row_key"]) <= set(keys), table
        share = (rows["kind"] != EXACT_DUPLICATE).sum() / len(frame)
        assert 0.02 < share < 0.08, table


def test_duplicated_ids_come_after_the_original(dirty: Path) -> None:
    recorded = pd.read_parquet(dirty / "truth" / "dirty_rows.parquet")
    orders = _read(dirty, "orders")
    for kind in ("duplicate_id_conflict", EXACT_DUPLICATE):
        ids = recorded.loc[(recorded["table"] == "orders") & (recorded["kind"] == kind), "row_key"]
        copies = orders[orders["order_id"].isin(ids)]
        assert (copies.groupby("order_id").size() == 2).all()
        first, later = copies.drop_duplicates("order_id"), copies[copies.duplicated("order_id")]
        same = (first.set_index("order_id").sort_index() == later.set_index("order_id").sort_index()).all(axis=1)
        assert same.all() if kind == EXACT_DUPLICATE else not same.any()


def test_bad_values_look_like_their_kind(dirty: Path) -> None:
    recorded = pd.read_parquet(dirty / "truth" / "dirty_rows.parquet")

    def rows(table: str, kind: str) -> pd.DataFrame:
        frame = _read(dirty, table)
        keys = recorded.loc[(recorded["table"] == table) & (recorded["kind"] == kind), "row_key"]
        return frame[_row_key(table, frame).isin(keys)]

    assert rows("orders", "negative_amount")["net_amount"].str.startswith("-").all()
    assert rows("orders", "unparseable_number")["net_amount"].str.contains("O").all()
    assert not rows("orders", "unknown_status")["status"].isin(ORDER_STATUSES).any()
    assert not rows("engagement_events", "unknown_event_type")["event_type"].isin(EVENT_TYPES).any()
    surveys = rows("surveys", "score_out_of_range")
    assert surveys["score"].isin(["-1", "11", "0", "6"]).all()
    tickets = rows("tickets", "first_response_before_opened")
    opened = pd.to_datetime(tickets["opened_at"], format="ISO8601", utc=True)
    assert (pd.to_datetime(tickets["first_response_at"], format="ISO8601", utc=True) < opened).all()
    known = set(_row_key("customers", _read(dirty, "customers")))
    unknown = rows("orders", "unknown_customer")
    assert not (unknown["source"] + "|" + unknown["source_customer_id"]).isin(known).any()


def test_dirty_rows_name_the_column_made_bad(dirty: Path) -> None:
    recorded = pd.read_parquet(dirty / "truth" / "dirty_rows.parquet")
    exact = recorded["kind"] == EXACT_DUPLICATE
    assert recorded.loc[exact, "column"].isna().all()
    for (table, kind), rows in recorded[~exact].groupby(["table", "kind"]):
        # one column per table and kind, a column of the export
        (column,) = rows["column"].unique()
        assert column in CONTRACTS[str(table)].column_names, (table, kind)
        frame = _read(dirty, str(table))
        made_bad = frame[_row_key(str(table), frame).isin(rows["row_key"])]
        if kind == "missing_value":
            assert (made_bad[column] == "").all(), table
        if kind == "duplicate_id_conflict":
            # the copy differs from the original in that column only
            versions = made_bad.groupby(_row_key(str(table), made_bad))
            changed = (versions.nunique() > 1).any()
            assert set(changed[changed].index) == {column}, table


# ---------------------------------------------------------------- truth and signal


def test_truth_covers_every_person_and_source_id(clean: Path, truth: dict[str, pd.DataFrame]) -> None:
    persons, identities = truth["persons"], truth["identities"]
    assert len(persons) == PEOPLE and persons["person_id"].is_unique
    assert persons["alive_at_end"].equals(persons["dropout_at"].isna())
    customers = _read(clean, "customers")
    assert len(identities) == len(customers)
    assert set(_row_key("customers", identities)) == set(_row_key("customers", customers))
    assert set(identities["person_id"]) <= set(persons["person_id"])


def test_truth_tells_when_each_account_opened_and_how_often_it_carries_orders(
    clean: Path, truth: dict[str, pd.DataFrame]
) -> None:
    persons, identities = truth["persons"], truth["identities"]
    customers = _read(clean, "customers")
    # opened_at is the signup_at each system wrote
    signup = _instants(customers, "signup_at").set_axis(_row_key("customers", customers))
    opened = identities.set_index(_row_key("customers", identities))["opened_at"]
    assert (signup.reindex(opened.index) == opened).all()
    # crm and email records carry no orders; of the others, the one a person signed up with weighs most
    ordering = identities["source"].isin(["pos", "web", "app"])
    assert (identities.loc[~ordering, "order_weight"] == 0).all()
    assert set(identities.loc[ordering, "order_weight"]) == {ENTRY_ACCOUNT_WEIGHT, OTHER_ACCOUNT_WEIGHT}
    entry = identities[identities["order_weight"] == ENTRY_ACCOUNT_WEIGHT]
    assert entry["person_id"].is_unique and set(entry["person_id"]) == set(persons["person_id"])
    at_signup = entry.merge(persons[["person_id", "signup_at"]], on="person_id")
    assert (at_signup["opened_at"] == at_signup["signup_at"]).all()
    # and every order sits on an account with a weight, open by then
    orders = _read(clean, "orders").merge(identities, on=["source", "source_customer_id"])
    assert (orders["order_weight"] > 0).all()
    assert (_instants(orders, "ordered_at") >= orders["opened_at"]).all()


def test_sessions_fade_in_the_last_60_days_before_dropout(clean: Path, truth: dict[str, pd.DataFrame]) -> None:
    persons, identities = truth["persons"], truth["identities"]
    gone = persons[
        persons["dropout_at"].notna() & (persons["dropout_at"] - persons["signup_at"] > pd.Timedelta(days=180))
    ]
    events = _read(clean, "engagement_events")
    sessions = events[events["event_type"] == "session_start"].merge(identities, on=["source", "source_customer_id"])
    sessions = sessions.merge(gone[["person_id", "dropout_at"]], on="person_id")
    when = pd.to_datetime(sessions["occurred_at"], format="ISO8601", utc=True)
    last_60 = (when >= sessions["dropout_at"] - pd.Timedelta(days=60)) & (when < sessions["dropout_at"])
    earlier = when < sessions["dropout_at"] - pd.Timedelta(days=60)
    earlier_days = ((gone["dropout_at"] - gone["signup_at"]).dt.days - 60).sum()
    late_rate, early_rate = last_60.sum() / (60 * len(gone)), earlier.sum() / earlier_days
    assert late_rate < 0.85 * early_rate


def test_deal_seekers_buy_with_discounts_more_often(clean: Path, truth: dict[str, pd.DataFrame]) -> None:
    orders = _read(clean, "orders").merge(truth["identities"], on=["source", "source_customer_id"])
    orders = orders.merge(truth["persons"][["person_id", "is_deal_seeker"]], on="person_id")
    discounted = (orders["discount_amount"].astype(int) > 0).groupby(orders["is_deal_seeker"]).mean()
    assert discounted[True] > discounted[False] + 0.3
    gross = orders["gross_amount"].astype(int)
    assert (gross == orders["net_amount"].astype(int) + orders["discount_amount"].astype(int)).all()


def test_unhappy_people_give_lower_nps(clean: Path, truth: dict[str, pd.DataFrame]) -> None:
    surveys = _read(clean, "surveys").assign(source="crm")
    nps = surveys[surveys["survey_type"] == "nps"].merge(truth["identities"], on=["source", "source_customer_id"])
    nps = nps.merge(truth["persons"][["person_id", "latent_satisfaction"]], on="person_id")
    score = nps["score"].astype(int)
    unhappy = score[nps["latent_satisfaction"] < -0.5].mean()
    happy = score[nps["latent_satisfaction"] > 0.5].mean()
    assert happy > unhappy + 1.5


def test_most_online_orders_follow_a_session_the_same_day(clean: Path) -> None:
    orders = _read(clean, "orders")
    online = orders[orders["source"].isin(["web", "app"])]
    events = _read(clean, "engagement_events")
    sessions = events[events["event_type"] == "session_start"]
    ordered = pd.to_datetime(online["ordered_at"], format="ISO8601", utc=True)
    started = pd.to_datetime(sessions["occurred_at"], format="ISO8601", utc=True)
    pairs = online.assign(ordered=ordered, day=ordered.dt.date).merge(
        sessions.assign(started=started, day=started.dt.date), on=["source", "source_customer_id", "day"]
    )
    preceded = set(pairs.loc[pairs["started"] < pairs["ordered"], "order_id"])
    assert len(preceded) / len(online) > 0.75


def test_engagement_volume_stays_bounded(clean: Path) -> None:
    rows_per_person = len(_read(clean, "engagement_events")) / PEOPLE
    assert 15 < rows_per_person < 45


# ---------------------------------------------------------------- the merge score


def _truth_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["crm", "pos", "web", "crm", "app"],
            "source_customer_id": ["1", "2", "3", "4", "5"],
            "person_id": [1, 1, 1, 2, 2],
        }
    )


def test_a_perfect_merge_scores_one_and_one() -> None:
    truth = _truth_frame()
    predicted = truth.assign(customer_id=truth["person_id"].map({1: "C-a", 2: "C-b"})).drop(columns="person_id")
    assert pairwise_merge_quality(predicted, truth) == (1.0, 1.0)


def test_a_false_merge_lowers_precision_only() -> None:
    # given everyone merged into one customer: 10 predicted pairs, of which 3 + 1 are true
    truth = _truth_frame()
    predicted = truth.drop(columns="person_id").assign(customer_id="C-all")
    assert pairwise_merge_quality(predicted, truth) == (pytest.approx(0.4), 1.0)


def test_a_missed_link_lowers_recall_only() -> None:
    # given the web id left on its own: 2 of the 4 true pairs found
    truth = _truth_frame()
    predicted = truth.drop(columns="person_id").assign(customer_id=["C-a", "C-a", "C-x", "C-b", "C-b"])
    assert pairwise_merge_quality(predicted, truth) == (1.0, pytest.approx(0.5))


def test_source_ids_only_one_side_knows_are_left_out() -> None:
    truth = _truth_frame()
    predicted = truth.iloc[:2].drop(columns="person_id").assign(customer_id="C-a")
    assert pairwise_merge_quality(predicted, truth) == (1.0, 1.0)


# ---------------------------------------------------------------- arguments and output


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": date(2026, 11, 1)}, "must be before end"),
        ({"start": DEFAULT_END}, "must be before end"),
        ({"customers": 0}, "customers must be between"),
        ({"dirty_rate": 0.6}, "dirty_rate must be between"),
        ({"seed": -1}, "seed must be"),
        ({"chunk_customers": 0}, "chunk_customers"),
        ({"file_format": "xlsx"}, "file format"),
    ],
)
def test_bad_arguments_raise_a_clear_error(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(CustlensError, match=message):
        _generate(tmp_path / "out", **changes)


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(CustlensError, match="is a file"):
        _generate(target)


def test_prints_nothing_without_a_console_and_summarizes_with_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = generate(tmp_path / "quiet", 50, 1, None, DEFAULT_END, 0.0, "csv")
    assert capsys.readouterr() == ("", "")
    assert summary.rows["customers"] == len(_read(tmp_path / "quiet", "customers"))
    assert set(summary.truth_paths) == {"persons", "identities", "dirty_rows"}
    shown = io.StringIO()
    console = Console(file=shown, width=120)
    generate(tmp_path / "loud", 50, 1, None, DEFAULT_END, 0.0, "csv", console=console)
    console.print(summary.render())
    assert "engagement_events" in shown.getvalue() and str(tmp_path / "quiet") in shown.getvalue()


def test_switching_format_removes_the_stale_export(tmp_path: Path) -> None:
    out = _generate(tmp_path / "out", file_format="csv")
    _generate(out, file_format="parquet")
    assert not list(out.glob("*.csv")) and len(list(out.glob("*.parquet"))) == 6
