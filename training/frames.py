"""Training frames: which cutoffs train, validate and test each model, and the rows themselves
(Feast point-in-time features of the model's FeatureService joined to the labels)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.lake.tables import cutoff_instant, lake_end
from features.model_inputs import TREE_INPUTS, service_spec
from features.snapshot_reader import snapshot_cutoffs
from training.labels import compute_labels, window_complete

ModelName = Literal["churn", "repurchase", "clv"]
SplitName = Literal["train", "validation", "test"]

# The FeatureService each model trains with next (a registered version keeps the one it names).
FEATURE_SERVICES: dict[ModelName, str] = {
    model: service_spec(model).service for model in ("churn", "repurchase", "clv")
}

# What the LightGBM models read, from their one declaration (features/model_inputs.py): every
# stored number, the request-time day counts, and the categories. The three read the same list,
# so one matrix per frame serves them; a trained model keeps its own copy in its bundle.
NUMERIC_FEATURES = TREE_INPUTS.numbers
CATEGORY_FEATURES = TREE_INPUTS.categories


def label_window(settings: Settings, model: ModelName) -> int:
    windows = settings.training
    return {
        "churn": windows.churn_window_days,
        "repurchase": windows.repurchase_window_days,
        "clv": windows.clv_window_days,
    }[model]


@dataclass(frozen=True)
class Split:
    """Cutoffs of one model. The test cutoff is the last with a complete label window; no training
    or validation label window reaches past it, so nothing learned has seen the test period.
    Training label windows end by the validation cutoff where the history allows it; validation
    customers are held out of training altogether (see `is_validation_customer`): with overlapping
    windows, trees that memorize a customer's label from one month would otherwise score the same
    customer a month later as if they could foresee it (measured: validation AUC 0.85, test 0.78)."""

    train: tuple[date, ...]
    validation: date
    test: date

    @property
    def all(self) -> tuple[date, ...]:
        return (*self.train, self.validation, self.test)

    def of(self, cutoff: date) -> SplitName:
        if cutoff == self.test:
            return "test"
        return "validation" if cutoff == self.validation else "train"


def plan_split(cutoffs: list[date], window_days: int, end: pd.Timestamp, train_cutoffs: int) -> Split:
    """Test: the last cutoff whose label window is complete by `end`. Validation: the last cutoff
    whose label window ends by the test cutoff. Train: the `train_cutoffs` cutoffs before it."""
    complete = [c for c in sorted(cutoffs) if window_complete(c, window_days, end)]
    if not complete:
        raise CustlensError(
            f"no feature snapshot has a complete {window_days}-day label window before {end:%Y-%m-%d}; "
            "build snapshots further back (`custlens features build`) or shorten the window in the config"
        )
    test = complete[-1]
    before_test = [c for c in complete if c + timedelta(days=window_days) <= test]
    if len(before_test) < 2:
        raise CustlensError(
            f"the {window_days}-day window leaves {len(before_test)} cutoff(s) before the test cutoff {test}; "
            "training needs at least two (one validates): build more snapshots or shorten the window"
        )
    validation = before_test[-1]
    gapped = [c for c in before_test if c + timedelta(days=window_days) <= validation]
    # Too short a history for a gap (a 365-day window over three years): the customer holdout alone
    # keeps validation honest.
    train = gapped if len(gapped) >= min(MIN_GAPPED_CUTOFFS, train_cutoffs) else before_test[:-1]
    return Split(train=tuple(train[-train_cutoffs:]), validation=validation, test=test)


# Fewest training cutoffs worth keeping a validation gap for.
MIN_GAPPED_CUTOFFS = 3
# Share of customers whose rows validate and never train.
VALIDATION_CUSTOMER_SHARE = 0.2


def is_validation_customer(customer_ids: pd.Series) -> np.ndarray:
    """A stable fifth of customers, by a hash of the id: the same on every run and every model."""
    digits = customer_ids.astype(str).map(lambda i: int(hashlib.blake2b(i.encode(), digest_size=4).hexdigest(), 16))
    return (digits.to_numpy() % 1000) < VALIDATION_CUSTOMER_SHARE * 1000


def model_split(settings: Settings, model: ModelName) -> Split:
    periodic = [c for c in snapshot_cutoffs(settings) if c.day == 1]  # month starts: evenly spaced
    return plan_split(periodic, label_window(settings, model), lake_end(settings), settings.training.train_cutoffs)


@dataclass
class ModelFrame:
    model: ModelName
    split: Split
    service: str
    rows: pd.DataFrame  # customer_id, cutoff, split, features..., label columns

    def part(self, name: SplitName) -> pd.DataFrame:
        return self.rows[self.rows["split"] == name]

    @property
    def features(self) -> list[str]:
        return [*NUMERIC_FEATURES, *CATEGORY_FEATURES]


def build_model_frame(settings: Settings, model: ModelName) -> ModelFrame:
    """Every labelled (customer, cutoff) row of the model's split with its point-in-time features."""
    split = model_split(settings, model)
    labels = compute_labels(settings, split.all)
    if model == "churn":
        labels = labels[labels["active"]]  # churn is defined for customers active before the cutoff
    service = FEATURE_SERVICES[model]
    from features.store import training_frame  # Feast takes seconds to import: only where a frame is built

    features = training_frame(settings, labels[["customer_id", "cutoff"]], service)
    rows = pd.concat(
        [features.reset_index(drop=True), labels.drop(columns=["customer_id", "cutoff"]).reset_index(drop=True)],
        axis=1,
    )
    rows["split"] = [split.of(c.date()) for c in rows["cutoff"]]
    held_out = is_validation_customer(rows["customer_id"])
    keep = np.where(rows["split"] == "train", ~held_out, np.where(rows["split"] == "validation", held_out, True))
    rows = rows[keep].reset_index(drop=True)
    for name in CATEGORY_FEATURES:
        rows[name] = rows[name].astype("category")
    return ModelFrame(model, split, service, rows)


def feature_matrix(rows: pd.DataFrame, categories: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The model input in a fixed column order; categories fixed to the training ones (unseen -> NaN)."""
    matrix = rows[[*NUMERIC_FEATURES, *CATEGORY_FEATURES]].copy()
    for name in NUMERIC_FEATURES:
        matrix[name] = pd.to_numeric(matrix[name], errors="coerce").astype("float64")
    for name in CATEGORY_FEATURES:
        known = categories[name] if categories else sorted(matrix[name].dropna().astype(str).unique())
        matrix[name] = pd.Categorical(matrix[name].astype("object").where(matrix[name].notna(), None), categories=known)
    return matrix


def cutoff_of(day: date) -> pd.Timestamp:
    return pd.Timestamp(cutoff_instant(day))
