"""Money in scores, without a trained project: the Scorer answers predicted CLV in the lake's
business currency, rounded to its minor units, and the /score answer carries the currency with
each scored customer. The models are stand-ins that predict fixed numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import pytest

from custlens.settings import ServingSettings
from serving.runtime import Asked, Loaded, score
from serving.scorer import MODELS, ModelRef, Scorer

NOW = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
CLV = np.array([1_234_567.891, 37.425, 0.004])  # what the stand-in CLV model predicts, unrounded


class Encoder:
    def same_as(self, other: object) -> bool:
        return True


class Model:
    """A bundle that reads `spend` and predicts a fixed probability, CLV and days."""

    features: ClassVar[list[str]] = ["spend"]
    encoder = Encoder()

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


def scorer(currency: str | None) -> Scorer:
    model: Any = Model()
    refs = {name: ModelRef(name, f"custlens-{name}", "1", "champion", None, f"{name}_v1") for name in MODELS}
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

    assert scored["predicted_clv_12m"].tolist() == pytest.approx(expected, abs=1e-9)
    assert scored["currency"].tolist() == [currency] * 3


def test_an_unknown_customer_gets_no_value_and_no_unit() -> None:
    scored = scorer("VND").score(features([True, False]), NOW)

    assert scored["currency"].tolist() == ["VND", None]
    assert scored["predicted_clv_12m"].iloc[0] == 1_234_568.0 and np.isnan(scored["predicted_clv_12m"].iloc[1])


class Online:
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

    assert (first["predicted_clv_12m"], first["currency"]) == (1_234_567.89, "USD")
    assert "currency" not in nobody and nobody["known"] is False
