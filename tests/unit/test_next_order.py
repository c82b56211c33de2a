"""The expected next-order date agrees with the repurchase probability (training.next_order)."""

from __future__ import annotations

import numpy as np
import pytest

from training.next_order import median_days

WINDOW = 30.0


def _bought_by(days: float, probability: float, wait: float) -> float:
    """P(an order within `days`) under the model median_days solves, by its own definition."""
    within = 1 - 2 ** (-WINDOW / wait)
    share = probability / within
    if share >= 1:
        return 1 - (1 - probability) ** (days / WINDOW)
    return share * (1 - 2 ** (-days / wait))


@pytest.mark.parametrize(("probability", "wait"), [(0.9, 10.0), (0.6, 20.0), (0.5, 40.0), (0.45, 12.0),
                                                   (0.3, 200.0), (0.55, 400.0)])  # fmt: skip
def test_half_the_customers_have_ordered_by_the_date(probability: float, wait: float) -> None:
    days = float(median_days(np.array([probability]), WINDOW, np.array([wait]))[0])
    assert _bought_by(days, probability, wait) == pytest.approx(0.5, abs=1e-9)


def test_no_date_when_fewer_than_half_ever_come_back() -> None:
    # 40% order within 30 days, and those who return do so within 12 days typically: 49% ever return
    assert np.isnan(median_days(np.array([0.4]), WINDOW, np.array([12.0]))[0])


def test_the_date_is_in_the_window_exactly_when_an_order_in_it_is_likely() -> None:
    rng = np.random.default_rng(3)
    probability, wait = rng.uniform(0, 1, 20_000), rng.lognormal(3, 1.2, 20_000)
    days = median_days(probability, WINDOW, wait)
    likely = probability >= 0.5
    assert (days[likely] <= WINDOW + 1e-9).all()
    assert (np.isnan(days[~likely]) | (days[~likely] > WINDOW - 1e-9)).all()


def test_an_unlikely_buyer_gets_no_date_and_a_likelier_one_never_a_later_one() -> None:
    # given one typical wait, from a 0% to a 97% chance of ordering in the window
    probability = np.array([0.0, 0.01, 0.03, 0.1, 0.3, 0.6, 0.97])
    days = median_days(probability, WINDOW, np.full(len(probability), 35.0))
    # then the 0% customer has none (the old booster dated them 35 days out), and dates come earlier as p rises
    assert np.isnan(days[0])
    dated = days[~np.isnan(days)]
    assert (np.diff(dated) < 0).all()
    # and nobody is dated past the longest horizon
    assert np.isnan(median_days(np.array([1e-4]), WINDOW, np.array([35.0]), longest=365.0)[0])


def test_missing_inputs_give_no_date() -> None:
    days = median_days(np.array([np.nan, 0.7]), WINDOW, np.array([10.0, np.nan]))
    assert np.isnan(days).all()
