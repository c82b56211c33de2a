"""Which baselines each model must beat, as functions of its training frame that return the
test rows' predictions: BG/NBD (churn, repurchase), BG/NBD x Gamma-Gamma (CLV) and a logistic
regression on recency, frequency and monetary value (churn). The BG/NBD and Gamma-Gamma math is
in `btyd`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from custlens.settings import Settings
from features.lake.tables import table_path
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.frames import ModelFrame, ModelName, cutoff_of, label_window

# A model's training frame -> predictions for its test rows.
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


def _summaries(settings: Settings, frame: ModelFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history of everyone who bought before the test cutoff (to fit on) and of the test rows.
    No label is read: the fit sees only orders before the test cutoff."""
    orders = pd.read_parquet(
        table_path(settings, "orders"), columns=["customer_id", "ordered_at", "status", "net_amount"]
    )
    everyone = rfm_summary(orders, cutoff_of(frame.split.test))
    return everyone, everyone.reindex(frame.part("test")["customer_id"].to_numpy()).fillna(0.0)


def _bgnbd_for(settings: Settings, model: ModelName) -> dict[str, Baseline]:
    window = label_window(settings, model)

    def bgnbd(frame: ModelFrame) -> np.ndarray:
        everyone, test = _summaries(settings, frame)
        none = BetaGeo.fit(everyone).prob_no_purchase(test, window)
        return np.asarray(none if model == "churn" else 1.0 - none)

    def bgnbd_gamma_gamma(frame: ModelFrame) -> np.ndarray:
        everyone, test = _summaries(settings, frame)
        return expected_revenue(BetaGeo.fit(everyone), GammaGamma.fit(everyone), test, days=window)

    return {"bgnbd_gamma_gamma": bgnbd_gamma_gamma} if model == "clv" else {"bgnbd": bgnbd}


def baselines_for(settings: Settings, model: ModelName) -> dict[str, Baseline]:
    found: dict[str, Baseline] = {}
    if model == "churn":
        found["logistic_rfm"] = logistic_rfm
    found.update(_bgnbd_for(settings, model))
    return found
