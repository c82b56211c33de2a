"""BG/NBD and BG/NBD x Gamma-Gamma as baselines: fitted on the order history before the test
cutoff (no label is used), they predict the same quantity as each model for the test rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from custlens.settings import Settings
from training.baselines import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.frames import ModelFrame, ModelName, cutoff_of, label_window

Baseline = Callable[[ModelFrame], np.ndarray]


def _summaries(settings: Settings, frame: ModelFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history of everyone who bought before the test cutoff (to fit on) and of the test rows."""
    orders = pd.read_parquet(
        settings.lake_dir / "orders.parquet", columns=["customer_id", "ordered_at", "status", "net_amount"]
    )
    everyone = rfm_summary(orders, cutoff_of(frame.split.test))
    return everyone, everyone.reindex(frame.part("test")["customer_id"].to_numpy()).fillna(0.0)


def for_model(settings: Settings, model: ModelName) -> dict[str, Baseline]:
    window = label_window(settings, model)

    def bgnbd(frame: ModelFrame) -> np.ndarray:
        everyone, test = _summaries(settings, frame)
        none = BetaGeo.fit(everyone).prob_no_purchase(test, window)
        return np.asarray(none if model == "churn" else 1.0 - none)

    def bgnbd_gamma_gamma(frame: ModelFrame) -> np.ndarray:
        everyone, test = _summaries(settings, frame)
        return expected_revenue(BetaGeo.fit(everyone), GammaGamma.fit(everyone), test, days=window)

    return {"bgnbd_gamma_gamma": bgnbd_gamma_gamma} if model == "clv" else {"bgnbd": bgnbd}
