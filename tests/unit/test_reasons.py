"""Reasons state the customer's value next to the typical one, in words that never contradict the
direction they are given with."""

from __future__ import annotations

import math

import pytest

from serving.reasons import coherent, explain


def test_a_reason_names_the_typical_value_in_the_features_unit() -> None:
    assert explain("days_since_last_order", 52.0, 140.0) == "last order 52 days ago (typical: 140 days)"
    assert explain("orders_365d", 3.0, 1.0) == "3 orders in the last 12 months (typical: 1)"
    assert explain("email_open_rate_90d", 0.5, 0.25) == "opened 50% of emails in 90 days (typical: 25%)"
    assert explain("revenue_365d", 250_000.0, 1_234_567.0) == "spent 250,000 in the last 12 months (typical: 1,234,567)"


def test_no_typical_value_for_a_missing_value_a_category_or_a_version_without_medians() -> None:
    assert explain("days_since_last_order", math.nan, 140.0) == "no completed order yet"
    assert explain("city", "Hà Nội", None) == "lives in Hà Nội"
    assert explain("days_since_last_order", 52.0, None) == "last order 52 days ago"


LEARNED = {"days_since_last_order": 1, "orders_90d": -1, "mean_days_between_orders": 1}  # a version's directions
TYPICAL = {"days_since_last_order": 140.0, "orders_90d": 1.0, "avg_order_value": 20.0, "mean_days_between_orders": 50.0}


@pytest.mark.parametrize(
    ("name", "value", "impact", "holds"),
    [
        ("days_since_last_order", 52.0, -0.4, True),  # more recent than typical, lowers risk
        ("days_since_last_order", 52.0, 0.4, False),  # more recent than typical yet raises risk
        ("days_since_last_order", 300.0, -0.4, False),  # longer than typical yet lowers risk
        ("days_since_last_order", 300.0, 0.4, True),
        ("orders_90d", 4.0, -0.2, True),  # more orders than typical, lowers risk
        ("orders_90d", 4.0, 0.2, False),
        ("orders_90d", 0.0, 0.2, True),
        ("mean_days_between_orders", 98.0, -0.3, False),  # "orders every 98 days (typical: 50)" lowering risk
        ("avg_order_value", 10.0, 0.3, False),  # no clear direction learned: no comparison to make
        ("days_since_last_order", 140.0, 0.4, False),  # the typical value itself explains nothing
        ("days_since_last_order", math.nan, 0.4, True),  # a state: "no completed order yet"
    ],
)
def test_a_reason_holds_together_by_the_direction_the_model_learned(
    name: str, value: float, impact: float, holds: bool
) -> None:
    assert coherent(name, value, TYPICAL[name], impact, LEARNED) is holds


def test_a_version_without_directions_is_read_with_the_known_ones() -> None:
    assert coherent("days_since_last_order", 52.0, 140.0, 0.4, None) is False
    assert coherent("avg_order_value", 10.0, 20.0, 0.3, None) is True  # unknown: taken as it comes
    assert coherent("city", "Huế", None, 0.3, LEARNED) is True


def test_the_direction_a_model_learned_is_the_sign_of_its_contributions_against_the_feature() -> None:
    import numpy as np
    import pandas as pd

    from training.packaging import feature_directions

    rng = np.random.default_rng(0)
    matrix = pd.DataFrame({"up": rng.uniform(0, 1, 200), "down": rng.uniform(0, 1, 200),
                           "unused": rng.uniform(0, 1, 200), "noise": rng.uniform(0, 1, 200)})  # fmt: skip
    contributions = np.column_stack([matrix["up"] * 2, -matrix["down"], np.zeros(200), rng.normal(size=200)])
    assert feature_directions(matrix, contributions) == {"up": 1, "down": -1}
