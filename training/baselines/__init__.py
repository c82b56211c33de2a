"""The baselines a model must beat, by the names its spec lists (training.specs): BG/NBD (churn,
repurchase), BG/NBD x Gamma-Gamma (CLV) and a logistic regression on recency, frequency and
monetary value (churn). Each is built for one model and maps the model's training frame to
predictions of the same quantity for its test rows, with the parameters it fitted (logged on the
baseline's run so a reviewer can check them). The BG/NBD and Gamma-Gamma math is in `btyd`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from custlens.settings import Settings
from features.lake.tables import table_path
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.frames import ModelFrame, cutoff_of
from training.specs import ModelSpec


@dataclass(frozen=True)
class Fitted:
    predicted: np.ndarray  # one per test row, the same quantity as the model's score
    params: dict[str, float]  # what the fit found: BG/NBD's r, alpha, a, b; Gamma-Gamma's p, q, gamma; ...


# A model's training frame -> predictions for its test rows and the fitted parameters.
Baseline = Callable[[ModelFrame], Fitted]
# How a baseline is made for one model: the settings hold the lake and the label windows.
BaselineFactory = Callable[[Settings, ModelSpec], Baseline]

RFM_COLUMNS = ("days_since_last_order", "orders_365d", "revenue_365d", "tenure_days")


def _rfm(rows: pd.DataFrame) -> np.ndarray:
    values = rows[list(RFM_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
    values["orders_365d"] = np.log1p(values["orders_365d"].clip(lower=0))
    values["revenue_365d"] = np.log1p(values["revenue_365d"].clip(lower=0))
    return values.fillna(values.median()).to_numpy()


def logistic_rfm(settings: Settings, spec: ModelSpec) -> Baseline:
    """The label's probability from a logistic regression on RFM features, fitted on the training rows."""

    def predict(frame: ModelFrame) -> Fitted:
        train, test = frame.part("train"), frame.part("test")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(_rfm(train), train[spec.label].astype(int).to_numpy())
        regression = model[-1]
        # on standardized inputs (log1p of orders and revenue): comparable across features
        params = {f"coef_{name}": float(c) for name, c in zip(RFM_COLUMNS, regression.coef_[0], strict=True)}
        params["intercept"] = float(regression.intercept_[0])
        return Fitted(np.asarray(model.predict_proba(_rfm(test))[:, 1]), params)

    return predict


def _summaries(settings: Settings, frame: ModelFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history of everyone who bought before the test cutoff (to fit on) and of the test rows.
    No label is read: the fit sees only orders before the test cutoff."""
    orders = pd.read_parquet(
        table_path(settings, "orders"), columns=["customer_id", "ordered_at", "status", "net_amount"]
    )
    everyone = rfm_summary(orders, cutoff_of(frame.split.test))
    return everyone, everyone.reindex(frame.part("test")["customer_id"].to_numpy()).fillna(0.0)


def bgnbd(settings: Settings, spec: ModelSpec) -> Baseline:
    """BG/NBD's P(no purchase in the label window), or its complement when the label is a purchase."""
    window = spec.label_window(settings)

    def predict(frame: ModelFrame) -> Fitted:
        everyone, test = _summaries(settings, frame)
        bg = BetaGeo.fit(everyone)
        none = bg.prob_no_purchase(test, window)
        return Fitted(np.asarray(none if spec.label_is_no_order else 1.0 - none), asdict(bg))

    return predict


def bgnbd_gamma_gamma(settings: Settings, spec: ModelSpec) -> Baseline:
    """Expected net revenue in the label window: BG/NBD's purchases times Gamma-Gamma's order value."""
    window = spec.label_window(settings)

    def predict(frame: ModelFrame) -> Fitted:
        everyone, test = _summaries(settings, frame)
        bg, gg = BetaGeo.fit(everyone), GammaGamma.fit(everyone)
        # Gamma-Gamma's scale v is the paper's gamma
        return Fitted(expected_revenue(bg, gg, test, days=window), {**asdict(bg), "p": gg.p, "q": gg.q, "gamma": gg.v})

    return predict


BASELINES: dict[str, BaselineFactory] = {
    "logistic_rfm": logistic_rfm,
    "bgnbd": bgnbd,
    "bgnbd_gamma_gamma": bgnbd_gamma_gamma,
}


def baselines_for(settings: Settings, spec: ModelSpec) -> dict[str, Baseline]:
    """The baselines the spec names, in its order (the gate reports the first one not beaten)."""
    return {name: BASELINES[name](settings, spec) for name in spec.baselines}
