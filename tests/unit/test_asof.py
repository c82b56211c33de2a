"""The as-of date comes from the data: its end when it is old, today when it is fresh; a snapshot
from an earlier setting is never taken for the latest."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.asof import Freshness, data_end, live_as_of, resolve_snapshot
from features.snapshot_reader import snapshot_cutoffs
from features.snapshots import build_default_snapshots, build_snapshots
from tests.unit.test_snapshots import customer, event, order, with_features, write_lake

LAST_ORDER = datetime(2011, 12, 9, 12, 50, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    write_lake(
        settings,
        customers=[customer("A", signup="2010-12-01 08:00"), customer("B", signup="2011-03-01 08:00")],
        orders=[order("A", "2010-12-01 08:26", "10"), order("B", "2011-12-09 12:50", "5")],
    )
    return settings


def test_the_data_end_is_the_last_event_of_any_kind(settings: Settings) -> None:
    assert data_end(settings) == LAST_ORDER
    # an engagement event after the last order moves it; a birth date would not
    write_lake(settings, engagement_events=[event("A", "2011-12-10 07:00", "page_view")])
    assert data_end(settings) == datetime(2011, 12, 10, 7, tzinfo=UTC)


def test_old_data_is_described_as_of_its_end_not_of_today(settings: Settings) -> None:
    live = live_as_of(settings, now=datetime(2026, 12, 1, 9, tzinfo=UTC))
    # the first cutoff whose snapshot holds every event: the day after the last event's
    assert (live.day, live.fresh) == (date(2011, 12, 10), False)
    assert "the end of the data" in live.why and "2011-12-09 12:50 UTC" in live.why
    assert "features.fresh_within_days = 2" in live.why


def test_fresh_data_is_described_as_of_today(settings: Settings) -> None:
    now = LAST_ORDER + timedelta(days=1, hours=20)
    live = live_as_of(settings, now=now)
    assert (live.day, live.fresh) == (now.date(), True)
    assert live.line().startswith(f"as of {now.date()} (today:")
    # just past the configured freshness it is the data end again
    assert not live_as_of(with_features(settings, fresh_within_days=1), now=now).fresh
    # and never the wall clock when include_today is off
    off = live_as_of(with_features(settings, include_today=False), now=now)
    assert (off.day, off.fresh) == (date(2011, 12, 10), False) and "include_today is false" in off.why


def test_a_snapshot_after_the_as_of_is_removed_by_the_default_build(settings: Settings) -> None:
    # given a wall-clock snapshot an earlier setting built for data that ended in 2011
    build_snapshots(settings, [date(2026, 12, 1)])
    # when the default build runs
    report = build_default_snapshots(settings)
    # then it is gone, the build says so, and the latest snapshot is the data end
    assert report.removed == (date(2026, 12, 1),)
    assert snapshot_cutoffs(settings)[-1] == date(2011, 12, 10)
    assert report.as_of is not None and report.as_of.startswith("as of 2011-12-10 (the end of the data")


def test_commands_use_the_as_of_snapshot_never_a_later_or_earlier_one(settings: Settings) -> None:
    # given only a stale wall-clock snapshot and an older one
    build_snapshots(settings, [date(2011, 11, 1), date(2026, 12, 1)])
    # then the default is refused, naming the as-of and the ignored snapshot
    refused = r"no feature snapshot at the as-of 2011-12-10 .*later snapshots \(2026-12-01\) are not used"
    with pytest.raises(CustlensError, match=refused):
        resolve_snapshot(settings, None, snapshot_cutoffs(settings))
    # an explicit --as-of is taken as asked
    assert resolve_snapshot(settings, date(2011, 11, 1), snapshot_cutoffs(settings)) == (
        date(2011, 11, 1),
        "as of 2011-11-01 (--as-of)",
    )
    build_snapshots(settings, [date(2011, 12, 10)])
    day, why = resolve_snapshot(settings, None, snapshot_cutoffs(settings))
    assert day == date(2011, 12, 10) and "the end of the data" in why
    # asked for by hand, the snapshot after the data end is used, and the line says what it is
    day, why = resolve_snapshot(settings, date(2026, 12, 1), snapshot_cutoffs(settings))
    assert day == date(2026, 12, 1) and "after the as-of the data gives, 2011-12-10" in why


def test_freshness_reads_the_data_end_again_when_the_lake_changes(settings: Settings) -> None:
    freshness = Freshness(settings, every_seconds=0)
    now = datetime(2011, 12, 20, tzinfo=UTC)
    assert freshness.data_end() == LAST_ORDER and not freshness.fresh(now)
    # a new ingest writes a later order
    orders = settings.lake_dir / "orders.parquet"
    write_lake(settings, orders=[order("A", "2010-12-01 08:26", "10"), order("B", "2011-12-19 10:00", "5")])
    os.utime(orders, (orders.stat().st_atime, orders.stat().st_mtime + 5))
    assert freshness.fresh(now)


def test_a_build_says_what_it_leaves_wrong(settings: Settings) -> None:
    from features.snapshots import snapshot_warnings

    # a snapshot asked for after the as-of is built, with a warning
    report = build_snapshots(settings, [date(2026, 12, 1)])
    (warning,) = snapshot_warnings(settings, report)
    assert warning.startswith("2026-12-01: after the as-of 2011-12-10")
