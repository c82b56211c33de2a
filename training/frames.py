"""Training frames: which cutoffs train, validate and test each model, and the rows themselves
(Feast point-in-time features of the model's FeatureService joined to the labels)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.btyd import stale_windows, window_days
from features.lake.tables import cutoff_instant, lake_end
from features.model_inputs import TREE_INPUTS, ModelInputs, feature_family, service_spec, spec_of_service
from features.snapshot_reader import snapshot_cutoffs
from features.snapshots import grid_counts, grid_every, is_period_start
from training.labels import compute_labels, window_complete

ModelName = Literal["churn", "repurchase", "clv"]
SplitName = Literal["train", "validation", "test"]

# The FeatureService each model trains with next (a registered version keeps the one it names).
FEATURE_SERVICES: dict[ModelName, str] = {
    model: service_spec(model).service for model in ("churn", "repurchase", "clv")
}

# What the LightGBM models read is their service's (features/model_inputs.py, `ModelFrame.inputs`);
# every version reads the same categories. Version 1's numbers, as the v1 models were trained on.
# A trained model keeps its own copy of its list in its bundle.
NUMERIC_FEATURES = TREE_INPUTS.numbers
CATEGORY_FEATURES = TREE_INPUTS.categories


# The setting under `training` that holds each model's label window.
WINDOW_KEYS: dict[ModelName, str] = {
    "churn": "churn_window_days",
    "repurchase": "repurchase_window_days",
    "clv": "clv_window_days",
}


def label_window(settings: Settings, model: ModelName) -> int:
    return int(getattr(settings.training, WINDOW_KEYS[model]))


@dataclass(frozen=True)
class Split:
    """Cutoffs of one model. The test cutoff is the last with a complete label window; no training
    or validation label window reaches past it, so nothing learned has seen the test period.
    Validation is the held-out customers at one or more cutoffs (`training.validation_cutoffs`:
    one cutoff holds a fifth of the customers, a few hundred rows on a small business, too few to
    tune or calibrate on). Training label windows end by the last validation cutoff where the
    history allows it; validation customers are held out of training altogether (see
    `is_validation_customer`): with overlapping
    windows, trees that memorize a customer's label from one month would otherwise score the same
    customer a month later as if they could foresee it (measured: validation AUC 0.85, test 0.78)."""

    train: tuple[date, ...]
    validation: tuple[date, ...]
    test: date

    @property
    def all(self) -> tuple[date, ...]:
        return tuple(sorted({*self.train, *self.validation, self.test}))  # a cutoff can train and validate

    def assign(self, cutoffs: pd.Series, held_out: np.ndarray) -> np.ndarray:
        """Each row's split from its cutoff (dates) and whether its customer is held out to
        validate; "" for a row in none (a held-out customer at a training-only cutoff)."""
        test = (cutoffs == self.test).to_numpy()
        validation = cutoffs.isin(self.validation).to_numpy() & held_out
        train = cutoffs.isin(self.train).to_numpy() & ~held_out
        return np.select([test, validation, train], ["test", "validation", "train"], default="")

    def describe_validation(self) -> str:
        """The validation cutoffs in words: `2025-06-01`, or `2025-04-07..2025-06-30 (13 cutoffs)`."""
        first, last = self.validation[0], self.validation[-1]
        return first.isoformat() if first == last else f"{first}..{last} ({len(self.validation)} cutoffs)"


class CannotTrain(CustlensError):
    """The data cannot train this model (its window does not fit the history, a split too small):
    `custlens train` records why and goes on with the other models."""


def plan_split(
    cutoffs: list[date],
    window_days: int,
    end: datetime,
    train_cutoffs: int,
    window_key: str = "the label window",
    validation_cutoffs: int = 1,
) -> Split:
    """Test: the last cutoff whose label window is complete by `end`. Validation: the last
    `validation_cutoffs` cutoffs whose label windows end by the test cutoff (its held-out
    customers). Train: the `train_cutoffs` cutoffs whose windows end by the last of them (its
    other customers). A window that leaves no such split is a CannotTrain naming `window_key` and
    the longest window that would fit."""
    ordered = _before(cutoffs, end)
    complete = [c for c in ordered if window_complete(c, window_days, end)]
    test = complete[-1] if complete else None
    before_test = [c for c in complete if test and c + timedelta(days=window_days) <= test]
    if test is None or len(before_test) < 2:
        raise CannotTrain(_window_does_not_fit(ordered, window_days, end, window_key))
    last = before_test[-1]
    gapped = [c for c in before_test if c + timedelta(days=window_days) <= last]
    # Too short a history for a gap (a 365-day window over three years): the customer holdout alone
    # keeps validation honest.
    train = gapped if len(gapped) >= min(MIN_GAPPED_CUTOFFS, train_cutoffs) else before_test[:-1]
    # More validation cutoffs add held-out rows and leave the training rows as one would: training
    # the latest months matters more than a longer gap (CLV on the generated sample lost 0.01 Gini
    # when three validation months pushed its training two months back). A cutoff can then be in
    # both: its held-out customers validate, the others train.
    validation = tuple(before_test[-validation_cutoffs:])
    return Split(train=tuple(train[-train_cutoffs:]), validation=validation, test=test)


def longest_window(cutoffs: list[date], end: datetime) -> int:
    """The longest label window, in days, that `plan_split` can place on these cutoffs: a test
    cutoff t whose window ends by `end`, and two cutoffs whose windows end by t (0: none fits)."""
    ordered = _before(cutoffs, end)
    if len(ordered) < 3:
        return 0
    second = ordered[1]
    return max(min((end - cutoff_instant(t)).days, (t - second).days) for t in ordered[2:])


def _before(cutoffs: list[date], end: datetime) -> list[date]:
    """The cutoffs a label window can follow: those before the data end (not today's, years later)."""
    return sorted(c for c in cutoffs if cutoff_instant(c) < end)


def _window_does_not_fit(cutoffs: list[date], window_days: int, end: datetime, key: str) -> str:
    if not cutoffs:
        return f"{key} ({window_days} days): no feature snapshot on the cutoff grid; run `custlens features build`"
    span = f"snapshot cutoffs {cutoffs[0]}..{cutoffs[-1]}, data end {end:%Y-%m-%d}"
    longest = longest_window(cutoffs, end)
    if longest == 0:
        return (
            f"{key} ({window_days} days) cannot be placed: a split needs three cutoffs on the grid and the "
            f"history has {len(cutoffs)} ({span}); build more snapshots (`custlens features build`)"
        )
    return (
        f"{key} ({window_days} days) does not fit the history ({span}): the test window must end by the data end "
        f"and two earlier windows (train, validation) by the test cutoff. The longest window that fits is "
        f"{longest} days: set {key} to at most {longest}, or build snapshots at earlier cutoffs if the orders "
        f"start before {cutoffs[0]}"
    )


# Fewest training cutoffs worth keeping a validation gap for.
MIN_GAPPED_CUTOFFS = 3
# Share of customers whose rows validate and never train.
VALIDATION_CUSTOMER_SHARE = 0.2


def _customer_hash(customer_ids: pd.Series) -> np.ndarray:
    """A stable number per customer id: the same on every run and every model."""
    digits = customer_ids.astype(str).map(lambda i: int(hashlib.blake2b(i.encode(), digest_size=4).hexdigest(), 16))
    return digits.to_numpy()


def is_validation_customer(customer_ids: pd.Series) -> np.ndarray:
    """A stable fifth of customers, by a hash of the id: the same on every run and every model."""
    return (_customer_hash(customer_ids) % 1000) < VALIDATION_CUSTOMER_SHARE * 1000


def customer_folds(customer_ids: pd.Series, folds: int) -> np.ndarray:
    """Each row's fold (0..folds-1) by a hash of its customer: all rows of a customer in one fold."""
    return (_customer_hash(customer_ids) // 1000) % folds


def grid_cutoffs(settings: Settings, every: str | None = None) -> list[date]:
    """The built snapshot cutoffs on the configured grid (`features.cutoff_every`; `every`: the
    grid, when the caller has it): evenly spaced, so a split means the same at every cutoff. A
    snapshot off the grid (today's, an `--as-of` date) is scored and served, never trained on."""
    every = every or grid_every(settings)
    return [c for c in snapshot_cutoffs(settings) if is_period_start(c, every)]


def model_split(settings: Settings, model: ModelName) -> Split:
    every = grid_every(settings)
    counts = grid_counts(settings, every)
    return plan_split(grid_cutoffs(settings, every), label_window(settings, model), lake_end(settings),
                      counts.train, f"training.{WINDOW_KEYS[model]}", counts.validation)  # fmt: skip


@dataclass
class ModelFrame:
    model: ModelName
    split: Split
    service: str
    rows: pd.DataFrame  # customer_id, cutoff, split, features..., label columns
    note: str = ""  # what a reader of the run should know of its features (btyd_windows_note)

    def part(self, name: SplitName) -> pd.DataFrame:
        return self.rows[self.rows["split"] == name]

    @property
    def inputs(self) -> ModelInputs:
        """What the model reads: its FeatureService's features."""
        return spec_of_service(self.service).inputs

    @property
    def features(self) -> list[str]:
        return list(self.inputs.names)


def build_model_frame(settings: Settings, model: ModelName) -> ModelFrame:
    """Every labelled (customer, cutoff) row of the model's split with its point-in-time features."""
    split = model_split(settings, model)
    service = FEATURE_SERVICES[model]
    labels = compute_labels(settings, split.all)
    if model == "churn":
        labels = labels[labels["active"]]  # churn is defined for customers active before the cutoff
    from features.store import training_frame  # Feast takes seconds to import: only where a frame is built

    features = training_frame(settings, labels[["customer_id", "cutoff"]], service)
    rows = pd.concat(
        [features.reset_index(drop=True), labels.drop(columns=["customer_id", "cutoff"]).reset_index(drop=True)],
        axis=1,
    )
    rows["split"] = split.assign(rows["cutoff"].dt.date, is_validation_customer(rows["customer_id"]))
    rows = rows[rows["split"] != ""].reset_index(drop=True)
    for name in CATEGORY_FEATURES:
        rows[name] = rows[name].astype("category")
    return ModelFrame(model, split, service, rows, btyd_windows_note(settings, split, spec_of_service(service).inputs))


def btyd_windows_note(settings: Settings, split: Split, inputs: ModelInputs) -> str:
    """Why the btyd features of this split describe other windows than the model's, if they do: the
    windows changed since `custlens features build`. They are still what the model reads online (the
    same snapshots), so training goes on and says so; empty when they agree or none is read."""
    if not any(feature_family(name) == "btyd" for name in inputs.names):
        return ""
    stale = stale_windows(settings, split.all)
    if not stale:
        return ""
    return (
        f"the btyd features at {len(stale)} cutoff(s) ({stale[0]}..{stale[-1]}) were built for other label windows "
        f"than {window_days(settings)}; run `custlens features build` so they describe the model's own windows"
    )


def feature_matrix(
    rows: pd.DataFrame, categories: dict[str, list[str]] | None = None, inputs: ModelInputs = TREE_INPUTS
) -> pd.DataFrame:
    """The model input (`inputs`: a frame's, `ModelFrame.inputs`) in a fixed column order; categories
    fixed to the training ones (unseen -> NaN)."""
    matrix = rows[list(inputs.names)].copy()
    for name in inputs.numbers:
        matrix[name] = pd.to_numeric(matrix[name], errors="coerce").astype("float64")
    for name in inputs.categories:
        known = categories[name] if categories else sorted(matrix[name].dropna().astype(str).unique())
        matrix[name] = pd.Categorical(matrix[name].astype("object").where(matrix[name].notna(), None), categories=known)
    return matrix


def cutoff_of(day: date) -> pd.Timestamp:
    return pd.Timestamp(cutoff_instant(day))
