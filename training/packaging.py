"""A trained model as one self-contained bundle (LightGBM trees as text, calibration and feature
spec as JSON; no pickle) and its MLflow pyfunc wrapper. The Scorer unwraps the bundle to call
it on a feature frame directly; anything else can use the pyfunc."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from training.frames import CATEGORY_FEATURES, NUMERIC_FEATURES, feature_matrix

BUNDLE_FILE = "bundle.json"


@dataclass
class ModelBundle:
    """What a model needs to score a frame of features."""

    model: str  # churn | repurchase | clv
    booster: lgb.Booster
    categories: dict[str, list[str]]
    calibration: tuple[float, float] | None = None  # Platt (slope, intercept) on the raw log-odds
    timing_booster: lgb.Booster | None = None  # repurchase: log1p(days to the next order)
    feature_service: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [*NUMERIC_FEATURES, *CATEGORY_FEATURES]

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        return feature_matrix(frame, self.categories)

    def raw_score(self, matrix: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix), dtype=float)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration is None:
            return raw
        slope, intercept = self.calibration
        clipped = np.clip(raw, 1e-6, 1 - 1e-6)
        return 1.0 / (1.0 + np.exp(-(slope * np.log(clipped / (1 - clipped)) + intercept)))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per input row: `probability` (churn, repurchase) or `predicted_value` (clv),
        and for repurchase `expected_days_to_next_order`."""
        matrix = self.matrix(frame)
        raw = self.raw_score(matrix)
        if self.model == "clv":
            return pd.DataFrame({"predicted_value": np.maximum(raw, 0.0)}, index=frame.index)
        out = pd.DataFrame({"probability": np.clip(self.calibrate(raw), 0.0, 1.0)}, index=frame.index)
        if self.timing_booster is not None:
            out["expected_days_to_next_order"] = np.expm1(np.asarray(self.timing_booster.predict(matrix), dtype=float))
        return out

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model,
            "booster": self.booster.model_to_string(),
            "categories": self.categories,
            "calibration": self.calibration,
            "timing_booster": self.timing_booster.model_to_string() if self.timing_booster else None,
            "feature_service": self.feature_service,
            "features": self.features,
            "meta": self.meta,
        }
        path = folder / BUNDLE_FILE
        path.write_text(json.dumps(state), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> ModelBundle:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        timing = state.get("timing_booster")
        calibration = state.get("calibration")
        return cls(
            model=state["model"],
            booster=lgb.Booster(model_str=state["booster"]),
            categories=state["categories"],
            calibration=(calibration[0], calibration[1]) if calibration else None,
            timing_booster=lgb.Booster(model_str=timing) if timing else None,
            feature_service=state.get("feature_service", ""),
            meta=state.get("meta", {}),
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

    @property
    def inputs(self) -> list[str]:
        """The features the segments read, in a fixed order."""
        from training.segments import (
            CLUSTER_FEATURES,
            DESCRIBED_FEATURES,
            FREQUENCY_FEATURE,
            MONETARY_FEATURE,
            RECENCY_FEATURE,
        )

        named = [RECENCY_FEATURE, FREQUENCY_FEATURE, MONETARY_FEATURE, *CLUSTER_FEATURES, *DESCRIBED_FEATURES]
        return list(dict.fromkeys(named))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"rfm_segment": self.rfm.segment(frame), "behavioural_segment": self.behaviour.predict(frame)},
            index=frame.index,
        )

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
    def load(cls, path: Path) -> SegmentsBundle:
        from training.segments import BehaviouralSegmenter, RfmScorer

        state = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(RfmScorer.from_dict(state["rfm"]), BehaviouralSegmenter.from_dict(state["behaviour"]),
                   state.get("feature_service", ""))  # fmt: skip


class SegmentsModel(PythonModel):
    """The MLflow face of a SegmentsBundle: `predict(features frame) -> rfm and behavioural segment`."""

    bundle: SegmentsBundle

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = SegmentsBundle.load(Path(context.artifacts["segments"]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(model_input)
