"""Which baselines each model must beat, as functions of its training frame that return the
test rows' predictions: BG/NBD (churn, repurchase), BG/NBD x Gamma-Gamma (CLV), and a logistic
regression on recency, frequency and monetary value (churn)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from custlens.settings import Settings
from training.frames import ModelFrame, ModelName

Baseline = Callable[[ModelFrame], np.ndarray]

RFM_COLUMNS = ("days_since_last_order", "orders_365d", "revenue_365d", "tenure_days")


def _rfm(rows: pd.DataFrame) -> np.ndarray:
    values = rows[list(RFM_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
    values["orders_365d"] = np.log1p(values["orders_365d"].clip(lower=0))
    values["revenue_365d"] = np.log1p(values["revenue_365d"].clip(lower=0))
    return values.fillna(values.median()).to_numpy()


def logistic_rfm(frame: ModelFrame) -> np.ndarray:
    """Churn probability from a logistic regression on RFM, fitted on the training rows."""
    train, test = frame.part("train"), frame.part("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(_rfm(train), train["churned"].astype(int).to_numpy())
    return np.asarray(model.predict_proba(_rfm(test))[:, 1])


def baselines_for(settings: Settings, model: ModelName) -> dict[str, Baseline]:
    from training import bgnbd_baselines

    found: dict[str, Baseline] = {}
    if model == "churn":
        found["logistic_rfm"] = logistic_rfm
    found.update(bgnbd_baselines.for_model(settings, model))
    return found
