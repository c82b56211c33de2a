"""Segments: RFM quintile scores and named segments on hand-made rows, and behavioural clusters on
a synthetic population of five clearly different groups (readable unique names, the deal-seeking
group found by name, names kept across seeds, a JSON round trip that predicts the same)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from custlens.errors import CustlensError
from training.segments import (
    NO_PURCHASE,
    RFM_GRID,
    RFM_SEGMENTS,
    BehaviouralSegmenter,
    RfmScorer,
    name_clusters,
    stability,
)

K_RANGE = range(3, 8)
GROUP_SIZE = 600
# Per group: mean orders in 365 days, basket (VND), days since the last order, tenure in days,
# discount share, sessions in 90 days, email open rate.
GROUPS: dict[str, dict[str, float]] = {
    "loyal": dict(orders=14, basket=900_000, days_since=8, tenure=900, discount=0.03, sessions=12, open_rate=0.5),
    "deals": dict(orders=5, basket=300_000, days_since=40, tenure=500, discount=0.40, sessions=3, open_rate=0.3),
    "lapsing": dict(orders=0.1, basket=400_000, days_since=500, tenure=800, discount=0.05, sessions=0.2, open_rate=0.1),
    "new": dict(orders=1, basket=400_000, days_since=10, tenure=20, discount=0.05, sessions=3, open_rate=0.4),
    "browsers": dict(orders=0.3, basket=300_000, days_since=200, tenure=400, discount=0.05, sessions=25, open_rate=0.8),
}

# ---------------------------------------------------------------------------------------------
# RFM


def rfm_rows(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    """(days_since_last_order, orders_lifetime, revenue_365d) per customer; NaN days: no order."""
    return pd.DataFrame(rows, columns=["days_since_last_order", "orders_lifetime", "revenue_365d"])


@pytest.fixture(scope="module")
def rfm() -> RfmScorer:
    # 100 buyers spread evenly, so the quintile edges land at round numbers, and one non-buyer
    # who must not move them.
    days = np.arange(1, 101, dtype=float) * 5  # 5 .. 500
    orders = np.arange(1, 101, dtype=float) // 10 + 1  # 1 .. 11
    revenue = np.arange(1, 101, dtype=float) * 10_000
    training = rfm_rows([*zip(days, orders, revenue, strict=True), (np.nan, 0.0, 0.0)])
    return RfmScorer.fit(training)


def test_quintile_edges_are_learned_on_buyers_only(rfm: RfmScorer) -> None:
    # given 100 evenly spread buyers and one customer without an order (fixture)
    # then the edges are the buyers' 20/40/60/80% quantiles
    assert rfm.recency_edges == pytest.approx((104.0, 203.0, 302.0, 401.0))
    assert rfm.monetary_edges == pytest.approx((208_000.0, 406_000.0, 604_000.0, 802_000.0))


def test_quintile_scores_are_5_for_the_best_and_an_edge_value_scores_with_the_quintile_below(rfm: RfmScorer) -> None:
    # given a very recent, an edge-recent and a very old customer
    frame = rfm_rows([(1.0, 20.0, 2_000_000.0), (104.0, 1.0, 208_000.0), (900.0, 1.0, 0.0)])

    # when they are scored
    scores = rfm.scores(frame)

    # then fewer days, more orders and more revenue score higher, and a value on an edge stays below it
    assert scores.to_numpy().tolist() == [[5, 5, 5], [5, 1, 1], [1, 1, 1]]


def test_recent_frequent_big_spender_is_a_champion(rfm: RfmScorer) -> None:
    # given a customer who bought yesterday, has 30 orders and spent a lot this year
    frame = rfm_rows([(1.0, 30.0, 5_000_000.0)])

    # when segmented
    segment = rfm.segment(frame)

    # then
    assert segment.tolist() == ["Champions"]


def test_old_one_time_small_buyer_is_hibernating(rfm: RfmScorer) -> None:
    # given a customer whose only, small order was 700 days ago
    frame = rfm_rows([(700.0, 1.0, 0.0)])

    # when segmented
    segment = rfm.segment(frame)

    # then
    assert segment.tolist() == ["Hibernating"]


def test_frequent_buyer_gone_quiet_is_cant_lose(rfm: RfmScorer) -> None:
    # given a customer with many lifetime orders whose last order was 450 days ago
    frame = rfm_rows([(450.0, 40.0, 0.0)])

    # when segmented
    segment = rfm.segment(frame)

    # then lifetime frequency keeps the history that a 365-day count would have lost
    assert segment.tolist() == ["Can't lose"]


def test_customer_without_an_order_has_no_purchase_yet_and_no_scores(rfm: RfmScorer) -> None:
    # given a customer with no completed order (no last order date)
    frame = rfm_rows([(np.nan, 0.0, 0.0)])

    # when scored and segmented
    scores = rfm.scores(frame)
    segment = rfm.segment(frame)

    # then there is no RFM score and the segment says so, outside the ten RFM names
    assert scores.isna().all(axis=None)
    assert segment.tolist() == [NO_PURCHASE]
    assert NO_PURCHASE not in RFM_SEGMENTS


def test_segment_keeps_the_frame_index(rfm: RfmScorer) -> None:
    # given customers indexed by id
    frame = rfm_rows([(1.0, 30.0, 5_000_000.0), (np.nan, 0.0, 0.0)])
    frame.index = pd.Index(["c-1", "c-2"], name="customer_id")

    # when segmented
    segment = rfm.segment(frame)

    # then each name stays with its customer
    assert segment.to_dict() == {"c-1": "Champions", "c-2": NO_PURCHASE}


def test_rfm_grid_puts_every_score_pair_in_exactly_one_of_the_ten_segments() -> None:
    # given the grid as written
    # when every (R, F) pair is looked up
    cells: dict[tuple[int, int], list[str]] = {}
    for name, (r_low, r_high), (f_low, f_high) in RFM_GRID:
        for r in range(r_low, r_high + 1):
            for f in range(f_low, f_high + 1):
                cells.setdefault((r, f), []).append(name)

    # then each of the 25 cells has one segment and all ten segments are used
    assert sorted(cells) == [(r, f) for r in range(1, 6) for f in range(1, 6)]
    assert all(len(names) == 1 for names in cells.values())
    assert {names[0] for names in cells.values()} == set(RFM_SEGMENTS)


def test_rfm_scorer_round_trips_through_json(rfm: RfmScorer) -> None:
    # given a fitted scorer
    # when its state goes through JSON and back
    loaded = RfmScorer.from_dict(json.loads(json.dumps(rfm.to_dict())))

    # then it is the same scorer
    assert loaded == rfm


def test_rfm_fit_without_any_buyer_is_a_clear_error() -> None:
    # given a frame where nobody has ordered
    frame = rfm_rows([(np.nan, 0.0, 0.0)] * 3)

    # when / then
    with pytest.raises(CustlensError, match="completed order"):
        RfmScorer.fit(frame)


# ---------------------------------------------------------------------------------------------
# Behavioural clusters


def synthetic_customers(seed: int = 7) -> pd.DataFrame:
    """Five behavioural groups of GROUP_SIZE customers each, in the catalog's column names."""
    rng = np.random.default_rng(seed)
    n = GROUP_SIZE

    def group(
        name: str, orders: float, basket: float, days_since: float, tenure: float, discount: float,
        sessions: float, open_rate: float,
    ) -> pd.DataFrame:  # fmt: skip
        orders_365d = rng.poisson(orders, n).astype(float)
        revenue = orders_365d * basket * rng.lognormal(0, 0.3, n)
        tenure_days = tenure * rng.lognormal(0, 0.25, n)
        days = np.minimum(days_since * rng.lognormal(0, 0.3, n), tenure_days)
        return pd.DataFrame(
            {
                "group": name,
                "revenue_365d": revenue,
                "orders_365d": orders_365d,
                "orders_lifetime": orders_365d + rng.poisson(orders * tenure_days / 365),
                "avg_order_value": basket * rng.lognormal(0, 0.3, n),
                "days_since_last_order": days,
                "tenure_days": tenure_days,
                "discount_share_365d": np.where(orders_365d > 0, np.clip(rng.normal(discount, 0.04, n), 0, 1), np.nan),
                "sessions_90d": rng.poisson(sessions, n).astype(float),
                "email_open_rate_90d": np.where(rng.random(n) < 0.6, rng.normal(open_rate, 0.1, n).clip(0, 1), np.nan),
                "tickets_365d": rng.poisson(0.2, n).astype(float),
                "mean_csat_365d": np.where(rng.random(n) < 0.2, rng.integers(1, 6, n), np.nan),
                "last_nps": np.where(rng.random(n) < 0.2, rng.integers(0, 11, n), np.nan),
            }
        )  # fmt: skip

    frame = pd.concat([group(name, **shape) for name, shape in GROUPS.items()], ignore_index=True)
    frame.index = pd.Index([f"c-{i}" for i in range(len(frame))], name="customer_id")
    return frame


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return synthetic_customers()


@pytest.fixture(scope="module")
def segmenter(customers: pd.DataFrame) -> BehaviouralSegmenter:
    return BehaviouralSegmenter.fit(customers.drop(columns="group"), seed=1, k_range=K_RANGE)


def test_number_of_clusters_is_tuned_to_the_five_groups(segmenter: BehaviouralSegmenter) -> None:
    # given five clearly different groups (fixture)
    # then the silhouette picks five clusters
    assert len(segmenter.names) == 5


def test_cluster_names_are_readable_and_unique(segmenter: BehaviouralSegmenter) -> None:
    # given a fitted segmenter (fixture)
    names = segmenter.names

    # then every name is a capitalised phrase, not an id, and no two clusters share one
    assert len(set(names)) == len(names)
    assert all(name[0].isupper() and not any(ch.isdigit() for ch in name) and "_" not in name for name in names)


def test_each_group_is_found_and_named_for_its_behaviour(
    segmenter: BehaviouralSegmenter, customers: pd.DataFrame
) -> None:
    # given customers whose true group is known
    # when segmented
    predicted = segmenter.predict(customers)

    # then each group's most common name describes it, for nearly all of its customers
    expected = {"loyal": "High-value loyal", "deals": "Deal seekers", "lapsing": "Lapsing", "new": "New customers",
                "browsers": "Engaged browsers"}  # fmt: skip
    for group, name in expected.items():
        in_group = predicted[customers["group"] == group]
        assert in_group.value_counts().index[0] == name, group
        assert (in_group == name).mean() >= 0.9, group


def test_deal_seeking_group_is_named_deal_seekers(segmenter: BehaviouralSegmenter, customers: pd.DataFrame) -> None:
    # given the group buying mostly on discount
    deal_seekers = customers[customers["group"] == "deals"]

    # when segmented
    predicted = segmenter.predict(deal_seekers)

    # then they are "Deal seekers"
    assert (predicted == "Deal seekers").mean() >= 0.9


def test_two_seeds_keep_at_least_90_percent_of_names(segmenter: BehaviouralSegmenter, customers: pd.DataFrame) -> None:
    # given the same customers fitted with another seed
    other = BehaviouralSegmenter.fit(customers.drop(columns="group"), seed=2, k_range=K_RANGE)

    # when both label every customer
    share_kept = stability(segmenter.predict(customers), other.predict(customers))

    # then names are tied to profiles, not to arbitrary cluster ids
    assert share_kept >= 0.9


def test_json_round_trip_predicts_the_same(segmenter: BehaviouralSegmenter, customers: pd.DataFrame) -> None:
    # given a fitted segmenter's state written as JSON (what the Scorer loads, no pickle)
    state = json.loads(json.dumps(segmenter.to_dict(), allow_nan=False))

    # when it is loaded back
    loaded = BehaviouralSegmenter.from_dict(state)

    # then every customer gets the same name, and the profile is unchanged
    pd.testing.assert_series_equal(loaded.predict(customers), segmenter.predict(customers))
    pd.testing.assert_frame_equal(loaded.profile(), segmenter.profile())


def test_one_customer_is_segmented_without_the_population(
    segmenter: BehaviouralSegmenter, customers: pd.DataFrame
) -> None:
    # given a single row (the online Scorer's case)
    one = customers.iloc[[3]]

    # when segmented alone
    alone = segmenter.predict(one)

    # then the name is the one it gets among everybody
    assert alone.iloc[0] == segmenter.predict(customers).iloc[3]


def test_metrics_include_silhouette_and_k(segmenter: BehaviouralSegmenter) -> None:
    # given a fitted segmenter (fixture)
    metrics = segmenter.metrics()

    # then
    assert set(metrics) == {"silhouette", "k", "largest_segment_share", "smallest_segment_share"}
    assert metrics["k"] == len(segmenter.names)
    assert 0.0 < metrics["silhouette"] <= 1.0
    assert metrics["smallest_segment_share"] <= 1 / metrics["k"] <= metrics["largest_segment_share"]


def test_profile_has_a_share_and_a_mean_per_feature_for_each_segment(segmenter: BehaviouralSegmenter) -> None:
    # given a fitted segmenter (fixture)
    profile = segmenter.profile()

    # then one row per segment, shares adding up to one, and the deal seekers' mean discount highest
    assert list(profile.index) == list(segmenter.names)
    assert profile["share"].sum() == pytest.approx(1.0)
    assert {"revenue_365d", "discount_share_365d", "tickets_365d"} <= set(profile.columns)
    assert profile["discount_share_365d"].idxmax() == "Deal seekers"


def test_a_second_cluster_with_the_same_profile_name_gets_a_qualifier() -> None:
    # given two clusters that both look lapsing, one of them spending less
    features = ("revenue_365d", "days_since_last_order")
    profiles = np.array([[0.0, 2.0], [-1.0, 1.5], [1.0, -1.0]])

    # when named
    names = name_clusters(profiles, features)

    # then the stronger keeps the plain name and the other says how it differs
    assert names[0] == "Lapsing"
    assert names[1] == "Lapsing, lower spend"
    assert len(set(names)) == 3


def test_the_more_telling_rule_wins_a_near_tie() -> None:
    # given a lapsed cluster: long gone, and therefore also low on spend and orders, the latter
    # fitting a hair better than the recency
    features = ("revenue_365d", "orders_365d", "days_since_last_order")
    profiles = np.array([[-1.42, -1.10, 1.04]])

    # when named
    names = name_clusters(profiles, features)

    # then the rule listed first (the trait that matters) names it, as it would at the next retrain
    assert names == ["Lapsing"]


def test_a_cluster_that_fits_no_rule_is_mainstream() -> None:
    # given a profile close to the population on every feature
    names = name_clusters(np.array([[0.05, -0.1]]), ("revenue_365d", "days_since_last_order"))

    # then
    assert names == ["Mainstream"]


def test_predict_without_a_feature_column_is_a_clear_error(
    segmenter: BehaviouralSegmenter, customers: pd.DataFrame
) -> None:
    # given a frame missing one of the features the clusters use
    frame = customers.drop(columns="sessions_90d")

    # when / then the message names the column
    with pytest.raises(CustlensError, match="sessions_90d"):
        segmenter.predict(frame)


def test_stability_compares_names_customer_by_customer() -> None:
    # given two labelings of the same four customers, in different row orders
    a = pd.Series(["Lapsing", "Deal seekers", "New customers", "Lapsing"], index=["a", "b", "c", "d"])
    b = pd.Series(["Lapsing", "Lapsing", "New customers", "Deal seekers"], index=["d", "c", "b", "a"])

    # when compared
    share = stability(a, b)

    # then only customer d kept its name
    assert share == pytest.approx(0.25)
