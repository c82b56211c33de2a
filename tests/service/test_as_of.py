"""Online equals batch at the same as-of, for every model output: on a stale lake (the shared
project's data ends in 2026-10, long before the wall clock) the service answers as of the data end
whatever the time of the request; on a fresh lake (data up to today) it counts recency to the
request's time, and at the snapshot's own instant it gives the batch job's numbers."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from custlens.settings import Settings
from features.asof import live_as_of
from features.lake.tables import cutoff_instant
from features.snapshot_reader import load_packed_snapshot
from serving.runtime import Asked, Runtime, score
from serving.sinks import SCORES_SCHEMA
from tests.support.sinks import score_into_parquet
from tests.support.trained import scoring_copy, trained_project

# The batch columns that are model outputs (the rest say who, when and which versions)
OUTPUTS = [
    name
    for name in SCORES_SCHEMA.names
    if name not in ("customer_id", "crm_customer_id", "as_of", "scoring_run_id") and not name.endswith("_version")
]
SAMPLE = 300


def batch_scores(settings: Settings, folder: Path) -> tuple[date, pd.DataFrame]:
    report, scores = score_into_parquet(settings, folder)
    return report.as_of, scores.set_index("customer_id")


def online_answer(settings: Settings, ids: list[str], now: datetime | None) -> dict[str, Any]:
    runtime = Runtime(settings)
    loaded = runtime.load()
    return score(loaded, [Asked(customer_id, None, None) for customer_id in ids], reasons=False, now=now)


def assert_every_output_equal(batch: pd.DataFrame, answer: dict[str, Any]) -> None:
    checked = 0
    for result in answer["results"]:
        row = batch.loc[result["customer_id"]]
        for name in OUTPUTS:
            expected, got = row[name], result[name]
            if expected is None or (isinstance(expected, float) and math.isnan(expected)) or pd.isna(expected):
                assert got is None, (result["customer_id"], name, got)
            elif isinstance(expected, date):
                assert got == expected.isoformat(), (result["customer_id"], name)
            else:
                assert got == expected, (result["customer_id"], name, got, expected)
            checked += 1
    assert checked == len(answer["results"]) * len(OUTPUTS)


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    return scoring_copy(trained_project(tmp_path_factory, worker_id), tmp_path_factory.mktemp("stale-mlruns"))


@pytest.fixture(scope="module")
def fresh(stale: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A small lake whose data runs up to today, scored with the shared project's champions."""
    from features.lake.ingest import ingest
    from features.online import materialize
    from features.sample.generate import generate
    from features.snapshots import build_default_snapshots
    from features.store import apply_definitions

    settings = stale.model_copy(update={
        "data_dir": tmp_path_factory.mktemp("fresh") / "data",
        "features": stale.features.model_copy(update={"max_cutoffs": 2}),
    })  # fmt: skip
    today = datetime.now(UTC).date()
    generate(out_dir=settings.sample_dir, customers=600, seed=3, start=today - timedelta(days=400), end=today,
             dirty_rate=0.0, file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    build_default_snapshots(settings)
    apply_definitions(settings)
    materialize(settings)
    return settings


def test_a_stale_lake_is_scored_and_served_as_of_its_end(stale: Settings, tmp_path: Path) -> None:
    # given data that ended on 2026-10-31, long before the wall clock
    live = live_as_of(stale)
    assert not live.fresh and live.day == date(2026, 11, 1)
    # when the batch job scores with defaults and the service answers now
    as_of, batch = batch_scores(stale, tmp_path)
    ids = batch.index[:: max(1, len(batch) // SAMPLE)].tolist()
    answer = online_answer(stale, ids, now=None)
    # then both are as of the data end, and every output of every customer is the same
    assert as_of == live.day
    assert answer["as_of"] == cutoff_instant(live.day).isoformat()
    assert {r["feature_snapshot"] for r in answer["results"]} == {"2026-11-01"}
    assert {r["as_of"] for r in answer["results"]} == {answer["as_of"]}
    assert_every_output_equal(batch, answer)
    # a request a year later changes nothing: there is no newer data to count days to
    later = online_answer(stale, ids[:20], now=datetime.now(UTC) + timedelta(days=365))
    assert later["results"] == answer["results"][:20]


def test_a_fresh_lake_counts_recency_to_the_request_and_equals_batch_at_its_snapshot(
    fresh: Settings, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    live = live_as_of(fresh)
    assert live.fresh and live.day == today
    as_of, batch = batch_scores(fresh, tmp_path)
    assert as_of == today
    ids = load_packed_snapshot(fresh, today).customer_ids[:SAMPLE]
    # at the snapshot's instant the service gives the batch numbers, output for output
    at_snapshot = online_answer(fresh, ids, now=cutoff_instant(today))
    assert at_snapshot["as_of"] == cutoff_instant(today).isoformat()
    assert_every_output_equal(batch, at_snapshot)
    # later in the day it counts recency to the request: the answer says so and moves
    now = cutoff_instant(today) + timedelta(hours=20)
    answer = online_answer(fresh, ids, now=now)
    assert answer["as_of"] == now.isoformat()
    assert {r["feature_snapshot"] for r in answer["results"]} == {today.isoformat()}
    moved = [r["churn_probability"] for r in answer["results"]] != [
        r["churn_probability"] for r in at_snapshot["results"]
    ]
    assert moved
