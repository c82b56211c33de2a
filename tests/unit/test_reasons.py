"""Reasons state the customer's value next to the typical one, in words that never contradict the
direction they are given with."""

from __future__ import annotations

import math

import pytest

from serving.reasons import contradicts, explain


def test_a_reason_names_the_typical_value_in_the_features_unit() -> None:
    assert explain("days_since_last_order", 52.0, 140.0) == "last order 52 days ago (typical: 140 days)"
    assert explain("orders_365d", 3.0, 1.0) == "3 orders in the last 12 months (typical: 1)"
    assert explain("email_open_rate_90d", 0.5, 0.25) == "opened 50% of emails in 90 days (typical: 25%)"
    assert explain("revenue_365d", 250_000.0, 1_234_567.0) == "spent 250,000 in the last 12 months (typical: 1,234,567)"


def test_no_typical_value_for_a_missing_value_a_category_or_a_version_without_medians() -> None:
    assert explain("days_since_last_order", math.nan, 140.0) == "no completed order yet"
    assert explain("city", "Hà Nội", None) == "lives in Hà Nội"
    assert explain("days_since_last_order", 52.0, None) == "last order 52 days ago"


@pytest.mark.parametrize(
    ("name", "value", "impact", "against"),
    [
        ("days_since_last_order", 52.0, -0.4, False),  # more recent than typical, lowers risk: agrees
        ("days_since_last_order", 52.0, 0.4, True),  # more recent than typical yet raises risk
        ("days_since_last_order", 300.0, -0.4, True),  # longer than typical yet lowers risk
        ("days_since_last_order", 300.0, 0.4, False),
        ("orders_90d", 4.0, -0.2, False),  # more orders than typical, lowers risk
        ("orders_90d", 4.0, 0.2, True),
        ("orders_90d", 0.0, 0.2, False),
        ("avg_order_value", 10.0, 0.3, False),  # no known direction: never against
        ("days_since_last_order", 140.0, 0.4, False),  # typical itself: either way
    ],
)
def test_a_contribution_against_a_known_direction_is_told_apart(
    name: str, value: float, impact: float, against: bool
) -> None:
    typical = {"days_since_last_order": 140.0, "orders_90d": 1.0, "avg_order_value": 20.0}[name]
    assert contradicts(name, value, typical, impact) is against
