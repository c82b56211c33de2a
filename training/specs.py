"""What each supervised model is, one frozen record per model: the label it learns, LightGBM's
objective, the score it outputs and how that score is measured, whether it is calibrated, its
extras, and the baselines it must beat. `train_model` reads the record and never branches on a
model's name; a new model is a new entry here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from custlens.settings import Settings
from training.evaluation import PRIMARY_METRIC, classifier_metrics, value_metrics
from training.frames import ModelName, label_window
from training.next_order import DAYS_IF_RETURN
from training.tuning import Objective

# The column of ModelBundle.predict that is the model's score.
Output = Literal["probability", "predicted_value"]


@dataclass(frozen=True)
class NextOrderTiming:
    """A second booster next to the classifier: log1p(days to the next order), fitted on the rows
    whose next order is known, so the model also gives an expected next-order date."""

    target: str = "days_to_next_order"  # label column (training.labels)
    output: str = DAYS_IF_RETURN  # its column in ModelBundle.predict (the date also counts who never return)
    metric: str = "test_next_order_mae_days"  # mean absolute error on the test rows whose next order is known


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    label: str  # label column of the training frame (training.labels)
    objective: Objective
    output: Output
    calibrated: bool  # Platt scaling fitted on the validation window
    baselines: tuple[str, ...]  # names in training.baselines.BASELINES, run (and gated) in this order
    # The rows whose label is positive (a churner, a buyer) and the others, one of each in words
    # (custlens.words.counted makes the plural): what the data minimums count in each split
    # (training.sufficiency).
    classes: tuple[str, str]
    label_is_no_order: bool = False  # the label is 1 when no order falls in its window (churn)
    timing: NextOrderTiming | None = None
    # The least target the objective accepts: LightGBM's Tweedie refuses a negative one, and a net
    # revenue label is negative when refunds in the window exceed purchases. Fitting sees the label
    # floored here; test metrics see the label as it is.
    fit_floor: float | None = None
    # Features whose effect on the score has a known sign (+1: more of it never lowers the score),
    # held by LightGBM's monotone constraints: a later last order never lowers a churn probability,
    # whatever the trees found in a few thousand rows. Only what holds for every customer is here:
    # more past orders are not (BG/NBD: a frequent buyer gone quiet is likelier gone).
    monotone: Mapping[str, int] = field(default_factory=dict)
    # A value model that may also be fitted as two parts, P(label > 0) x E[label | label > 0]
    # (training.two_part; `training.clv_design` says which design, or both and validation chooses).
    two_part: bool = False

    def tree_params(self, columns: Sequence[str]) -> dict[str, Any]:
        """The LightGBM parameters fixed by the spec for a matrix of `columns` (monotone constraints)."""
        if not any(name in self.monotone for name in columns):
            return {}
        return {"monotone_constraints": [self.monotone.get(name, 0) for name in columns],
                "monotone_constraints_method": "intermediate"}  # fmt: skip

    @property
    def primary_metric(self) -> str:
        """The test metric the model is ranked and promoted by (training.evaluation owns the choice)."""
        return PRIMARY_METRIC[self.name][0]

    def label_window(self, settings: Settings) -> int:
        return label_window(settings, self.name)

    def labels(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[self.label].astype(float).to_numpy()

    def fit_targets(self, rows: pd.DataFrame) -> np.ndarray:
        """The labels the booster is fitted and tuned on: `labels`, floored at `fit_floor`."""
        labels = self.labels(rows)
        return labels if self.fit_floor is None else np.maximum(labels, self.fit_floor)

    def is_positive(self, rows: pd.DataFrame) -> np.ndarray:
        """The rows of the positive class: label 1, or net revenue above 0 (a buyer in the CLV window)."""
        return self.labels(rows) > 0

    def scores(self, predicted: pd.DataFrame) -> np.ndarray:
        """The model's score out of a ModelBundle.predict frame."""
        return predicted[self.output].to_numpy()

    def test_metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """The same keys for the model, its champion and its baselines."""
        if self.output == "probability":
            return classifier_metrics(actual, predicted)
        return value_metrics(actual, predicted)


SPECS: dict[ModelName, ModelSpec] = {
    "churn": ModelSpec(
        name="churn",
        label="churned",
        objective="binary",
        output="probability",
        calibrated=True,
        baselines=("logistic_rfm", "bgnbd"),
        classes=("churner", "non-churner"),
        label_is_no_order=True,
        monotone={
            "days_since_last_order": 1,
            "days_since_last_engagement": 1,
            "btyd_prob_alive": -1,
            "btyd_prob_no_purchase_churn_window": 1,
            "btyd_expected_purchases_churn_window": -1,
        },
    ),
    "repurchase": ModelSpec(
        name="repurchase",
        label="repurchased",
        objective="binary",
        output="probability",
        calibrated=True,
        baselines=("bgnbd",),
        classes=("buyer", "non-buyer"),
        timing=NextOrderTiming(),
        monotone={
            "days_since_last_order": -1,
            "days_since_last_engagement": -1,
            "btyd_prob_alive": 1,
            "btyd_prob_no_purchase_repurchase_window": -1,
            "btyd_expected_purchases_repurchase_window": 1,
        },
    ),
    "clv": ModelSpec(
        name="clv",
        label="revenue_next",
        objective="tweedie",
        output="predicted_value",
        calibrated=False,
        baselines=("bgnbd_gamma_gamma",),
        classes=("buyer", "non-buyer"),
        fit_floor=0.0,
        two_part=True,
    ),
}
