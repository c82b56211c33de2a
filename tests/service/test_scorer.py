"""The Scorer: champions loaded from the registry, the same numbers as the registered pyfunc
models, no scores for unknown customers, risk bands and reasons in plain words."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from custlens.errors import CustlensError
from custlens.settings import Settings, load_settings
from features.catalog import STORED_FEATURES
from features.lake.money import minor_units
from features.lake.tables import lake_business
from features.model_inputs import TREE_INPUTS, TREE_INPUTS_V2, service_spec
from features.online import OnlineFeatures
from features.snapshot_reader import load_packed_snapshot
from features.store import registered_services
from serving.reasons import coherent, describe, has_words
from serving.scorer import SCORE_COLUMNS, Scorer, risk_band
from tests.support.business import SAMPLE_CONFIG
from tests.support.trained import trained_project
from training import frames
from training.next_order import beyond_horizon
from training.packaging import FEATURE_DIRECTIONS
from training.tracking import registered_name

NOW = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def test_risk_bands_take_the_higher_band_at_a_threshold() -> None:
    bands = risk_band(np.array([0.0, 0.29, 0.3, 0.59, 0.6, 1.0, np.nan]), 0.3, 0.6)
    assert bands.tolist() == ["low", "low", "medium", "medium", "high", "high", None]


def test_bands_must_be_ordered(tmp_path: Path) -> None:
    config = tmp_path / "bands.yaml"
    config.write_text("serving:\n  churn_medium_risk: 0.7\n  churn_high_risk: 0.6\n")
    with pytest.raises(CustlensError, match="churn_medium_risk"):
        load_settings(config)


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("days_since_last_order", 141.6, "last order 142 days ago"),
        ("days_since_last_order", None, "no completed order yet"),
        ("orders_365d", 1.0, "1 order in the last 12 months"),
        ("orders_365d", 0.0, "0 orders in the last 12 months"),
        ("email_open_rate_90d", 0.125, "opened 12% of emails in 90 days"),
        ("email_open_rate_90d", float("nan"), "no email sent in 90 days"),
        ("orders_trend_90d", -2.0, "2 orders fewer than the 90 days before"),
        ("city", "Hà Nội", "lives in Hà Nội"),
        ("last_nps_category", None, "no last nps category"),
        ("mean_first_response_hours_365d", 72.0, "waited 3.0 days for a first answer on average"),
    ],
)
def test_reasons_read_as_plain_words(name: str, value: object, text: str) -> None:
    assert describe(name, value) == text


def test_every_model_input_has_words() -> None:
    # `describe` never comes back empty (the catalog description is its fallback): ask for words of its own.
    without_words = [name for name in (*TREE_INPUTS.names, *TREE_INPUTS_V2.names) if not has_words(name)]

    assert without_words == []
    assert not has_words("last_order_at")  # an instant no model reads: the fallback is what it would get


def test_no_champion_of_any_model_is_a_clear_error(tmp_path: Path) -> None:
    base = load_settings(SAMPLE_CONFIG)
    settings = base.model_copy(
        update={"training": base.training.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'empty.db'}"})}
    )
    # one missing champion only leaves its outputs NULL (tests/service/test_unserved.py); none at all is an error
    with pytest.raises(CustlensError, match=r"no registered version for any model at @champion.*custlens train all"):
        Scorer.from_registry(settings)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    return trained_project(tmp_path_factory, worker_id)


@pytest.fixture(scope="module")
def scorer(project: Settings) -> Scorer:
    return Scorer.from_registry(project)


@pytest.fixture(scope="module")
def features(project: Settings, scorer: Scorer) -> pd.DataFrame:
    ids = load_packed_snapshot(project).customer_ids[:200]
    return OnlineFeatures(project).features_frame([*ids, "C-does-not-exist"], scorer.inputs, NOW)


def test_the_champions_are_loaded_with_their_feature_services(scorer: Scorer) -> None:
    assert set(scorer.versions) == {"churn", "repurchase", "clv", "segments"}
    # what training read (features/model_inputs.py), which the champions were trained with
    assert scorer.feature_services == {model: service_spec(model).service for model in scorer.versions}
    assert all(ref.alias == "champion" and ref.run_id for ref in scorer.refs.values())


def test_each_models_service_serves_exactly_what_it_reads(project: Settings, scorer: Scorer) -> None:
    served = OnlineFeatures(project).service_features
    reads = {"churn": scorer.churn.features, "repurchase": scorer.repurchase.features, "clv": scorer.clv.features,
             "segments": scorer.segments.inputs}  # fmt: skip

    for model, names in reads.items():
        assert sorted(served(scorer.feature_services[model])) == sorted(names), model
    assert set(scorer.inputs) == {name for names in reads.values() for name in names}


def test_scores_equal_the_registered_pyfunc_models(project: Settings, scorer: Scorer, features: pd.DataFrame) -> None:
    known = features[features["known"]].reset_index(drop=True)
    scores = scorer.score(known, NOW)
    for model, column, pyfunc_column in (
        ("churn", "churn_probability", "probability"),
        ("repurchase", "repurchase_probability", "probability"),
        ("repurchase", "expected_days_to_next_order", "expected_days_to_next_order"),
        ("clv", "predicted_clv", "predicted_value"),
    ):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_name(model)}@champion")
        expected = pyfunc.predict(known[scorer.churn.features])[pyfunc_column].to_numpy()
        if column == "expected_days_to_next_order":  # no date beyond the horizon (training.next_order)
            expected = beyond_horizon(expected, project.serving.next_order_horizon_days)
        if column == "predicted_clv":  # money: in the currency's minor units
            expected = np.round(expected, minor_units(scorer.currency))
        if column == "churn_probability":  # defined for the churn population only; NULL with a reason elsewhere
            scored = scores["churn_not_scored_reason"].isna().to_numpy()
            assert scored.any() and scores[column][~scored].isna().all()
            expected = np.where(scored, expected, np.nan)
        np.testing.assert_allclose(scores[column].to_numpy(dtype=float), expected, rtol=1e-12, err_msg=model)
    segments = mlflow.pyfunc.load_model(f"models:/{registered_name('segments')}@champion")
    expected_segments = segments.predict(known[scorer.segments.inputs].astype("float64"))
    assert scores["rfm_segment"].tolist() == expected_segments["rfm_segment"].tolist()
    assert scores["behavioural_segment"].tolist() == expected_segments["behavioural_segment"].tolist()


def test_predicted_clv_is_in_the_lakes_currency_rounded_to_its_minor_units(
    project: Settings, scorer: Scorer, features: pd.DataFrame
) -> None:
    # given the sample's Vietnamese shop (VND has no minor unit)
    scores = scorer.score(features, NOW)
    known, unknown = scores[features["known"].to_numpy()], scores[~features["known"].to_numpy()]
    # then every scored customer's CLV is in whole dong, and an unknown one has neither value nor unit
    assert scorer.currency == lake_business(project).currency == "VND"
    assert set(known["currency"]) == {"VND"}
    clv = known["predicted_clv"].to_numpy(dtype=float)
    np.testing.assert_array_equal(clv, np.round(clv))
    assert unknown["currency"].isna().all() and unknown["predicted_clv"].isna().all()


def test_a_reordered_catalog_scores_the_registered_models_the_same(
    project: Settings, scorer: Scorer, features: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = scorer.score(features, NOW, reasons=True)
    known = features[features["known"]].reset_index(drop=True)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_name('churn')}@champion")
    pyfunc_before = pyfunc.predict(known[scorer.churn.features])

    # Today's catalog and model inputs in another order, and the features frame's columns too: a
    # model read by position would put every number in the wrong place at the same width.
    monkeypatch.setattr(frames, "NUMERIC_FEATURES", frames.NUMERIC_FEATURES[::-1])
    monkeypatch.setattr(frames, "CATEGORY_FEATURES", frames.CATEGORY_FEATURES[::-1])
    monkeypatch.setattr("features.catalog.STORED_FEATURES", STORED_FEATURES[::-1])
    reloaded = Scorer.from_registry(project)
    after = reloaded.score(features[features.columns[::-1]], NOW, reasons=True)

    pd.testing.assert_frame_equal(after, before)
    assert reloaded.churn.features == scorer.churn.features
    pd.testing.assert_frame_equal(pyfunc.predict(known[scorer.churn.features[::-1]]), pyfunc_before)


def test_a_model_its_service_no_longer_serves_is_refused_at_load(project: Settings, scorer: Scorer) -> None:
    registered = registered_services(project)
    dropped = {name: [n for n in names if n != "orders_30d"] for name, names in registered.items()}
    trained_with = service_spec("churn").service
    renamed = {name.replace(trained_with, "churn_v0"): names for name, names in registered.items()}

    churn = f"custlens-churn version {scorer.versions['churn']}"
    with pytest.raises(CustlensError, match=rf"{churn} reads orders_30d, which its feature service {trained_with} "
                                             r"does not serve; apply .* or retrain"):  # fmt: skip
        Scorer.from_registry(project, services=dropped)
    with pytest.raises(CustlensError, match=rf"{churn} names the feature service {trained_with}, "
                                             r"which the feature store does not have"):  # fmt: skip
        Scorer.from_registry(project, services=renamed)


def test_features_without_a_column_a_model_reads_are_refused(scorer: Scorer, features: pd.DataFrame) -> None:
    version = scorer.versions["churn"]
    with pytest.raises(CustlensError, match=rf"custlens-churn version {version} reads orders_30d, which the features"):
        scorer.score(features.drop(columns=["orders_30d"]), NOW)


def test_every_known_customer_gets_every_score(scorer: Scorer, features: pd.DataFrame) -> None:
    scores = scorer.score(features, NOW, reasons=True)
    assert list(scores.columns) == ["customer_id", *SCORE_COLUMNS, "churn_reasons"]
    assert scores["customer_id"].tolist() == features["customer_id"].tolist()
    known = scores.iloc[:-1]
    in_population = known["churn_not_scored_reason"].isna()
    assert known["churn_probability"][in_population].between(0, 1).all()
    assert known["churn_probability"][~in_population].isna().all()
    assert known["churn_not_scored_reason"][~in_population].isin(["no_purchase_yet", "inactive_beyond_window"]).all()
    assert known["repurchase_probability"].between(0, 1).all()
    assert (known["predicted_clv"] >= 0).all()
    assert known["churn_risk"][in_population].isin(["low", "medium", "high"]).all()
    assert known["rfm_segment"].notna().all() and known["behavioural_segment"].notna().all()
    assert all(d is None or d >= NOW.date() for d in known["expected_next_order_date"])


def test_the_next_order_date_agrees_with_the_repurchase_probability(scorer: Scorer, features: pd.DataFrame) -> None:
    # the date by which an order is as likely as not: within the repurchase window exactly when the
    # probability of an order in it is at least 1/2, else later or none (no date 35 days out at 0%)
    scores = scorer.score(features.iloc[:-1], NOW)
    window = scorer.windows["repurchase_days"]
    assert window is not None
    days = scores["expected_days_to_next_order"].to_numpy(dtype=float)
    likely = scores["repurchase_probability"].to_numpy() >= 0.5
    unlikely = scores["repurchase_probability"].to_numpy() < 0.2
    assert likely.any() and unlikely.any()
    assert (days[likely] <= window + 1e-6).all()
    assert (np.isnan(days[~likely]) | (days[~likely] > window - 1e-6)).all()
    assert np.isnan(days[unlikely]).mean() > 0.5  # most of the unlikely buyers get no date at all
    assert np.nanmax(days) <= scorer.serving.next_order_horizon_days
    dated = ~np.isnan(days)
    assert scores["expected_next_order_date"].notna().to_numpy().tolist() == dated.tolist()


def test_an_unknown_customer_gets_no_scores(scorer: Scorer, features: pd.DataFrame) -> None:
    unknown = scorer.score(features, NOW, reasons=True).iloc[-1]
    assert unknown["customer_id"] == "C-does-not-exist"
    for column in SCORE_COLUMNS:
        value = unknown[column]
        assert value is None or (isinstance(value, float) and np.isnan(value)), column
    assert unknown["churn_reasons"] is None


def test_reasons_follow_the_band_and_name_the_customers_value(scorer: Scorer, features: pd.DataFrame) -> None:
    scores = scorer.score(features.iloc[:-1], NOW, reasons=True)
    assert scorer.churn is not None
    learned = scorer.churn.meta[FEATURE_DIRECTIONS]  # the directions the churn version learned
    # a later last order, more churn: learned from the day count itself (v1), or, where the version
    # reads the btyd family (v2), from BG/NBD's P(no purchase), which carries it; never the other way
    assert learned.get("days_since_last_order", 1) == 1
    carried = "btyd_prob_no_purchase_churn_window" in scorer.churn.features
    assert learned["btyd_prob_no_purchase_churn_window" if carried else "days_since_last_order"] == 1
    given = 0
    for risk, reasons in zip(scores["churn_risk"], scores["churn_reasons"], strict=True):
        if risk is None:  # outside the churn population: no probability, so no reasons for one
            assert reasons == []
            continue
        assert len(reasons) <= 3
        given += bool(reasons)
        primary = "lowers risk" if risk == "low" else "raises risk"
        directions = [r["direction"] for r in reasons]
        assert directions == sorted(directions, key=lambda d: d != primary)  # the band's direction first
        impacts = [abs(r["impact"]) for r in reasons if r["direction"] == primary]
        assert impacts == sorted(impacts, reverse=True)
        assert all(r["text"] and r["feature"] in scorer.churn.features for r in reasons)
        for reason in reasons:  # words that agree with the direction: the value beside the typical one
            assert coherent(reason["feature"], reason["value"], reason["typical"], reason["impact"], learned)
            # a typical value explains nothing; a missing value or category is a state of its own ("no city")
            assert reason["value"] is None or reason["typical"] is None or reason["value"] != reason["typical"], reason
            if reason["typical"] is not None and reason["value"] is not None and not isinstance(reason["value"], str):
                assert "(typical: " in reason["text"] or not has_words(reason["feature"])
    assert given >= 0.9 * scores["churn_risk"].notna().sum()  # nearly every scored customer has a reason


def test_the_expected_next_order_date_counts_from_the_as_of_date(scorer: Scorer, features: pd.DataFrame) -> None:
    rows = features.iloc[:5]
    online = scorer.score(rows, NOW)
    batch = scorer.score(rows, date(2026, 11, 1))
    days = online["expected_days_to_next_order"].to_numpy()
    # the day the instant falls on: 29.6 days after midnight is the 30th day after it
    counted = [None if d is None else (d - date(2026, 11, 1)).days for d in batch["expected_next_order_date"]]
    assert counted == [None if np.isnan(d) else math.floor(d) for d in batch["expected_days_to_next_order"]]
    moments = [None if np.isnan(d) else (NOW + timedelta(days=d)).date() for d in days]
    assert online["expected_next_order_date"].tolist() == moments


def test_scoring_one_row_at_a_time_equals_scoring_all(scorer: Scorer, features: pd.DataFrame) -> None:
    rows = features.iloc[:20]
    together = scorer.score(rows, NOW)
    alone = pd.concat([scorer.score(rows.iloc[[i]], NOW) for i in range(len(rows))], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone)


def test_settings_carry_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTLENS_API_KEYS", " a-key, another ,,")
    assert load_settings().api_key_set() == {"a-key", "another"}
    monkeypatch.delenv("CUSTLENS_API_KEYS")
    assert Settings(api_keys=SecretStr("")).api_key_set() == frozenset()
    assert Settings().api_key_set() == frozenset()


def test_the_online_columns_score_exactly_like_the_frame(
    project: Settings, scorer: Scorer, features: pd.DataFrame
) -> None:
    columns = OnlineFeatures(project).features_columns(features["customer_id"].tolist(), scorer.inputs, NOW)
    assert set(columns) == set(features.columns)
    pd.testing.assert_frame_equal(scorer.score(columns, NOW, reasons=True), scorer.score(features, NOW, reasons=True))
