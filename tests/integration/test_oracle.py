"""The oracle on a small generated sample: it ranks churn and repurchase far better than recency,
its CLV adds up to the revenue that came, and it is skipped where there is no truth. The observable
oracle (alive state unknown) ranks between recency and the oracle and is calibrated to the law it
assumes."""

from __future__ import annotations

import math
import shutil
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from custlens.errors import CustlensError
from custlens.settings import Settings, load_settings
from features.lake.ingest import ingest
from features.lake.tables import CROSSWALK, crosswalk_path, cutoff_instant, lake_end, lake_file, sql_literal, table_path
from features.sample.generate import DEFAULT_END, generate
from features.sample.truth import truth_file
from features.sample.world import order_intensity
from tests.support.business import SAMPLE_CONFIG
from training.evaluation import normalized_gini
from training.labels import compute_labels, window_complete
from training.oracle import (
    Evidence,
    PersonBehind,
    gap_closed,
    load_evidence,
    load_truth,
    oracle_predictions,
    truth_dir_for,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 2_000
# cutoffs whose label windows end before the simulated history does
CHURN_CUTOFF, REPURCHASE_CUTOFF, CLV_CUTOFF = date(2026, 7, 1), date(2026, 9, 1), date(2025, 10, 1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = load_settings(SAMPLE_CONFIG)
    settings = base.model_copy(update={"data_dir": tmp_path_factory.mktemp("data")})
    generate(
        out_dir=settings.sample_dir,
        customers=CUSTOMERS,
        seed=5,
        start=None,
        end=DEFAULT_END,
        dirty_rate=0.02,
        file_format="csv",
    )
    ingest(settings, settings.sample_dir)
    return settings


@pytest.fixture(scope="module")
def truth(settings: Settings) -> pd.DataFrame:
    truth_dir = truth_dir_for(settings)
    assert truth_dir is not None
    return load_truth(truth_dir, settings.lake_dir)


@pytest.fixture(scope="module")
def evidence(settings: Settings) -> Evidence:
    truth_dir = truth_dir_for(settings)
    assert truth_dir is not None
    return load_evidence(truth_dir, settings.lake_dir)


def _labels(settings: Settings, cutoff: date, window_days: int) -> pd.DataFrame:
    assert window_complete(cutoff, window_days, lake_end(settings))
    return compute_labels(settings, [cutoff])


def _days_since_last_completed_order(settings: Settings, customer_ids: pd.Series, cutoff: date) -> np.ndarray:
    last = duckdb.sql(
        f"""SELECT customer_id, max(ordered_at) AS last_order_at
            FROM read_parquet({sql_literal(table_path(settings, "orders"))})
            WHERE status = 'completed' AND ordered_at < TIMESTAMPTZ '{cutoff_instant(cutoff).isoformat()}'
            GROUP BY customer_id"""
    ).df()
    last_order_at = customer_ids.to_frame().merge(last, on="customer_id", how="left")["last_order_at"]
    return ((pd.Timestamp(cutoff_instant(cutoff)) - last_order_at).dt.total_seconds() / 86400).to_numpy()


def test_truth_has_one_row_per_lake_customer(settings: Settings, truth: pd.DataFrame) -> None:
    crosswalk = pd.read_parquet(crosswalk_path(settings))

    assert truth["customer_id"].is_unique
    assert set(truth["customer_id"]) == set(crosswalk["customer_id"])
    assert (truth["n_persons"] == truth["persons"].map(len)).all()
    assert truth["purchase_rate"].notna().all()


def test_oracle_ranks_churn_far_better_than_recency(settings: Settings, truth: pd.DataFrame) -> None:
    labels = _labels(settings, CHURN_CUTOFF, 90)
    labels = labels[labels["active"].astype(bool)]
    churned = labels["churned"].astype(bool).to_numpy()

    oracle = oracle_predictions(truth, labels["customer_id"].tolist(), CHURN_CUTOFF, "churn", 90)
    recency = _days_since_last_completed_order(settings, labels["customer_id"], CHURN_CUTOFF)

    oracle_auc = roc_auc_score(churned, oracle)
    assert oracle_auc > 0.85
    assert oracle_auc > roc_auc_score(churned, recency) + 0.03
    assert oracle.mean() == pytest.approx(churned.mean(), abs=0.05)  # calibrated, not only ranked


def test_oracle_ranks_repurchase_far_better_than_recency(settings: Settings, truth: pd.DataFrame) -> None:
    labels = _labels(settings, REPURCHASE_CUTOFF, 30)
    repurchased = labels["repurchased"].astype(bool).to_numpy()

    oracle = oracle_predictions(truth, labels["customer_id"].tolist(), REPURCHASE_CUTOFF, "repurchase", 30)
    recency = _days_since_last_completed_order(settings, labels["customer_id"], REPURCHASE_CUTOFF)

    oracle_auc = roc_auc_score(repurchased, oracle)
    assert oracle_auc > 0.85
    assert oracle_auc > roc_auc_score(repurchased, -recency) + 0.03
    assert oracle.mean() == pytest.approx(repurchased.mean(), abs=0.05)


@pytest.mark.parametrize(
    ("model", "cutoff", "window_days", "label"),
    [("churn", CHURN_CUTOFF, 90, "churned"), ("repurchase", REPURCHASE_CUTOFF, 30, "repurchased")],
)
def test_observable_oracle_ranks_between_recency_and_the_oracle(
    settings: Settings, truth: pd.DataFrame, evidence: Evidence, model: str, cutoff: date, window_days: int,
    label: str,
) -> None:  # fmt: skip
    labels = _labels(settings, cutoff, window_days)
    if model == "churn":
        labels = labels[labels["active"].astype(bool)]
    actual = labels[label].astype(bool).to_numpy()
    ids = labels["customer_id"].tolist()

    oracle = oracle_predictions(truth, ids, cutoff, model, window_days)  # type: ignore[arg-type]
    observable = oracle_predictions(truth, ids, cutoff, model, window_days, evidence=evidence)  # type: ignore[arg-type]
    recency = _days_since_last_completed_order(settings, labels["customer_id"], cutoff)

    observable_auc = roc_auc_score(actual, observable)
    assert observable_auc < roc_auc_score(actual, oracle)
    assert observable_auc > roc_auc_score(actual, recency if model == "churn" else -recency) + 0.02
    assert observable.mean() == pytest.approx(actual.mean(), abs=0.05)


def test_observable_oracle_is_the_oracle_for_someone_who_just_ordered(
    settings: Settings, truth: pd.DataFrame, evidence: Evidence
) -> None:
    labels = _labels(settings, CHURN_CUTOFF, 90)
    labels = labels[labels["active"].astype(bool)]
    recency = _days_since_last_completed_order(settings, labels["customer_id"], CHURN_CUTOFF)
    single = labels["customer_id"].map(truth.set_index("customer_id")["n_persons"]).to_numpy() == 1
    ids = labels.loc[(recency < 1) & single, "customer_id"].tolist()
    assert len(ids) >= 5

    oracle = oracle_predictions(truth, ids, CHURN_CUTOFF, "churn", 90)
    observable = oracle_predictions(truth, ids, CHURN_CUTOFF, "churn", 90, evidence=evidence)

    # alive a day ago: at most a day's hazard (and a fading day of browsing) apart
    np.testing.assert_allclose(observable, oracle, atol=0.02)


def test_oracle_clv_adds_up_to_the_revenue_that_came(settings: Settings, truth: pd.DataFrame) -> None:
    labels = _labels(settings, CLV_CUTOFF, 365)
    revenue = labels["revenue_next"].to_numpy(dtype=float)

    oracle = oracle_predictions(truth, labels["customer_id"].tolist(), CLV_CUTOFF, "clv", 365)

    assert oracle.sum() == pytest.approx(revenue.sum(), rel=0.15)
    assert normalized_gini(revenue, oracle) > 0.85


def test_nobody_who_dropped_out_before_the_cutoff_is_expected_to_buy(truth: pd.DataFrame) -> None:
    cutoff = CHURN_CUTOFF
    gone = truth[(truth["n_persons"] == 1) & (truth["dropout_at"] < pd.Timestamp(cutoff_instant(cutoff)))]
    assert len(gone) > 0

    churn = oracle_predictions(truth, gone["customer_id"].tolist(), cutoff, "churn", 90)
    clv = oracle_predictions(truth, gone["customer_id"].tolist(), cutoff, "clv", 365)

    assert (churn == 1).all()
    assert (clv == 0).all()


def test_a_customer_the_truth_does_not_know_is_an_error(truth: pd.DataFrame) -> None:
    with pytest.raises(CustlensError, match="not in the truth"):
        oracle_predictions(truth, ["C-nobody"], CHURN_CUTOFF, "churn", 90)


def test_truth_of_other_data_is_refused(settings: Settings, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    lake_dir.mkdir()
    other = pd.DataFrame({"source": ["crm"], "source_customer_id": ["NOT-GENERATED"], "customer_id": ["C1"]})
    other.to_parquet(lake_file(lake_dir, CROSSWALK))
    truth_dir = truth_dir_for(settings)
    assert truth_dir is not None

    with pytest.raises(CustlensError, match="other data"):
        load_truth(truth_dir, lake_dir)


def test_truth_from_an_older_generator_is_refused(settings: Settings, tmp_path: Path) -> None:
    # given a truth folder whose identities lack the account openings and order weights
    truth_dir = truth_dir_for(settings)
    assert truth_dir is not None
    old = tmp_path / "truth"
    shutil.copytree(truth_dir, old)
    identities = pd.read_parquet(truth_file(old, "identities"))
    identities[["source", "source_customer_id", "person_id"]].to_parquet(truth_file(old, "identities"))

    with pytest.raises(CustlensError, match="older `custlens generate`"):
        load_truth(old, settings.lake_dir)
    with pytest.raises(CustlensError, match="older `custlens generate`"):
        load_evidence(old, settings.lake_dir)


def test_gap_closed_is_the_share_of_the_baseline_to_oracle_gap() -> None:
    assert gap_closed(baseline=0.78, model=0.791, oracle=0.88) == pytest.approx(0.11)
    assert gap_closed(baseline=0.78, model=0.88, oracle=0.88) == pytest.approx(1.0)
    assert gap_closed(baseline=0.78, model=0.77, oracle=0.88) == pytest.approx(-0.1)


def test_gap_closed_is_nan_when_the_oracle_does_not_beat_the_baseline() -> None:
    assert math.isnan(gap_closed(baseline=0.8, model=0.81, oracle=0.8))
    assert math.isnan(gap_closed(baseline=0.8, model=0.81, oracle=0.7))
    assert math.isnan(gap_closed(baseline=0.8, model=0.81, oracle=float("nan")))


def test_there_is_no_truth_for_a_business_without_sample_data(tmp_path: Path) -> None:
    settings = load_settings(SAMPLE_CONFIG).model_copy(update={"data_dir": tmp_path})
    assert truth_dir_for(settings) is None

    (settings.sample_dir / "truth").mkdir(parents=True)
    assert truth_dir_for(settings) is None  # an empty folder is no truth either


def test_the_sample_truth_is_found_where_generate_writes_it(settings: Settings) -> None:
    assert truth_dir_for(settings) == settings.sample_dir / "truth"


def test_cutoffs_are_midnight_utc() -> None:
    # the oracle's calendar assumes it: a cutoff is 07:00 local time in the generated shop
    assert cutoff_instant(CHURN_CUTOFF) == datetime(2026, 7, 1, tzinfo=cutoff_instant(CHURN_CUTOFF).tzinfo)


# ---------------------------------------------------------------- the observable oracle on hand-made people

CUTOFF = date(2026, 3, 1)
_DAY_S = 86_400


def _person(person_id: int, signup_day: float, purchase_rate: float, dropout_hazard: float,
            engagement_rate: float = 1.0) -> PersonBehind:  # fmt: skip
    signup_s = int(signup_day * _DAY_S)
    return PersonBehind(
        person_id=person_id, signup_s=signup_s, dropout_s=math.inf, purchase_rate=purchase_rate,
        dropout_hazard=dropout_hazard, is_deal_seeker=False, expected_order_value=1.0,
        engagement_rate=engagement_rate, latent_satisfaction=0.0, account_opened_s=np.array([signup_s]),
        account_weight=np.array([3.0]), account_here=np.array([True]),
    )  # fmt: skip


def _hand_made_truth(people: list[PersonBehind]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{p.person_id}" for p in people],
            "persons": [(p,) for p in people],
            "n_persons": 1,
            "recorded_order_share": 1.0,
            "history_end": pd.Timestamp("2030-01-01", tz="UTC"),
        }
    )


def _evidence(orders: dict[int, np.ndarray], browsing: dict[int, np.ndarray] | None = None,
              online_from: dict[int, float] | None = None) -> Evidence:  # fmt: skip
    return Evidence(orders=orders, browsing=browsing or {}, email_sent={}, email_opened={},
                    online_from=online_from or {})  # fmt: skip


def test_observable_churn_is_calibrated_to_the_law_it_assumes() -> None:
    # given people simulated the generator's way: Exp(mu) drop-out, orders at lambda m(day) until it
    rng = np.random.default_rng(3)
    n, rate, hazard, window = 3_000, 8.0, 0.6, 90
    cutoff = float((CUTOFF - date(1970, 1, 1)).days)
    signup = cutoff - rng.uniform(200, 730, n)
    dropout = signup + 365 * rng.exponential(1.0, n) / hazard
    peak = float(order_intensity(np.arange(int(cutoff) - 800, int(cutoff) + 100), False).max())
    orders: dict[int, np.ndarray] = {}
    churned = np.ones(n, dtype=bool)
    for i in range(n):
        stop = min(dropout[i], cutoff + window)
        drawn = np.sort(rng.uniform(signup[i], stop, rng.poisson(rate / 365 * peak * max(stop - signup[i], 0))))
        kept = drawn[rng.random(len(drawn)) * peak < order_intensity(np.floor(drawn + 7 / 24).astype(np.int64), False)]
        orders[i] = kept[kept < cutoff]
        later = kept[kept >= cutoff]
        churned[i] = not (rng.random(len(later)) < 0.93).any()  # only completed orders count
    people = [_person(i, signup[i], rate, hazard) for i in range(n)]

    # when the observable oracle predicts churn from the orders before the cutoff
    predicted = oracle_predictions(_hand_made_truth(people), [f"C{i}" for i in range(n)], CUTOFF, "churn", window,
                                   evidence=_evidence(orders))  # fmt: skip

    # then it matches the churn that came, overall and by recency
    assert predicted.mean() == pytest.approx(churned.mean(), abs=0.02)
    last = np.array([orders[i].max(initial=signup[i]) for i in range(n)])
    for low, high in ((0, 45), (45, 150), (150, 10_000)):
        group = (cutoff - last >= low) & (cutoff - last < high)
        assert predicted[group].mean() == pytest.approx(churned[group].mean(), abs=0.05)


def test_browsing_until_the_cutoff_says_alive_and_silence_online_says_gone() -> None:
    # given three people alike, silent in orders for 120 days: one browses weekly until the cutoff,
    # one could browse (has a web account) but has not, one has no web or app account at all
    cutoff = float((CUTOFF - date(1970, 1, 1)).days)
    people = [_person(i, cutoff - 700, purchase_rate=6.0, dropout_hazard=0.4, engagement_rate=1.5) for i in range(3)]
    orders = {i: np.array([cutoff - 300, cutoff - 200, cutoff - 120]) for i in range(3)}
    browsing = {0: np.arange(cutoff - 118, cutoff, 7.0)}
    online_from = {0: cutoff - 700, 1: cutoff - 700}

    churn = oracle_predictions(_hand_made_truth(people), ["C0", "C1", "C2"], CUTOFF, "churn", 90,
                               evidence=_evidence(orders, browsing, online_from))  # fmt: skip

    assert churn[0] + 0.2 < churn[2] < churn[1]
