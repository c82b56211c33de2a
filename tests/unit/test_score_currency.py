"""Money and windows in scores, without a trained project: the Scorer answers predicted CLV in the
lake's business currency, rounded to its minor units, and the /score answer carries the currency
with each scored customer; the answer and /metadata state the window each output is over, read
from the served version (its bundle, else its training run, else today's config, said so). The
models are stand-ins that predict fixed numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from custlens.settings import ServingSettings, Settings, load_settings
from serving.runtime import Asked, Loaded, Runtime, score
from serving.scorer import (
    MODELS,
    WINDOW_FROM_CONFIG,
    WINDOW_FROM_MODEL,
    WINDOW_FROM_RUN,
    ModelRef,
    Scorer,
    _trained_window,
)
from training.packaging import ModelBundle

NOW = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
CLV = np.array([1_234_567.891, 37.425, 0.004])  # what the stand-in CLV model predicts, unrounded


class Encoder:
    def same_as(self, other: object) -> bool:
        return True


class Model:
    """A bundle that reads `spend` and predicts a fixed probability, CLV and days."""

    features: ClassVar[list[str]] = ["spend"]
    encoder = Encoder()
    explains = True

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}  # what it was trained with: nothing recorded

    def encode(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(rows["spend"], dtype=float).reshape(-1, 1)

    def scores(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        count = len(matrix)
        return {"probability": np.full(count, 0.5), "predicted_value": CLV[:count],
                "expected_days_to_next_order": np.full(count, 10.0)}  # fmt: skip


class Segments:
    inputs: ClassVar[list[str]] = ["spend"]

    class rfm:  # stands in for an attribute holding a model
        @staticmethod
        def segment_array(rows: Mapping[str, np.ndarray]) -> np.ndarray:
            return np.full(len(rows["spend"]), "champions", dtype=object)

    class behaviour:
        @staticmethod
        def predict_array(rows: Mapping[str, np.ndarray]) -> np.ndarray:
            return np.full(len(rows["spend"]), "browsers", dtype=object)


WINDOWS = {"churn": 90, "repurchase": 30, "clv": 242}  # what the stand-in versions were trained with


def scorer(currency: str | None) -> Scorer:
    model: Any = Model()
    refs = {name: ModelRef(name, f"custlens-{name}", "1", "champion", None, f"{name}_v1", WINDOWS.get(name),
                           WINDOW_FROM_MODEL if name in WINDOWS else None) for name in MODELS}  # fmt: skip
    return Scorer(model, model, model, Segments(), refs, ServingSettings(), currency)  # type: ignore[arg-type]


def features(known: Sequence[bool]) -> dict[str, np.ndarray]:
    count = len(known)
    return {"customer_id": np.array([f"C{i}" for i in range(count)], dtype=object),
            "known": np.array(known), "spend": np.ones(count)}  # fmt: skip


@pytest.mark.parametrize(
    ("currency", "expected"),
    [("VND", [1_234_568.0, 37.0, 0.0]), ("USD", [1_234_567.89, 37.42, 0.0]), ("KWD", [1_234_567.891, 37.425, 0.004]),
     (None, [1_234_567.89, 37.42, 0.0])],
)  # fmt: skip
def test_predicted_clv_is_rounded_to_the_currencys_minor_units(currency: str | None, expected: list[float]) -> None:
    scored = scorer(currency).score(features([True, True, True]), NOW)

    assert scored["predicted_clv"].tolist() == pytest.approx(expected, abs=1e-9)
    assert scored["currency"].tolist() == [currency] * 3


def test_an_unknown_customer_gets_no_value_and_no_unit() -> None:
    scored = scorer("VND").score(features([True, False]), NOW)

    assert scored["currency"].tolist() == ["VND", None]
    assert scored["predicted_clv"].iloc[0] == 1_234_568.0 and np.isnan(scored["predicted_clv"].iloc[1])


class Freshness:
    def data_end(self) -> datetime:
        return NOW

    def fresh(self, now: datetime) -> bool:
        return True


class Online:
    freshness = Freshness()

    def features_columns(self, ids: Sequence[str], names: Sequence[str], now: datetime) -> dict[str, np.ndarray]:
        known = [customer_id != "C-nobody" for customer_id in ids]
        columns = features(known)
        columns["customer_id"] = np.array(ids, dtype=object)
        columns["feature_time"] = np.array([NOW if k else None for k in known], dtype=object)
        return columns

    def features_columns_as_of(
        self, ids: Sequence[str], names: Sequence[str], now: datetime
    ) -> tuple[dict[str, np.ndarray], datetime]:
        return self.features_columns(ids, names, now), now


def test_the_score_answer_carries_the_currency_of_each_scored_customer() -> None:
    loaded = Loaded(scorer("USD"), Online(), None, NOW)  # type: ignore[arg-type]
    asked = [Asked("C0", None, None), Asked("C-nobody", None, None)]

    first, nobody = score(loaded, asked, reasons=False, now=NOW)["results"]

    assert (first["predicted_clv"], first["currency"]) == (1_234_567.89, "USD")
    assert "currency" not in nobody and nobody["known"] is False


# ---------------------------------------------------------------------------------------------
# Windows


def test_the_score_answer_states_each_outputs_window_beside_the_results() -> None:
    loaded = Loaded(scorer("USD"), Online(), None, NOW)  # type: ignore[arg-type]

    answer = score(loaded, [Asked("C0", None, None)], reasons=False, now=NOW)

    assert answer["windows"] == {"churn_days": 90, "repurchase_days": 30, "clv_days": 242}
    assert list(answer) == ["scored_at", "as_of", "model_alias", "model_versions", "unserved", "windows", "results"]
    assert {"repurchase_probability", "predicted_clv"} <= set(answer["results"][0])
    assert not [name for name in answer["results"][0] if name.endswith(("_30d", "_12m"))]


def test_metadata_states_the_same_windows_and_where_each_was_read() -> None:
    runtime = Runtime(load_settings())
    runtime.loaded = Loaded(scorer("USD"), Online(), [], NOW)  # type: ignore[arg-type]

    metadata = runtime.metadata()

    assert metadata["windows"] == {"churn_days": 90, "repurchase_days": 30, "clv_days": 242}
    assert metadata["models"]["clv"]["window_days"] == 242 and metadata["models"]["clv"]["window_from"] == "model"
    assert metadata["models"]["segments"]["window_days"] is None


def clv_bundle(meta: dict[str, Any]) -> ModelBundle:
    rows = pd.DataFrame({"spend": np.arange(60, dtype=float)})
    params = {"objective": "tweedie", "verbosity": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(rows, rows["spend"]), num_boost_round=2)
    return ModelBundle(model="clv", booster=booster, features=["spend"], categories={}, meta=meta)


class Tracking:
    """An MLflow client that knows one training run and its parameters."""

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params

    def get_run(self, run_id: str) -> SimpleNamespace:
        if run_id != "run-1":
            raise MlflowException(f"Run '{run_id}' not found")
        return SimpleNamespace(data=SimpleNamespace(params=self.params))


CLV_REF = ModelRef("clv", "custlens-clv", "3", "champion", "run-1", "clv_v1")


def config_saying(clv_window_days: int) -> Settings:
    settings = load_settings()
    return settings.model_copy(
        update={"training": settings.training.model_copy(update={"clv_window_days": clv_window_days})}
    )


@pytest.mark.parametrize(
    ("meta", "params", "ref", "expected"),
    [
        # the bundle records it (every version trained since): the config now says 365
        ({"window_days": 242}, {"label_window_days": "365"}, CLV_REF, (242, WINDOW_FROM_MODEL)),
        # a version from before: its training run logged it
        ({}, {"label_window_days": "242"}, CLV_REF, (242, WINDOW_FROM_RUN)),
        # a version whose run is gone: today's config, said so
        ({}, {}, ModelRef("clv", "custlens-clv", "3", "champion", "run-deleted", "clv_v1"), (365, WINDOW_FROM_CONFIG)),
    ],
)
def test_the_window_is_read_from_the_version_and_only_last_from_the_config(
    meta: dict[str, Any], params: dict[str, str], ref: ModelRef, expected: tuple[int, str]
) -> None:
    window = _trained_window(Tracking(params), config_saying(365), ref, clv_bundle(meta))  # type: ignore[arg-type]
    assert window == expected


def test_a_window_from_todays_config_is_named_as_such() -> None:
    stand_in = scorer("USD")
    stand_in.refs["clv"] = ModelRef("clv", "custlens-clv", "3", "champion", None, "clv_v1", 365, WINDOW_FROM_CONFIG)

    assert stand_in.window_notes() == [
        "custlens-clv version 3 does not record its window: 365 days is today's training.clv_window_days; "
        "retrain it to state its own"
    ]
