"""A trained model as one self-contained bundle (LightGBM trees as text; the features it reads,
their encoding and the calibration as JSON; no pickle) and its MLflow pyfunc wrapper.

A bundle is its model's one scoring path: training's evaluation, the pyfunc and the Scorer all
encode features and predict through it. It carries the feature list it was trained on, reads it
back at load and checks it against its trees; columns are picked by name in that order, so a
reordered catalog scores the same and a missing feature is refused, never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from custlens.errors import CustlensError
from features.model_inputs import SEGMENT_INPUTS
from training.next_order import DAYS_IF_RETURN, median_days
from training.value_range import with_range

BUNDLE_FILE = "bundle.json"

# Features to score: a frame, or a dict of numpy columns (the online path), with at least the
# columns a bundle reads; other columns are ignored.
FeatureRows: TypeAlias = pd.DataFrame | Mapping[str, Any]


class FeatureEncoder:
    """Feature columns as the float matrix a booster reads: numbers as float64 (NaN for NULL),
    each category as its index in the training categories (NaN for NULL or unseen), exactly what
    LightGBM makes of the pandas frame the model was trained on."""

    def __init__(self, features: Sequence[str], categories: Mapping[str, Sequence[str]]) -> None:
        self.features = tuple(features)
        self.codes = {name: {label: float(i) for i, label in enumerate(labels)} for name, labels in categories.items()}

    def same_as(self, other: FeatureEncoder) -> bool:
        return self.features == other.features and self.codes == other.codes

    def encode(self, rows: FeatureRows) -> np.ndarray:
        count = len(rows[self.features[0]]) if self.features else 0
        out = np.empty((count, len(self.features)), dtype="float64")
        for j, name in enumerate(self.features):
            column = rows[name]
            if name in self.codes:
                codes = self.codes[name]
                out[:, j] = [codes.get(label, np.nan) if isinstance(label, str) else np.nan for label in column]
            elif column.dtype == "float64":
                out[:, j] = column
            else:
                out[:, j] = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return out


def _require_columns(rows: FeatureRows, names: Sequence[str], reader: str, service: str) -> None:
    """Refuse rows that lack a feature `reader` reads, naming the features and what to do."""
    columns = rows.columns if isinstance(rows, pd.DataFrame) else rows
    missing = [name for name in names if name not in columns]
    if missing:
        raise CustlensError(
            f"{reader} reads {', '.join(missing)}, which the features to score lack; score it with the "
            f"features of its service {service or '(none named)'}, or retrain it on today's catalog"
        )


def _require_served(services: Mapping[str, Collection[str]], names: Sequence[str], reader: str, service: str) -> None:
    """Refuse a model whose FeatureService, as the feature store has it, does not serve all it reads."""
    if service not in services:
        raise CustlensError(
            f"{reader} names the feature service {service or '(none)'}, which the feature store does not "
            "have; apply the definitions it was trained with (`custlens features apply`) or retrain it"
        )
    missing = [name for name in names if name not in services[service]]
    if missing:
        raise CustlensError(
            f"{reader} reads {', '.join(missing)}, which its feature service {service} does not serve; "
            "apply the definitions it was trained with (`custlens features apply`) or retrain it"
        )


def _difference(listed: list[str], trained: list[str]) -> str:
    """How a bundle's feature list differs from its trees' feature names, in words."""
    if sorted(listed) == sorted(trained):
        moved = [name for name, other in zip(listed, trained, strict=True) if name != other]
        return f"the same features in another order ({', '.join(moved)} moved)"
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("listed but not in the trees", [n for n in listed if n not in trained]),
            ("in the trees but not listed", [n for n in trained if n not in listed]),
        )
        if names
    ]
    return "; ".join(parts)


# In a probability model's meta: the percentiles 0..100 of its scores on its test rows (for churn,
# the churn population at the test cutoff), from which the Scorer cuts risk bands by quantile.
SCORE_PERCENTILES = "score_percentiles"
# In a model's meta: each numeric feature's median on its test rows, the "typical" customer that
# the reasons behind a churn score compare the customer with (serving.reasons).
FEATURE_MEDIANS = "feature_medians"
# In a classifier's meta: per numeric feature with a clear direction, +1 when more of it raises the
# score and -1 when it lowers it (the sign of the rank correlation of the feature with its own
# contributions on the test rows, kept where that correlation is at least MIN_DIRECTION).
FEATURE_DIRECTIONS = "feature_directions"
MIN_DIRECTION = 0.5


def feature_directions(matrix: pd.DataFrame, contributions: np.ndarray) -> dict[str, int]:
    """FEATURE_DIRECTIONS of a booster from its per-row contributions (rows, features) on `matrix`."""
    directions: dict[str, int] = {}
    for j, name in enumerate(matrix.columns):
        values = matrix[name]
        if not pd.api.types.is_numeric_dtype(values):
            continue
        known = values.notna().to_numpy()
        if known.sum() < 30 or values[known].nunique() < 3 or np.ptp(contributions[known, j]) == 0:
            continue  # too few values, or a feature the trees never split on: no direction
        rho = pd.Series(values.to_numpy()[known]).corr(pd.Series(contributions[known, j]), method="spearman")
        if np.isfinite(rho) and abs(rho) >= MIN_DIRECTION:
            directions[name] = 1 if rho > 0 else -1
    return directions


def score_percentiles(scores: np.ndarray) -> list[float]:
    """Percentiles 0, 1, .., 100 of the finite scores (empty when there are none)."""
    finite = np.asarray(scores, dtype="float64")
    finite = finite[np.isfinite(finite)]
    return [round(float(v), 6) for v in np.percentile(finite, np.arange(101))] if len(finite) else []


@dataclass
class ModelBundle:
    """What a model needs to score a frame of features, and the one way it does."""

    model: str  # churn | repurchase | clv
    booster: lgb.Booster
    features: list[str]  # what the trees read, in their order: saved with them, never today's catalog
    categories: dict[str, list[str]]  # the training labels of each category feature, in code order
    calibration: tuple[float, float] | None = None  # Platt (slope, intercept) on the raw log-odds
    timing_booster: lgb.Booster | None = None  # repurchase: log1p(days to the next order)
    # clv as a two-part (hurdle) model: `booster` is then the classifier of P(net revenue > 0 in the
    # window), calibrated like churn's, and these trees E[net revenue | > 0] (training.two_part)
    value_booster: lgb.Booster | None = None
    feature_service: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # where it came from ("custlens-churn version 3"), for messages; not saved

    def __post_init__(self) -> None:
        self.features = list(self.features)
        self.check()

    @property
    def name(self) -> str:
        return self.origin or f"the {self.model} model"

    # what a Scorer asks of any model it serves (a baseline's answers differ: serving.scorer)
    kind = "learned"
    explains = True  # per-feature contributions: churn reasons

    def check(self) -> None:
        """The trees read exactly `features` in this order, and code categories as `categories`."""
        boosters = (("trees", self.booster), ("timing trees", self.timing_booster), ("value trees", self.value_booster))
        for role, booster in boosters:
            if booster is not None and list(booster.feature_name()) != self.features:
                raise CustlensError(
                    f"{self.name}: its feature list does not match its {role}: "
                    f"{_difference(self.features, list(booster.feature_name()))}; the bundle cannot score "
                    "as it was trained: retrain it (`custlens train`)"
                )
        unknown = sorted(set(self.categories) - set(self.features))
        if unknown:
            raise CustlensError(f"{self.name}: categories for {', '.join(unknown)}, which it does not read; retrain it")
        # LightGBM keeps the labels it coded its pandas training frame with: the encoder must agree.
        trained_labels = getattr(self.booster, "pandas_categorical", None)
        coded = [self.categories[name] for name in self.features if name in self.categories]
        if trained_labels is not None and [list(labels) for labels in trained_labels] != coded:
            raise CustlensError(
                f"{self.name}: its category codes differ from the ones its trees were trained with; retrain it"
            )

    # -- scoring ----------------------------------------------------------------------------------

    @cached_property
    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder(self.features, self.categories)

    def encode(self, rows: FeatureRows) -> np.ndarray:
        """The trees' input matrix of `rows`, its columns picked by name in the bundle's order."""
        try:
            return self.encoder.encode(rows)
        except KeyError:  # asked for here, not up front: a check per call costs the online path
            _require_columns(rows, self.features, self.name, self.feature_service)
            raise

    def raw_score(self, rows: FeatureRows | np.ndarray) -> np.ndarray:
        """The trees' output (probability before calibration, or value) for rows or an encoded matrix."""
        matrix = rows if isinstance(rows, np.ndarray) else self.encode(rows)
        return np.asarray(self.booster.predict(matrix), dtype=float)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration is None:
            return raw
        slope, intercept = self.calibration
        clipped = np.clip(raw, 1e-6, 1 - 1e-6)
        return 1.0 / (1.0 + np.exp(-(slope * np.log(clipped / (1 - clipped)) + intercept)))

    def scores(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """The predictions of an encoded matrix: `probability` (churn, repurchase) or
        `predicted_value` (clv, with its P10-P90 range when the bundle holds one:
        training.value_range), and for repurchase `expected_days_to_next_order`."""
        raw = self.raw_score(matrix)
        if self.model == "clv":
            if self.value_booster is None:  # one Tweedie regressor of the value
                return with_range(np.maximum(raw, 0.0), self.meta)
            # two-part: P(buy) x E[value | buy], the mean of a value that is 0 for who does not buy
            value = np.asarray(self.value_booster.predict(matrix), dtype=float)
            return with_range(np.clip(self.calibrate(raw), 0.0, 1.0) * np.maximum(value, 0.0), self.meta)
        out = {"probability": np.clip(self.calibrate(raw), 0.0, 1.0)}
        if self.timing_booster is not None:
            # the typical wait of a customer who orders again, joined with the probability into the
            # date by which an order is as likely as not (training.next_order)
            wait = np.expm1(np.asarray(self.timing_booster.predict(matrix), dtype=float))
            out[DAYS_IF_RETURN] = wait
            window = self.meta.get("window_days")  # recorded since issue 14; without it no consistent date
            out["expected_days_to_next_order"] = (median_days(out["probability"], float(window), wait) if window
                                                  else np.full(len(wait), np.nan))  # fmt: skip
        return out

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features) contribution of each feature to the raw score (log-odds for a classifier,
        log value for Tweedie). A two-part CLV adds its parts' contributions, log-odds of buying
        plus log value given a purchase: each feature's effect on log(odds x value), which orders
        customers as the prediction p x value does where p is small and stays additive over
        features (the log of the prediction itself, log p + log value, is not additive in log-odds)."""
        out = np.asarray(self.booster.predict(matrix, pred_contrib=True), dtype=float)[:, :-1]  # last: expected
        if self.value_booster is not None:
            out = out + np.asarray(self.value_booster.predict(matrix, pred_contrib=True), dtype=float)[:, :-1]
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`scores` of a features frame, one row per input row."""
        return pd.DataFrame(self.scores(self.encode(frame)), index=frame.index)

    def require_served(self, services: Mapping[str, Collection[str]]) -> None:
        """Refuse to score if its FeatureService (`services`: what each serves) lacks a feature it reads."""
        _require_served(services, self.features, self.name, self.feature_service)

    # -- storage ----------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        self.check()
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model,
            "booster": self.booster.model_to_string(),
            "categories": self.categories,
            "calibration": self.calibration,
            "timing_booster": self.timing_booster.model_to_string() if self.timing_booster else None,
            "value_booster": self.value_booster.model_to_string() if self.value_booster else None,
            "feature_service": self.feature_service,
            "features": self.features,
            "meta": self.meta,
        }
        path = folder / BUNDLE_FILE
        path.write_text(json.dumps(state), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path, origin: str = "") -> ModelBundle:
        """The bundle saved at `path`, checked; `origin` names it in messages (default: the path)."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        origin = origin or f"the {state.get('model', 'model')} bundle at {path}"
        if not state.get("features"):
            raise CustlensError(f"{origin} does not say which features it reads; retrain it (`custlens train`)")
        timing, value = state.get("timing_booster"), state.get("value_booster")  # saved before both: None
        calibration = state.get("calibration")
        return cls(
            model=state["model"],
            booster=lgb.Booster(model_str=state["booster"]),
            features=list(state["features"]),
            categories=state["categories"],
            calibration=(calibration[0], calibration[1]) if calibration else None,
            timing_booster=lgb.Booster(model_str=timing) if timing else None,
            value_booster=lgb.Booster(model_str=value) if value else None,
            feature_service=state.get("feature_service", ""),
            meta=state.get("meta", {}),
            origin=origin,
        )


class CustlensModel(PythonModel):
    """The MLflow face of a ModelBundle: `predict(features frame) -> scores frame`."""

    bundle: ModelBundle

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(model_input)


SEGMENTS_FILE = "segments.json"


@dataclass
class SegmentsBundle:
    """RFM quintile edges and the behavioural clusters with their names: all a Scorer needs."""

    rfm: Any  # training.segments.RfmScorer
    behaviour: Any  # training.segments.BehaviouralSegmenter
    feature_service: str = ""
    origin: str = ""  # where it came from, for messages; not saved

    @property
    def name(self) -> str:
        return self.origin or "the segments"

    @property
    def inputs(self) -> list[str]:
        """The features the segments read, in a fixed order."""
        return list(SEGMENT_INPUTS.names)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"rfm_segment": self.rfm.segment(frame), "behavioural_segment": self.behaviour.predict(frame)},
            index=frame.index,
        )

    def require_served(self, services: Mapping[str, Collection[str]]) -> None:
        _require_served(services, self.inputs, self.name, self.feature_service)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SEGMENTS_FILE
        state = {
            "rfm": self.rfm.to_dict(),
            "behaviour": self.behaviour.to_dict(),
            "feature_service": self.feature_service,
        }
        path.write_text(json.dumps(state), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path, origin: str = "") -> SegmentsBundle:
        from training.segments import BehaviouralSegmenter, RfmScorer

        state = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(RfmScorer.from_dict(state["rfm"]), BehaviouralSegmenter.from_dict(state["behaviour"]),
                   state.get("feature_service", ""), origin)  # fmt: skip


class SegmentsModel(PythonModel):
    """The MLflow face of a SegmentsBundle: `predict(features frame) -> rfm and behavioural segment`."""

    bundle: SegmentsBundle

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = SegmentsBundle.load(Path(context.artifacts["segments"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(model_input)
