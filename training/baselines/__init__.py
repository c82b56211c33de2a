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

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.catalog import BTYD_SUMMARY_FEATURES
from features.lake.tables import lake_end, table_path
from features.model_inputs import BASELINE_SERVICE
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.baselines.servable import RFM_COLUMNS, BaselineBundle, rfm_matrix
from training.frames import ModelFrame, cutoff_of
from training.specs import ModelSpec
from training.value_range import RANGE_KEY, ValueRange


@dataclass(frozen=True)
class Fitted:
    predicted: np.ndarray  # one per test row, the same quantity as the model's score
    servable: BaselineBundle  # the fit as a model the Scorer can serve

    @property
    def params(self) -> dict[str, float]:
        """What the fit found, as the baseline's run logs it: BG/NBD's r, alpha, a, b; Gamma-Gamma's p, q, gamma; ..."""
        return self.servable.fitted_params()


# A model's training frame -> predictions for its test rows and the fitted parameters.
Baseline = Callable[[ModelFrame], Fitted]
# How a baseline is made for one model: the settings hold the lake and the label windows.
BaselineFactory = Callable[[Settings, ModelSpec], Baseline]


def _columns(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype="float64") for name in RFM_COLUMNS}


def logistic_rfm(settings: Settings, spec: ModelSpec) -> Baseline:
    """The label's probability from a logistic regression on RFM features, fitted on the training
    rows (missing values filled with the training rows' medians, for the test rows too)."""

    def predict(frame: ModelFrame) -> Fitted:
        train, test = frame.part("train"), frame.part("test")
        nothing = {name: np.nan for name in RFM_COLUMNS}
        raw_train = rfm_matrix(_columns(train), nothing)
        medians = {name: float(np.nanmedian(raw_train[:, j])) if np.isfinite(raw_train[:, j]).any() else 0.0
                   for j, name in enumerate(RFM_COLUMNS)}  # fmt: skip
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(rfm_matrix(_columns(train), medians), train[spec.label].astype(int).to_numpy())
        scaler, regression = model[0], model[-1]
        servable = BaselineBundle(
            model=spec.name, flavour="logistic_rfm", window_days=spec.label_window(settings),
            features=list(RFM_COLUMNS), feature_service=BASELINE_SERVICE,
            params={"medians": medians, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                    "coef": regression.coef_[0].tolist(), "intercept": float(regression.intercept_[0])},
        )  # fmt: skip
        return Fitted(np.asarray(model.predict_proba(rfm_matrix(_columns(test), medians))[:, 1]), servable)

    return predict


def _orders(settings: Settings) -> pd.DataFrame:
    """What the BTYD summary reads of the lake's orders."""
    columns = ["customer_id", "ordered_at", "status", "net_amount"]
    return pd.read_parquet(table_path(settings, "orders"), columns=columns)


def _summaries(settings: Settings, frame: ModelFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history of everyone who bought before the test cutoff (to fit on) and of the test rows.
    No label is read: the fit sees only orders before the test cutoff."""
    everyone = rfm_summary(_orders(settings), cutoff_of(frame.split.test))
    return everyone, everyone.reindex(frame.part("test")["customer_id"].to_numpy()).fillna(0.0)


def bgnbd(settings: Settings, spec: ModelSpec) -> Baseline:
    """BG/NBD's P(no purchase in the label window), or its complement when the label is a purchase."""
    window = spec.label_window(settings)

    def predict(frame: ModelFrame) -> Fitted:
        everyone, test = _summaries(settings, frame)
        bg = BetaGeo.fit(everyone)
        none = bg.prob_no_purchase(test, window)
        servable = BaselineBundle(model=spec.name, flavour="bgnbd", window_days=window, params=asdict(bg),
                                  features=list(BTYD_SUMMARY_FEATURES), feature_service=BASELINE_SERVICE)  # fmt: skip
        return Fitted(np.asarray(none if spec.label_is_no_order else 1.0 - none), servable)

    return predict


def bgnbd_gamma_gamma(settings: Settings, spec: ModelSpec) -> Baseline:
    """Expected net revenue in the label window: BG/NBD's purchases times Gamma-Gamma's order value."""
    window = spec.label_window(settings)

    def predict(frame: ModelFrame) -> Fitted:
        everyone, test = _summaries(settings, frame)
        bg, gg = BetaGeo.fit(everyone), GammaGamma.fit(everyone)
        value_range = _value_range(settings, spec, frame)
        servable = BaselineBundle(model=spec.name, flavour="bgnbd_gamma_gamma", window_days=window,
                                  params={**asdict(bg), **asdict(gg)}, features=list(BTYD_SUMMARY_FEATURES),
                                  feature_service=BASELINE_SERVICE,
                                  meta={RANGE_KEY: value_range.to_dict()} if value_range else {})  # fmt: skip
        return Fitted(expected_revenue(bg, gg, test, days=window), servable)

    return predict


def _value_range(settings: Settings, spec: ModelSpec, frame: ModelFrame) -> ValueRange | None:
    """BG/NBD x Gamma-Gamma's P10-P90 range (training.value_range), made out of sample: at each
    training and validation cutoff the two are fitted on the orders before it and predict that
    cutoff's rows, whose labels come after it; the test window stays out. None when no cutoff fits
    or too few rows."""
    orders, window = _orders(settings), spec.label_window(settings)
    predicted, actual = [], []
    for cutoff, rows in frame.rows[frame.rows["split"] != "test"].groupby("cutoff"):
        history = rfm_summary(orders, pd.Timestamp(cutoff))  # the cutoff's instant, as the labels count from it
        try:
            bg, gg = BetaGeo.fit(history), GammaGamma.fit(history)
        except CustlensError:
            continue  # too little history before this cutoff
        summary = history.reindex(rows["customer_id"].to_numpy()).fillna(0.0)
        predicted.append(expected_revenue(bg, gg, summary, days=window))
        actual.append(spec.labels(rows))
    if not predicted:
        return None
    first, last = min(frame.split.train, default=frame.split.validation[0]), frame.split.validation[-1]
    return ValueRange.fit(np.concatenate(predicted), np.concatenate(actual),
                          f"refitted at each cutoff {first}..{last}, its rows' labels after it")  # fmt: skip


BASELINES: dict[str, BaselineFactory] = {
    "logistic_rfm": logistic_rfm,
    "bgnbd": bgnbd,
    "bgnbd_gamma_gamma": bgnbd_gamma_gamma,
}


def baselines_for(settings: Settings, spec: ModelSpec) -> dict[str, Baseline]:
    """The baselines the spec names, in its order (the gate reports the first one not beaten)."""
    return {name: BASELINES[name](settings, spec) for name in spec.baselines}


def fit_on_history(settings: Settings, spec: ModelSpec) -> BaselineBundle | None:
    """The model's BTYD baseline fitted on every order of the lake, for a model the data cannot
    train (its window does not fit the history): BG/NBD and Gamma-Gamma extrapolate to any window,
    as the published models do. No window of held-out labels fits either, so CLV's P10-P90 range
    comes from the fitted model itself (`_posterior_range`). None when the spec has no BTYD
    baseline or the fit finds nothing."""
    flavour = next((name for name in ("bgnbd_gamma_gamma", "bgnbd") if name in spec.baselines), None)
    if flavour is None:
        return None
    everyone = rfm_summary(_orders(settings), pd.Timestamp(lake_end(settings)))
    meta: dict[str, object] = {"fitted_on": "every order before the data end; not evaluated on a test window"}
    window = spec.label_window(settings)
    try:
        bg = BetaGeo.fit(everyone)
        params = asdict(bg)
        if flavour == "bgnbd_gamma_gamma":
            gg = GammaGamma.fit(everyone)
            params |= asdict(gg)
            value_range = _posterior_range(bg, gg, everyone, window, settings.training.seed)
            meta |= {RANGE_KEY: value_range.to_dict()} if value_range else {}
    except CustlensError:
        return None
    return BaselineBundle(model=spec.name, flavour=flavour, window_days=window, params=params,
                          features=list(BTYD_SUMMARY_FEATURES), feature_service=BASELINE_SERVICE, meta=meta)


# Customers and draws per customer the posterior range is simulated from: enough rows for every
# bin, a bounded cost on any lake.
POSTERIOR_CUSTOMERS, POSTERIOR_DRAWS = 20_000, 5


def _posterior_range(bg: BetaGeo, gg: GammaGamma, history: pd.DataFrame, days: int, seed: int) -> ValueRange | None:
    """The P10-P90 range of BG/NBD x Gamma-Gamma's own posterior predictive: for (a sample of)
    the customers, draws of their revenue in the next `days` (alive or not, their purchase rate,
    drop-out and spend drawn from the posterior given their history), binned by their expected
    revenue. What the model believes, not checked against held-out values (on generated data it
    covered as the held-out range does: README, CLV's P10-P90 range)."""
    rng = np.random.default_rng(seed)
    if len(history) > POSTERIOR_CUSTOMERS:
        history = history.iloc[rng.choice(len(history), POSTERIOR_CUSTOMERS, replace=False)]
    draws = pd.concat([history] * POSTERIOR_DRAWS)
    revenue = gg.simulate_revenue(draws, bg.simulate_purchases(draws, days, rng), rng)
    return ValueRange.fit(expected_revenue(bg, gg, draws, days=days), revenue,
                          f"simulated from the fitted model's posterior ({POSTERIOR_DRAWS} draws of "
                          f"{len(history)} customers), not held-out values")  # fmt: skip
