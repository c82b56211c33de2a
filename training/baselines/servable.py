"""The baselines as models that serve: their fitted parameters and the features they read, with
the scoring interface of a ModelBundle, so the champion the Scorer loads may be a baseline.

BG/NBD (churn, repurchase) and BG/NBD x Gamma-Gamma (CLV) read each customer's BTYD summary from
the feature store (the same numbers training's `rfm_summary` computes from the orders); logistic
RFM reads four stored RFM features. A baseline has no per-feature contributions: it gives no
churn reasons.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from custlens.errors import CustlensError
from features.model_inputs import BASELINE_RFM_FEATURES
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary_from_features
from training.next_order import LONGEST_DAYS
from training.packaging import FeatureEncoder, FeatureRows, ModelBundle, _require_columns, _require_served
from training.value_range import RANGE_KEY, with_range

Flavour = Literal["bgnbd", "bgnbd_gamma_gamma", "logistic_rfm"]  # the names of training.baselines.BASELINES
FLAVOURS: tuple[Flavour, ...] = ("bgnbd", "bgnbd_gamma_gamma", "logistic_rfm")
BASELINE_KIND = "baseline"

# What logistic RFM reads, and how each is transformed before scaling.
RFM_COLUMNS = BASELINE_RFM_FEATURES
_LOGGED = ("orders_365d", "revenue_365d")


def rfm_matrix(values: dict[str, np.ndarray], medians: dict[str, float]) -> np.ndarray:
    """The logistic baseline's input: log1p of counts and revenue (floored at 0), NULLs filled
    with the training rows' medians (saved with the model, so one row scores alone)."""
    columns = []
    for name in RFM_COLUMNS:
        column = np.asarray(values[name], dtype="float64")
        if name in _LOGGED:
            column = np.log1p(np.clip(column, 0.0, None))
        columns.append(np.where(np.isnan(column), medians[name], column))
    return np.column_stack(columns) if columns else np.empty((0, 0))


@dataclass
class BaselineBundle:
    """A fitted baseline of one model: what it reads and how it scores."""

    model: str  # churn | repurchase | clv
    flavour: Flavour
    params: dict[str, Any]  # bgnbd: {r, alpha, a, b}; bgnbd_gamma_gamma: + {p, q, v}; logistic_rfm: medians, mean,
    # scale (the scaler), coef, intercept
    window_days: int
    features: list[str]
    feature_service: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    kind: str = BASELINE_KIND
    explains: bool = False  # no per-feature contributions: no churn reasons

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise CustlensError(f"{self.name}: unknown baseline {self.flavour!r}; known: {', '.join(FLAVOURS)}")
        self.features = list(self.features)

    @property
    def name(self) -> str:
        return self.origin or f"the {self.model} baseline {self.flavour}"

    # -- scoring ----------------------------------------------------------------------------------

    @cached_property
    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder(self.features, {})

    def encode(self, rows: FeatureRows) -> np.ndarray:
        try:
            return self.encoder.encode(rows)
        except KeyError:
            _require_columns(rows, self.features, self.name, self.feature_service)
            raise

    def scores(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """`probability` (churn, repurchase; repurchase also `expected_days_to_next_order`) or
        `predicted_value` (clv, with its P10-P90 range when it holds one), per row of an encoded matrix."""
        columns = {name: matrix[:, j] for j, name in enumerate(self.features)}
        if self.flavour == "logistic_rfm":
            return {"probability": self._logistic(columns)}
        summary = rfm_summary_from_features({**columns, "customer_id": np.arange(len(matrix))})
        bg = BetaGeo(**{key: float(self.params[key]) for key in ("r", "alpha", "a", "b")})
        if self.model == "clv":
            gg = GammaGamma(**{key: float(self.params[key]) for key in ("p", "q", "v")})
            return with_range(np.maximum(expected_revenue(bg, gg, summary, self.window_days), 0.0), self.meta)
        none = np.clip(bg.prob_no_purchase(summary, self.window_days), 0.0, 1.0)
        if self.model == "churn":
            return {"probability": none}
        # the median wait counting drop-out, consistent with the probability (training.next_order)
        waited = bg.median_days_to_next_purchase(summary, longest=LONGEST_DAYS)
        return {"probability": 1.0 - none, "expected_days_to_next_order": waited}

    def _logistic(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        p = self.params
        x = (rfm_matrix(columns, p["medians"]) - np.asarray(p["mean"])) / np.asarray(p["scale"])
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ np.asarray(p["coef"]) + float(p["intercept"])))))

    def fitted_params(self) -> dict[str, float]:
        """The fit as its run logs it for a reviewer: BG/NBD's r, alpha, a, b; Gamma-Gamma's p, q
        and gamma (the paper's name of its scale, `v` here); logistic RFM's `coef_<feature>` (on
        standardized inputs: comparable across features) and its intercept."""
        p = self.params
        if self.flavour == "logistic_rfm":
            coefficients = {f"coef_{name}": float(c) for name, c in zip(self.features, p["coef"], strict=True)}
            return {**coefficients, "intercept": float(p["intercept"])}
        fitted = {key: float(p[key]) for key in ("r", "alpha", "a", "b")}
        if self.flavour == "bgnbd_gamma_gamma":
            fitted |= {"p": float(p["p"]), "q": float(p["q"]), "gamma": float(p["v"])}
        return fitted

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        raise CustlensError(f"{self.name} has no per-feature contributions")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.scores(self.encode(frame)), index=frame.index)

    def require_served(self, services: Any) -> None:
        _require_served(services, self.features, self.name, self.feature_service)

    # -- storage ----------------------------------------------------------------------------------

    def fit_digest(self) -> str:
        """A short digest of what it is (flavour, window, parameters, inputs, and its value range
        when it has one): equal fits, equal digests."""
        what = [self.flavour, self.window_days, self.params, self.features]
        state = json.dumps(what + ([self.meta[RANGE_KEY]] if RANGE_KEY in self.meta else []), sort_keys=True)
        return hashlib.blake2b(state.encode(), digest_size=8).hexdigest()

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "flavour": self.flavour,
            "params": self.params,
            "window_days": self.window_days,
            "features": self.features,
            "feature_service": self.feature_service,
            "meta": {**self.meta, "window_days": self.window_days},
        }

    def save(self, folder: Path, file_name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name
        path.write_text(json.dumps(self.state()), encoding="utf-8")
        return path

    @classmethod
    def from_state(cls, state: dict[str, Any], origin: str = "") -> BaselineBundle:
        return cls(
            model=state["model"],
            flavour=state["flavour"],
            params=state["params"],
            window_days=int(state["window_days"]),
            features=list(state["features"]),
            feature_service=state.get("feature_service", ""),
            meta=state.get("meta", {}),
            origin=origin,
        )


def load_bundle(path: Path, origin: str = "") -> ModelBundle | BaselineBundle:
    """The model saved at `path` (training/packaging.BUNDLE_FILE): learned or baseline, checked."""
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    if state.get("kind") == BASELINE_KIND:
        return BaselineBundle.from_state(state, origin or f"the {state.get('model')} baseline at {path}")
    return ModelBundle.load(path, origin)


class BaselineModel(PythonModel):
    """The MLflow face of a BaselineBundle: `predict(features frame) -> scores frame`."""

    bundle: BaselineBundle

    def load_context(self, context: PythonModelContext) -> None:
        loaded = load_bundle(Path(context.artifacts["bundle"]))
        assert isinstance(loaded, BaselineBundle)
        self.bundle = loaded

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(model_input)
