"""The probabilistic baselines: the RFM summary on tiny hand-made orders, and BG/NBD and Gamma-Gamma
checked against customers simulated from the models with known parameters."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary, rfm_summary_from_features

CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")
TRUE_BG = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 2.5}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}


# ---------------------------------------------------------------- simulators


class SimulatedCustomers(NamedTuple):
    summary: pd.DataFrame  # frequency, recency, T in days, as rfm_summary gives them
    purchase_rate: np.ndarray  # lambda, purchases per day while alive
    purchases_left: np.ndarray  # repeat purchases still to come before dropping out; 0 = dropped out by T


def simulate_bgnbd(
    rng: np.random.Generator, customers: int, r: float, alpha: float, a: float, b: float
) -> SimulatedCustomers:
    """BG/NBD histories over (0, T], T uniform in [180, 730] days.

    Repeat purchases arrive at Poisson(lambda) times; the customer drops out right after the k-th
    one with k ~ Geometric(p). Given K arrivals in (0, T], the k-th of them is T times the k-th order
    statistic of K uniforms, which is Beta(k, K - k + 1)."""
    purchase_rate = rng.gamma(r, 1.0 / alpha, customers)
    dropout = rng.beta(a, b, customers)
    age = rng.uniform(180.0, 730.0, customers)
    lifetime_purchases = rng.geometric(dropout)
    arrivals = rng.poisson(purchase_rate * age)
    frequency = np.minimum(arrivals, lifetime_purchases)
    recency = np.zeros(customers)
    repeat = frequency > 0
    recency[repeat] = age[repeat] * rng.beta(frequency[repeat], arrivals[repeat] - frequency[repeat] + 1)
    summary = pd.DataFrame({"frequency": frequency, "recency": recency, "T": age})
    return SimulatedCustomers(summary, purchase_rate, np.maximum(lifetime_purchases - arrivals, 0))


def purchases_in_next(rng: np.random.Generator, customers: SimulatedCustomers, days: float) -> np.ndarray:
    """Repeat purchases each customer makes in (T, T + days]."""
    arrivals = rng.poisson(customers.purchase_rate * days)
    return np.minimum(arrivals, customers.purchases_left)


def simulate_order_values(rng: np.random.Generator, frequency: np.ndarray, p: float, q: float, v: float) -> np.ndarray:
    """Mean of `frequency` Gamma(p, nu) order values, nu ~ Gamma(q, v): itself Gamma(p x, nu x)."""
    nu = rng.gamma(q, 1.0 / v, len(frequency))
    return rng.gamma(p * frequency, 1.0 / (nu * frequency))


def bgnbd_customers(seed: int, customers: int = 20_000) -> SimulatedCustomers:
    return simulate_bgnbd(np.random.default_rng(seed), customers, **TRUE_BG)


# ---------------------------------------------------------------- rfm_summary


def _order(customer_id: str, ordered_at: str, net_amount: float | Decimal, status: str = "completed") -> dict:
    return {
        "customer_id": customer_id,
        "ordered_at": pd.Timestamp(ordered_at, tz="UTC"),
        "status": status,
        "net_amount": net_amount,
    }


def _orders(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "ordered_at", "status", "net_amount"])


def test_two_orders_on_the_same_day_count_as_one_purchase_day_with_their_revenue_added() -> None:
    # given a first day, then a repeat day with two orders
    orders = _orders(
        _order("a", "2024-01-01 10:00", 10.0),
        _order("a", "2024-01-11 09:00", 30.0),
        _order("a", "2024-01-11 18:00", Decimal("20.50")),
    )
    # when
    summary = rfm_summary(orders, CUTOFF)
    # then one repeat purchase day, 10 days after the first, 60 days before the cutoff
    assert summary.loc["a"].to_dict() == {"frequency": 1, "recency": 10.0, "T": 60.0, "monetary_value": 50.5}


def test_monetary_value_is_the_mean_of_repeat_purchase_days_only() -> None:
    orders = _orders(
        _order("a", "2024-01-01", 1000.0), _order("a", "2024-01-05", 30.0), _order("a", "2024-01-09", 70.0)
    )
    summary = rfm_summary(orders, CUTOFF)
    assert summary.loc["a", "monetary_value"] == 50.0


def test_cancelled_and_returned_orders_are_not_purchases() -> None:
    orders = _orders(
        _order("b", "2024-02-01", 40.0),
        _order("b", "2024-02-10", 99.0, "cancelled"),
        _order("b", "2024-02-15", 99.0, "returned"),
    )
    summary = rfm_summary(orders, CUTOFF)
    assert summary.loc["b"].to_dict() == {"frequency": 0, "recency": 0.0, "T": 29.0, "monetary_value": 0.0}


def test_a_refund_is_not_a_purchase_day_and_lowers_the_purchase_day_it_follows() -> None:
    # given a first day, a repeat day of 100, a partial refund of 40 a week later, a repeat day of 60
    orders = _orders(
        _order("r", "2024-01-01", 10.0),
        _order("r", "2024-01-10", 100.0),
        _order("r", "2024-01-17", -40.0, "returned"),
        _order("r", "2024-01-20", 60.0),
    )
    # when
    summary = rfm_summary(orders, CUTOFF)
    # then two repeat purchase days (the refund's day is none), worth 60 and 60
    assert summary.loc["r"].to_dict() == {"frequency": 2, "recency": 19.0, "T": 60.0, "monetary_value": 60.0}


def test_a_day_refunded_beyond_its_purchases_counts_zero_and_an_orphan_refund_is_left_out() -> None:
    # given a refund before any purchase (of an order older than the history) and one larger than its day
    orders = _orders(
        _order("s", "2023-12-20", -500.0, "returned"),
        _order("s", "2024-01-01", 10.0),
        _order("s", "2024-01-10", 30.0),
        _order("s", "2024-01-11", -80.0, "returned"),
        _order("s", "2024-01-20", 50.0),
    )
    # when
    summary = rfm_summary(orders, CUTOFF)
    # then the repeat days are worth 0 and 50; the first day keeps its 10 (not in monetary value anyway)
    assert summary.loc["s"].to_dict() == {"frequency": 2, "recency": 19.0, "T": 60.0, "monetary_value": 25.0}


def test_orders_at_or_after_the_cutoff_never_change_the_summary() -> None:
    # given the same history, once with orders at and after the cutoff added
    history = [_order("a", "2024-01-01", 10.0), _order("a", "2024-02-29 23:59", 20.0)]
    later = [_order("a", "2024-03-01 00:00", 500.0), _order("a", "2024-04-01", 500.0), _order("z", "2024-03-02", 500.0)]
    # when
    without_later = rfm_summary(_orders(*history), CUTOFF)
    with_later = rfm_summary(_orders(*history, *later), CUTOFF)
    # then the summaries are identical; z, who only ordered afterwards, is not there
    pd.testing.assert_frame_equal(with_later, without_later)
    assert list(with_later.index) == ["a"]


def test_customer_without_a_completed_order_before_the_cutoff_gets_a_row_of_zeros() -> None:
    orders = _orders(_order("a", "2024-01-01", 10.0), _order("c", "2024-02-01", 10.0, "cancelled"))
    summary = rfm_summary(orders, CUTOFF, population=pd.Index(["a", "c", "new-signup"]))
    zeros = {"frequency": 0, "recency": 0.0, "T": 0.0, "monetary_value": 0.0}
    assert summary.loc["c"].to_dict() == zeros
    assert summary.loc["new-signup"].to_dict() == zeros
    assert summary.loc["a", "T"] == 60.0


# ---------------------------------------------------------------- BG/NBD


def test_bgnbd_fit_recovers_the_parameters_it_was_simulated_with() -> None:
    # given 20,000 customers simulated from known parameters
    customers = bgnbd_customers(seed=1)
    # when
    fitted = BetaGeo.fit(customers.summary)
    # then each is close: over 20 seeds the relative error's sd was ~1.5% for r and alpha, ~3-5% for a and b
    assert fitted.r == pytest.approx(TRUE_BG["r"], rel=0.05)
    assert fitted.alpha == pytest.approx(TRUE_BG["alpha"], rel=0.05)
    assert fitted.a == pytest.approx(TRUE_BG["a"], rel=0.15)
    assert fitted.b == pytest.approx(TRUE_BG["b"], rel=0.15)


def test_customers_without_any_purchase_leave_the_bgnbd_fit_unchanged() -> None:
    summary = bgnbd_customers(seed=2, customers=5_000).summary
    no_history = pd.DataFrame({"frequency": [0] * 1_000, "recency": 0.0, "T": 0.0})
    fitted = BetaGeo.fit(summary)
    fitted_with_no_history = BetaGeo.fit(pd.concat([summary, no_history], ignore_index=True))
    for name in TRUE_BG:
        assert getattr(fitted_with_no_history, name) == pytest.approx(getattr(fitted, name), rel=1e-3)


@pytest.mark.parametrize("days", [30, 90])
def test_prob_no_purchase_matches_what_simulated_customers_do_next(days: int) -> None:
    # given simulated histories and what the same customers then do in the next `days`
    rng = np.random.default_rng(3)
    customers = simulate_bgnbd(rng, 40_000, **TRUE_BG)
    bought_nothing = purchases_in_next(rng, customers, days) == 0
    # when scored by the model with the true parameters
    predicted = BetaGeo(**TRUE_BG).prob_no_purchase(customers.summary, days)
    # then it is calibrated overall and within each decile of the prediction
    assert predicted.mean() == pytest.approx(bought_nothing.mean(), abs=0.01)
    decile = pd.qcut(predicted, 10, labels=False, duplicates="drop")
    by_decile = pd.DataFrame({"predicted": predicted, "observed": bought_nothing}).groupby(decile).mean()
    gaps = (by_decile["predicted"] - by_decile["observed"]).abs()
    assert gaps.mean() < 0.015
    assert gaps.max() < 0.04


def test_expected_purchases_match_what_simulated_customers_buy_next() -> None:
    rng = np.random.default_rng(4)
    customers = simulate_bgnbd(rng, 40_000, **TRUE_BG)
    bought = purchases_in_next(rng, customers, 365)
    predicted = BetaGeo(**TRUE_BG).expected_purchases(customers.summary, 365)
    assert predicted.mean() == pytest.approx(bought.mean(), rel=0.03)


def test_half_of_customers_given_a_next_purchase_date_have_bought_by_it() -> None:
    # given simulated customers, alive or not, and the wait to their next purchase (none if dropped out)
    rng = np.random.default_rng(5)
    customers = simulate_bgnbd(rng, 40_000, **TRUE_BG)
    alive = customers.purchases_left > 0
    wait = np.where(alive, rng.exponential(1.0 / customers.purchase_rate), np.inf)
    # when
    median = BetaGeo(**TRUE_BG).median_days_to_next_purchase(customers.summary, longest=3650)
    # then half of those with a date buy by it (sd of this share over seeds ~0.005) ...
    dated = ~np.isnan(median)
    assert 0.2 < dated.mean() < 0.95
    assert (wait[dated] <= median[dated]).mean() == pytest.approx(0.5, abs=0.015)
    # ... and those without one are less likely than not to buy within the ten years
    assert (wait[~dated] <= 3650).mean() < 0.5


def test_the_next_purchase_date_falls_in_the_window_exactly_when_a_purchase_in_it_is_likely() -> None:
    rng = np.random.default_rng(6)
    summary = simulate_bgnbd(rng, 5_000, **TRUE_BG).summary
    model = BetaGeo(**TRUE_BG)
    median = model.median_days_to_next_purchase(summary, longest=3650)
    likely = 1.0 - model.prob_no_purchase(summary, 30) >= 0.5
    assert 0 < likely.sum() < len(summary)
    assert (median[likely] <= 30 + 1e-6).all()
    assert (np.isnan(median[~likely]) | (median[~likely] > 30 - 1e-6)).all()


def test_longer_time_since_the_last_purchase_lowers_prob_alive() -> None:
    # given customers alike but for how long ago their last of 3 repeat purchases was
    summary = pd.DataFrame({"frequency": 3, "recency": [199.0, 150.0, 100.0, 50.0, 10.0], "T": 200.0})
    # when
    alive = BetaGeo(**TRUE_BG).prob_alive(summary)
    # then
    assert (np.diff(alive) < 0).all()


# ---------------------------------------------------------------- Gamma-Gamma


def test_gamma_gamma_fit_recovers_the_parameters_it_was_simulated_with() -> None:
    # given 20,000 repeat customers' mean order values simulated from known parameters
    rng = np.random.default_rng(6)
    frequency = rng.geometric(0.3, 20_000)
    summary = pd.DataFrame({"frequency": frequency, "monetary_value": simulate_order_values(rng, frequency, **TRUE_GG)})
    # when
    fitted = GammaGamma.fit(summary)
    # then: over 20 seeds the relative error's sd was ~3-5% for p and v, ~1.5% for q
    assert fitted.p == pytest.approx(TRUE_GG["p"], rel=0.15)
    assert fitted.q == pytest.approx(TRUE_GG["q"], rel=0.05)
    assert fitted.v == pytest.approx(TRUE_GG["v"], rel=0.15)


def test_summary_from_feature_columns_has_rfm_summarys_types_and_zeros_for_the_unknown() -> None:
    # given packed columns as the online reader gives them: a repeat buyer, a one-day buyer, a
    # customer who never completed an order, and an id the store does not know (all NULL)
    nan = float("nan")
    columns = {
        "customer_id": np.array(["repeat", "once", "never", "unknown"], dtype=object),
        "purchase_days_lifetime": np.array([3.0, 1.0, 0.0, nan]),
        "days_first_to_last_purchase_day": np.array([131.0, 0.0, nan, nan]),
        "days_since_first_purchase_day": np.array([173.5, 16.0, nan, nan]),
        "repeat_purchase_day_value": np.array([60.0, 0.0, 0.0, nan]),
    }
    # when
    summary = rfm_summary_from_features(columns)
    # then
    assert summary.index.name == "customer_id"
    assert summary.dtypes.to_dict() == {"frequency": np.dtype("int64"), "recency": np.dtype("float64"),
                                        "T": np.dtype("float64"), "monetary_value": np.dtype("float64")}  # fmt: skip
    assert summary.loc["repeat"].to_dict() == {"frequency": 2, "recency": 131.0, "T": 173.5, "monetary_value": 60.0}
    assert summary.loc["once"].to_dict() == {"frequency": 0, "recency": 0.0, "T": 16.0, "monetary_value": 0.0}
    assert (summary.loc[["never", "unknown"]] == 0).all(axis=None)


def test_a_fit_is_logged_by_the_names_a_reviewer_knows() -> None:
    from features.catalog import BTYD_SUMMARY_FEATURES
    from training.baselines.servable import RFM_COLUMNS, BaselineBundle

    btyd = {"r": 0.2, "alpha": 4.0, "a": 0.8, "b": 2.5}
    gamma_gamma = BaselineBundle(model="clv", flavour="bgnbd_gamma_gamma", window_days=365,
                                 params={**btyd, "p": 6.0, "q": 4.0, "v": 15.0},
                                 features=list(BTYD_SUMMARY_FEATURES))  # fmt: skip
    logistic = BaselineBundle(model="churn", flavour="logistic_rfm", window_days=90, features=list(RFM_COLUMNS),
                              params={"medians": {}, "mean": [], "scale": [], "intercept": -0.5,
                                      "coef": [0.1 * (j + 1) for j in range(len(RFM_COLUMNS))]})  # fmt: skip

    # Gamma-Gamma's scale v is the paper's gamma; logistic RFM's coefficients are named by feature
    assert gamma_gamma.fitted_params() == {**btyd, "p": 6.0, "q": 4.0, "gamma": 15.0}
    assert logistic.fitted_params() == pytest.approx(
        {**{f"coef_{name}": 0.1 * (j + 1) for j, name in enumerate(RFM_COLUMNS)}, "intercept": -0.5}
    )


def test_posterior_draws_of_purchases_and_revenue_average_to_the_expected_ones() -> None:
    # given simulated histories and the true parameters
    rng = np.random.default_rng(5)
    summary = simulate_bgnbd(rng, 20_000, **TRUE_BG).summary.assign(monetary_value=0.0)
    repeat = summary["frequency"] > 0
    summary.loc[repeat, "monetary_value"] = simulate_order_values(rng, summary["frequency"][repeat].to_numpy(),
                                                                  **TRUE_GG)  # fmt: skip
    bg, gg = BetaGeo(**TRUE_BG), GammaGamma(**TRUE_GG)
    # when each customer's next 365 days are drawn from the posterior
    purchases = bg.simulate_purchases(summary, 365, rng)
    revenue = gg.simulate_revenue(summary, purchases, rng)
    # then the draws average to what the model expects: the range is the same model's spread
    assert purchases.mean() == pytest.approx(bg.expected_purchases(summary, 365).mean(), rel=0.03)
    assert revenue.mean() == pytest.approx(expected_revenue(bg, gg, summary, 365).mean(), rel=0.05)
    assert (revenue[purchases == 0] == 0).all() and (revenue[purchases > 0] > 0).all()
