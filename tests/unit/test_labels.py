"""Labels, splits and metrics on tiny hand-made data: every window edge and definition checked."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custlens.errors import CustlensError
from custlens.settings import Settings
from features import layout
from features.catalog import FAMILIES
from features.lake.tables import lake_end
from training.evaluation import classifier_metrics, normalized_gini, value_metrics
from training.frames import CannotTrain, grid_cutoffs, is_validation_customer, longest_window, model_split, plan_split
from training.labels import compute_labels
from training.specs import SPECS

CUTOFF = date(2025, 1, 1)


def write_orders(settings: Settings, rows: list[tuple[str, str, str, str]]) -> None:
    """(customer_id, ordered_at 'YYYY-MM-DD HH:MM', status, net_amount) rows as the lake's orders."""
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "ordered_at": pa.array([datetime.fromisoformat(r[1]).replace(tzinfo=UTC) for r in rows],
                                   pa.timestamp("us", "UTC")),
            "status": [r[2] for r in rows],
            "net_amount": pa.array([Decimal(r[3]) for r in rows], pa.decimal128(18, 2)),
        }
    )  # fmt: skip
    pq.write_table(table, settings.lake_dir / "orders.parquet")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def labels_of(settings: Settings, customer_id: str) -> dict:
    frame = compute_labels(settings, [CUTOFF])
    return frame.set_index("customer_id").loc[customer_id].to_dict()


def test_active_customer_without_order_in_90_days_has_churned(settings: Settings) -> None:
    write_orders(
        settings, [("A", "2024-06-01 10:00", "completed", "100"), ("A", "2025-04-01 00:00", "completed", "50")]
    )

    labels = labels_of(settings, "A")

    assert labels["active"] and labels["churned"]
    assert not labels["repurchased"]


def test_order_on_the_last_day_of_the_window_is_not_churn(settings: Settings) -> None:
    write_orders(settings, [("A", "2024-12-31 23:00", "completed", "100"), ("A", "2025-03-31 23:59", "completed", "5")])

    assert labels_of(settings, "A")["churned"] is False


def test_order_exactly_at_the_cutoff_counts_after_it(settings: Settings) -> None:
    write_orders(
        settings, [("A", "2024-12-01 10:00", "completed", "100"), ("A", "2025-01-01 00:00", "completed", "70")]
    )

    labels = labels_of(settings, "A")

    assert labels["repurchased"] and not labels["churned"]
    assert labels["days_to_next_order"] == 0.0
    assert labels["revenue_next"] == 70.0


def test_customer_inactive_for_a_year_has_no_churn_label(settings: Settings) -> None:
    write_orders(settings, [("A", "2023-06-01 10:00", "completed", "100")])

    labels = labels_of(settings, "A")

    assert not labels["active"]
    assert labels["churned"] is None or np.isnan(labels["churned"])  # undefined, not False


def test_returned_and_cancelled_orders_earn_nothing_and_are_not_purchases(settings: Settings) -> None:
    write_orders(settings, [
        ("A", "2024-12-01 10:00", "completed", "100"),
        ("A", "2025-01-10 10:00", "returned", "300"),
        ("A", "2025-01-11 10:00", "cancelled", "300"),
        ("A", "2025-06-01 10:00", "completed", "40"),
    ])  # fmt: skip

    labels = labels_of(settings, "A")

    assert not labels["repurchased"] and labels["churned"]
    assert labels["revenue_next"] == 40.0
    assert labels["days_to_next_order"] == pytest.approx(151 + 10 / 24)


def test_a_fully_refunded_customer_has_a_clv_label_of_zero(settings: Settings) -> None:
    # given a customer who bought before the cutoff, bought again in the window and got it all back
    write_orders(settings, [
        ("A", "2024-12-01 10:00", "completed", "100"),
        ("A", "2025-02-01 10:00", "completed", "250.50"),
        ("A", "2025-02-09 10:00", "returned", "-250.50"),
    ])  # fmt: skip
    # when
    labels = labels_of(settings, "A")
    # then the window's net revenue is 0, and the purchase still counts as one
    assert labels["revenue_next"] == 0.0
    assert labels["days_to_next_order"] == pytest.approx(31 + 10 / 24)


def test_a_refund_is_not_a_purchase_and_a_label_is_negative_when_refunds_exceed_purchases(
    settings: Settings,
) -> None:
    # given an order before the cutoff, refunded in the window, and nothing bought since
    write_orders(settings, [
        ("A", "2024-12-20 10:00", "completed", "80"),
        ("A", "2025-01-05 10:00", "returned", "-80"),
    ])  # fmt: skip
    # when
    labels = labels_of(settings, "A")
    # then the refund is no purchase (not repurchased, churned, no next order) and CLV is net: -80
    assert not labels["repurchased"] and labels["churned"]
    assert pd.isna(labels["next_order_at"])
    assert labels["revenue_next"] == -80.0


def test_a_refund_alone_before_the_cutoff_makes_no_customer_to_label(settings: Settings) -> None:
    write_orders(settings, [("A", "2024-12-20 10:00", "returned", "-80"), ("B", "2024-12-01 10:00", "completed", "1")])

    frame = compute_labels(settings, [CUTOFF])

    assert list(frame["customer_id"]) == ["B"]


def test_the_clv_fit_floors_negative_net_labels_at_zero_and_the_test_keeps_them() -> None:
    rows = pd.DataFrame({"revenue_next": [-80.0, 0.0, 120.5]})

    assert SPECS["clv"].fit_targets(rows).tolist() == [0.0, 0.0, 120.5]
    assert SPECS["clv"].labels(rows).tolist() == [-80.0, 0.0, 120.5]


def test_customer_who_never_bought_before_the_cutoff_gets_no_row(settings: Settings) -> None:
    write_orders(settings, [("A", "2024-12-01 10:00", "completed", "1"), ("B", "2025-02-01 10:00", "completed", "1")])

    frame = compute_labels(settings, [CUTOFF])

    assert list(frame["customer_id"]) == ["A"]


def test_lake_end_is_the_day_after_the_last_order(settings: Settings) -> None:
    write_orders(settings, [("A", "2025-03-14 18:00", "cancelled", "1")])

    assert lake_end(settings) == datetime(2025, 3, 15, tzinfo=UTC)


# -- splits ---------------------------------------------------------------------------------------


MONTHS = [date(2024, m, 1) for m in range(1, 13)] + [date(2025, m, 1) for m in range(1, 13)]


def test_test_cutoff_is_the_last_with_a_complete_window_and_nothing_trains_past_it() -> None:
    end = datetime(2025, 12, 1, tzinfo=UTC)

    split = plan_split(MONTHS, 90, end, train_cutoffs=4)

    assert split.test == date(2025, 9, 1)  # 2025-09-01 + 90 days <= 2025-12-01 < 2025-10-01 + 90 days
    assert split.validation == (date(2025, 6, 1),)
    assert split.train == (date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1))
    assert all((split.test - c).days >= 90 for c in (*split.train, *split.validation))
    assert all((split.validation[0] - c).days >= 90 for c in split.train)  # no training label window overlaps


def test_validation_over_several_cutoffs_trains_on_the_same_cutoffs_as_one() -> None:
    end = datetime(2025, 12, 1, tzinfo=UTC)

    split = plan_split(MONTHS, 90, end, train_cutoffs=4, validation_cutoffs=3)

    assert split.test == date(2025, 9, 1)
    assert split.validation == (date(2025, 4, 1), date(2025, 5, 1), date(2025, 6, 1))  # windows end by the test
    assert split.train == plan_split(MONTHS, 90, end, train_cutoffs=4).train  # windows end by the last
    # a short window: cutoffs both train (most customers) and validate (the held-out fifth)
    short = plan_split(MONTHS, 30, end, train_cutoffs=4, validation_cutoffs=3)
    assert short.validation == (date(2025, 8, 1), date(2025, 9, 1), date(2025, 10, 1))
    assert short.train == (date(2025, 6, 1), date(2025, 7, 1), date(2025, 8, 1), date(2025, 9, 1))
    assert short.all == (*MONTHS[17:23],)  # 2025-06-01 .. the test cutoff 2025-11-01, each once
    cutoffs = pd.Series([date(2025, 9, 1)] * 2 + [date(2025, 6, 1)] * 2 + [date(2025, 11, 1)] * 2)
    held_out = np.array([True, False] * 3)
    assert list(short.assign(cutoffs, held_out)) == ["validation", "train", "", "train", "test", "test"]
    assert split.describe_validation() == "2025-04-01..2025-06-01 (3 cutoffs)"


def test_validation_customers_are_a_stable_fifth_and_never_train() -> None:
    ids = pd.Series([f"C{i:06d}" for i in range(20_000)])

    held_out = is_validation_customer(ids)

    assert 0.18 < held_out.mean() < 0.22
    np.testing.assert_array_equal(held_out, is_validation_customer(ids.copy()))


def test_too_short_a_history_for_the_window_is_a_clear_error() -> None:
    with pytest.raises(CannotTrain, match=r"training.clv_window_days \(365 days\) cannot be placed"):
        plan_split(MONTHS[-3:], 365, datetime(2025, 12, 1, tzinfo=UTC), train_cutoffs=4,
                   window_key="training.clv_window_days")  # fmt: skip


EIGHTEEN_MONTHS = [date(1997, m, 1) for m in range(2, 13)] + [date(1998, m, 1) for m in range(1, 8)]
EIGHTEEN_MONTHS_END = datetime(1998, 7, 1, tzinfo=UTC)


def test_a_window_too_long_names_its_key_and_the_longest_window_that_fits() -> None:
    # CDNOW's shape: month starts 1997-02-01 .. 1998-07-01, orders to 1998-06-30
    with pytest.raises(CannotTrain) as refused:
        plan_split(EIGHTEEN_MONTHS, 365, EIGHTEEN_MONTHS_END, train_cutoffs=6, window_key="training.clv_window_days")

    assert "training.clv_window_days (365 days) does not fit" in str(refused.value)
    assert "longest window that fits is 242 days: set training.clv_window_days to at most 242" in str(refused.value)
    assert isinstance(refused.value, CustlensError)  # a user's error: one line at the CLI, exit 2


def test_the_longest_window_said_to_fit_does_and_one_day_more_does_not() -> None:
    longest = longest_window(EIGHTEEN_MONTHS, EIGHTEEN_MONTHS_END)

    split = plan_split(EIGHTEEN_MONTHS, longest, EIGHTEEN_MONTHS_END, train_cutoffs=6)

    assert split.validation[-1] + timedelta(days=longest) <= split.test
    with pytest.raises(CannotTrain):
        plan_split(EIGHTEEN_MONTHS, longest + 1, EIGHTEEN_MONTHS_END, train_cutoffs=6)


def test_cutoffs_at_or_after_the_data_end_neither_test_nor_widen_the_span() -> None:
    with_today = [*EIGHTEEN_MONTHS, date(2026, 12, 1)]  # today's snapshot, years after a stale log

    assert longest_window(with_today, EIGHTEEN_MONTHS_END) == longest_window(EIGHTEEN_MONTHS, EIGHTEEN_MONTHS_END)
    with pytest.raises(CannotTrain, match=r"snapshot cutoffs 1997-02-01\.\.1998-06-01"):
        plan_split(with_today, 365, EIGHTEEN_MONTHS_END, train_cutoffs=6)


def write_snapshot_files(settings: Settings, cutoffs: list[date]) -> None:
    """Empty files where `features build` writes each family's snapshot: what `snapshot_cutoffs` lists."""
    for family in FAMILIES:
        for cutoff in cutoffs:
            path = layout.snapshot_file(family, cutoff, settings.data_dir.resolve())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def test_a_weekly_grid_trains_on_every_weekly_cutoff(settings: Settings) -> None:
    # 78 Mondays and a snapshot off the grid (today's); orders until the last Monday
    mondays = [date(2024, 1, 1) + timedelta(weeks=n) for n in range(78)]
    write_snapshot_files(settings, [*mondays, date(2025, 6, 28)])
    write_orders(settings, [("A", "2024-01-01 10:00", "completed", "1"), ("A", "2025-06-22 10:00", "completed", "1")])
    weekly = settings  # 18 months of orders: the auto grid is Mondays

    split = model_split(weekly, "churn")

    assert grid_cutoffs(weekly) == mondays  # the month starts among them no longer the only ones
    assert split.test == date(2025, 3, 24)  # the last Monday whose 90 days end by the data end, 2025-06-23
    assert split.validation[-1] == date(2024, 12, 23)  # the last whose window ends by the test cutoff
    assert len(split.validation) == 13 and len(split.train) == 26  # a quarter and half a year of Mondays
    assert all(b - a == timedelta(weeks=1) for a, b in zip(split.train, split.train[1:], strict=False))
    assert split.train[-1] + timedelta(days=90) <= split.validation[-1]


# -- metrics --------------------------------------------------------------------------------------


def test_classifier_metrics_of_a_perfect_ranking() -> None:
    actual = np.array([0] * 90 + [1] * 10)
    probability = np.linspace(0.01, 0.99, 100)

    metrics = classifier_metrics(actual, probability)

    assert metrics["test_auc"] == 1.0
    assert metrics["test_top_decile_capture"] == 1.0
    assert metrics["test_top_decile_lift"] == pytest.approx(10.0)


def test_normalized_gini_is_one_for_the_perfect_order_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(0)
    revenue = rng.gamma(0.5, 100.0, 5000)

    assert normalized_gini(revenue, revenue) == pytest.approx(1.0)
    assert abs(normalized_gini(revenue, rng.random(5000))) < 0.1


def test_value_metrics_report_totals_and_ten_decile_errors() -> None:
    actual = np.arange(100, dtype=float)

    metrics = value_metrics(actual, actual * 2)

    assert metrics["test_total_ratio"] == pytest.approx(2.0)
    assert len([k for k in metrics if k.startswith("test_decile_")]) == 10


def test_a_window_too_long_for_a_gap_trains_on_the_cutoffs_before_validation() -> None:
    three_years = [date(year, month, 1) for year in (2023, 2024, 2025) for month in range(1, 13)]

    split = plan_split(three_years, 365, datetime(2026, 1, 1, tzinfo=UTC), train_cutoffs=3)

    assert (split.test, split.validation) == (date(2025, 1, 1), (date(2024, 1, 1),))
    assert split.train == (date(2023, 10, 1), date(2023, 11, 1), date(2023, 12, 1))


def test_calibration_error_is_zero_for_calibrated_and_large_for_overconfident_scores() -> None:
    rng = np.random.default_rng(1)
    probability = rng.random(50_000)
    actual = (rng.random(50_000) < probability).astype(float)

    calibrated = classifier_metrics(actual, probability)["test_calibration_error"]
    overconfident = classifier_metrics(actual, np.where(probability > 0.5, 0.99, 0.01))["test_calibration_error"]

    assert calibrated < 0.01 and overconfident > 0.2
