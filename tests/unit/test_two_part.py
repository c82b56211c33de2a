"""The two-part CLV design: a classifier of P(value > 0) times a regressor of the value given a
purchase, in one ModelBundle that scores, saves and loads like the one Tweedie booster; and the
choice between the two designs, made on the validation rows. Tiny LightGBM models on random rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from custlens.errors import CustlensError
from training import train, two_part
from training.frames import CATEGORY_FEATURES, NUMERIC_FEATURES, feature_matrix
from training.packaging import ModelBundle
from training.specs import SPECS
from training.value_range import P10, P90, RANGE_KEY, ValueRange

from .test_bundle import random_rows

BASE = {"num_leaves": 7, "min_data_in_leaf": 10, "verbosity": -1, "seed": 0, "num_boost_round": 20}


def revenue(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """Zero for about half the rows, skewed positive money for the rest, both moved by the inputs."""
    rng = np.random.default_rng(seed)
    signal = rows[list(NUMERIC_FEATURES)[:5]].fillna(20.0).to_numpy().sum(axis=1)
    buys = rng.random(len(rows)) < 1 / (1 + np.exp(-(signal - np.median(signal)) / 20))
    return np.where(buys, rng.gamma(2.0, signal / 20 + 1.0), 0.0)


@pytest.fixture(scope="module")
def fitted() -> tuple[ModelBundle, ModelBundle]:
    """A two-part CLV bundle and a Tweedie one, fitted on the same rows."""
    rows = random_rows(600, seed=1)
    x = feature_matrix(rows)
    y = revenue(rows, seed=2)
    categories = {name: list(x[name].cat.categories) for name in CATEGORY_FEATURES}
    parts = two_part.fit_parts({part: {**BASE, "objective": objective} for part, objective in two_part.PARTS.items()},
                               (x, y), None)  # fmt: skip
    both = ModelBundle(model="clv", features=list(x.columns), categories=categories, calibration=(0.9, 0.1),
                       feature_service="clv_v2", meta={two_part.DESIGN_KEY: "two_part"}, **parts)  # fmt: skip
    tweedie = lgb.train({**BASE, "objective": "tweedie"}, lgb.Dataset(x, y), num_boost_round=20)
    one = ModelBundle(model="clv", booster=tweedie, features=list(x.columns), categories=categories,
                      feature_service="clv_v2")  # fmt: skip
    return both, one


def test_a_two_part_prediction_is_the_calibrated_purchase_probability_times_the_value(fitted: Any) -> None:
    bundle, _ = fitted
    matrix = bundle.encode(random_rows(200, seed=3))

    predicted = bundle.scores(matrix)["predicted_value"]

    p = bundle.calibrate(bundle.booster.predict(matrix))
    value = bundle.value_booster.predict(matrix)
    np.testing.assert_allclose(predicted, p * value)
    assert (p > 0).all() and (p < 1).all() and (value > 0).all()  # a probability and a positive amount
    assert len(np.unique(predicted)) > 10


def test_the_value_part_learns_only_from_the_buyers() -> None:
    x = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})
    features, value = two_part.value_data((x, np.array([0.0, 5.0, -1.0, 7.0])))
    assert list(features["a"]) == [2.0, 4.0] and list(value) == [5.0, 7.0]
    assert list(two_part.purchase_data((x, np.array([0.0, 5.0, -1.0, 7.0])))[1]) == [0.0, 1.0, 0.0, 1.0]


def test_a_saved_two_part_bundle_scores_identically_after_loading(fitted: Any, tmp_path: Path) -> None:
    bundle, _ = fitted
    rows = random_rows(300, seed=4)
    predicted = bundle.scores(bundle.encode(rows))["predicted_value"]
    table = ValueRange.fit(predicted, revenue(rows, seed=5))
    assert table is not None
    bundle.meta[RANGE_KEY] = table.to_dict()
    try:
        loaded = ModelBundle.load(bundle.save(tmp_path))
    finally:
        del bundle.meta[RANGE_KEY]

    scores, again = bundle.scores(bundle.encode(rows)), loaded.scores(loaded.encode(rows))
    assert loaded.value_booster is not None and loaded.meta[two_part.DESIGN_KEY] == "two_part"
    assert set(again) >= {"predicted_value", P10, P90}
    for key, values in scores.items():
        np.testing.assert_array_equal(again[key], values)
    assert "value_booster" in json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))


def test_a_bundle_saved_before_two_parts_loads_and_scores_as_before(fitted: Any, tmp_path: Path) -> None:
    # given a Tweedie CLV bundle as saved before the value booster existed: no such key in its JSON
    _, tweedie = fitted
    path = tweedie.save(tmp_path)
    state = json.loads(path.read_text(encoding="utf-8"))
    del state["value_booster"]
    path.write_text(json.dumps(state), encoding="utf-8")
    rows = random_rows(100, seed=6)
    # when it is loaded, then it is the one booster and scores the Tweedie prediction
    loaded = ModelBundle.load(path)
    assert loaded.value_booster is None
    expected = np.maximum(tweedie.booster.predict(tweedie.encode(rows)), 0.0)
    np.testing.assert_array_equal(loaded.scores(loaded.encode(rows))["predicted_value"], expected)


def test_value_trees_that_read_other_features_are_refused(fitted: Any) -> None:
    bundle, _ = fitted
    x = feature_matrix(random_rows(200, seed=7)).drop(columns=["city"])
    other = lgb.train({**BASE, "objective": "gamma"}, lgb.Dataset(x, np.full(len(x), 3.0)), num_boost_round=2)
    with pytest.raises(CustlensError, match="value trees"):
        ModelBundle(model="clv", booster=bundle.booster, features=bundle.features, categories=bundle.categories,
                    value_booster=other)  # fmt: skip


def test_a_two_part_bundles_contributions_add_both_parts(fitted: Any) -> None:
    bundle, _ = fitted
    matrix = bundle.encode(random_rows(50, seed=8))

    contributions = bundle.contributions(matrix)

    purchase = bundle.booster.predict(matrix, pred_contrib=True)[:, :-1]
    value = bundle.value_booster.predict(matrix, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(contributions, purchase + value)
    assert contributions.shape == (50, len(bundle.features))


def test_the_two_parts_share_the_models_trials_and_seconds() -> None:
    for trials in (1, 2, 3, 30):
        budget = two_part.split_budget(trials, 600)
        assert sum(part[0] for part in budget.values()) == max(trials, 2)
        assert all(part[1] == 300 for part in budget.values())


def settings_with(design: str) -> Any:
    return SimpleNamespace(training=SimpleNamespace(clv_design=design))


def test_auto_fits_both_designs_only_when_validation_can_choose() -> None:
    clv, churn = SPECS["clv"], SPECS["churn"]
    assert train._designs(settings_with("auto"), clv, tunable=True) == ("tweedie", "two_part")
    assert train._designs(settings_with("auto"), clv, tunable=False) == ("tweedie",)
    assert train._designs(settings_with("two_part"), clv, tunable=True) == ("two_part",)
    assert train._designs(settings_with("tweedie"), clv, tunable=True) == ("tweedie",)
    assert train._designs(settings_with("two_part"), churn, tunable=True) == ("binary",)


class Logged:
    """What the choice logs to its MLflow run."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params |= params

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags |= tags

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.metrics |= metrics


def predicting(values: np.ndarray) -> Any:
    """A fitted design whose bundle predicts `values` for the validation rows."""
    frame = pd.DataFrame({"predicted_value": values})
    return train._Fitted(SimpleNamespace(predict=lambda rows: frame), {})  # type: ignore[arg-type]


@pytest.mark.parametrize("better", ["tweedie", "two_part"])
def test_the_design_with_the_better_validation_gini_is_chosen(better: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given validation rows and two designs, one ranking their revenue right and one at random
    rng = np.random.default_rng(9)
    actual = np.where(rng.random(400) < 0.4, rng.gamma(2.0, 50.0, 400), 0.0)
    valid = pd.DataFrame({"revenue_next": actual})
    good, noise = predicting(actual + rng.normal(0, 5, 400)), predicting(rng.random(400))
    fits = {"tweedie": good if better == "tweedie" else noise, "two_part": good if better == "two_part" else noise}
    logged = Logged()
    monkeypatch.setattr(train, "mlflow", logged)
    # when the design is chosen (the test rows are not even an argument)
    chosen = train._choose_design(SPECS["clv"], fits, valid, settings_with("auto"), lambda *_: None)
    # then the better one on validation, and the run says both metrics and the choice
    assert chosen == better
    assert logged.params[two_part.DESIGN_KEY] == better and logged.tags[two_part.DESIGN_KEY] == better
    ginis = {d: logged.metrics[f"validation_normalized_gini_{d}"] for d in fits}
    assert ginis[better] > 0.9 > ginis["tweedie" if better == "two_part" else "two_part"]
    assert "validation_total_ratio_two_part" in logged.metrics


def test_auto_with_one_design_fitted_says_there_was_no_validation_window_to_choose_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged = Logged()
    monkeypatch.setattr(train, "mlflow", logged)
    valid = pd.DataFrame({"revenue_next": [0.0, 5.0, 10.0]})

    chosen = train._choose_design(SPECS["clv"], {"tweedie": predicting(np.array([1.0, 2.0, 3.0]))}, valid,
                                  settings_with("auto"), lambda *_: None)  # fmt: skip

    assert chosen == logged.params[two_part.DESIGN_KEY] == "tweedie"
    assert logged.tags["clv_design_why"] == "training.clv_design auto: no validation window to choose on"
