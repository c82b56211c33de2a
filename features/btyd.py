"""The `btyd` family: BG/NBD and Gamma-Gamma fitted on the population at each snapshot cutoff, and
their per-customer quantities (P(alive), P(no purchase) and expected purchase days in each label
window, expected value per purchase day, expected revenue in the CLV window), so training, batch
and online read the same numbers the baselines compute (training.baselines.btyd).

A cutoff's fit reads that cutoff's purchases family only (the BTYD summary, strictly before the
cutoff). On more buyers than FIT_SAMPLE_CUSTOMERS it is fitted on a fixed-seed sample of them: the
population parameters move little past that, and a million customers stay within the snapshot
budget. A history the models cannot fit gives NULLs and says why (`BtydFit.unfitted`), never a crash.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custlens.errors import CustlensError
from custlens.settings import Settings
from features import layout
from features.catalog import BTYD_SUMMARY_FEATURES, family_features
from features.lake.tables import cutoff_instant

# The customers (buyers before the cutoff) the population parameters are fitted on, at most.
FIT_SAMPLE_CUSTOMERS = 100_000
FIT_SEED = 0
# Fewer customers with a repeat purchase day (in the fitted sample) than this: no fit, NULLs.
MIN_REPEAT_BUYERS = 20

# Each window of the family, by the training setting that holds its days.
WINDOW_SETTINGS: dict[str, str] = {
    "churn_window": "churn_window_days",
    "repurchase_window": "repurchase_window_days",
    "clv_window": "clv_window_days",
}
# What the family reads of the purchases family: the BTYD summary with T as its stored instant.
FIRST_PURCHASE_DAY = "first_purchase_day_at"
SUMMARY_COLUMNS: tuple[str, ...] = (
    "customer_id",
    *(name for name in BTYD_SUMMARY_FEATURES if name != "days_since_first_purchase_day"),
    FIRST_PURCHASE_DAY,
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in family_features("btyd"))


@dataclass(frozen=True)
class BtydFit:
    """The population fit of one cutoff, as its fit file says it (features/btyd/<cutoff>.json)."""

    cutoff: str
    window_days: dict[str, int]
    buyers: int  # customers with a purchase day before the cutoff
    fitted_on: int  # of them, the sample fitted on
    repeat_buyers: int  # in the sample, with a repeat purchase day
    bgnbd: dict[str, float] | None = None  # r, alpha, a, b
    gamma_gamma: dict[str, float] | None = None  # p, q, v (the paper's gamma)
    unfitted: list[str] = field(default_factory=list)  # why a model has no fit (its features are NULL)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def window_days(settings: Settings) -> dict[str, int]:
    return {window: int(getattr(settings.training, key)) for window, key in WINDOW_SETTINGS.items()}


def stale_windows(settings: Settings, cutoffs: Sequence[date]) -> list[date]:
    """The cutoffs whose btyd family was built for other label windows than the settings' (the
    windows changed since `custlens features build`): a model of these windows must not read them."""
    wanted = window_days(settings)
    stale = []
    for cutoff in cutoffs:
        path = layout.btyd_fit_file(cutoff, settings.data_dir.resolve())
        if not path.exists() or json.loads(path.read_text()).get("window_days") != wanted:
            stale.append(cutoff)
    return stale


def summary_at(purchases: pa.Table, cutoff: date) -> pd.DataFrame:
    """rfm_summary (frequency, recency, T, monetary_value) of the purchases family at `cutoff`,
    one row per customer in the family's order: T is taken at the cutoff."""
    from training.baselines.btyd import rfm_summary_from_features  # training imports features: not at import

    columns = {name: purchases.column(name).to_numpy(zero_copy_only=False) for name in SUMMARY_COLUMNS}
    first_day = pd.to_datetime(columns.pop(FIRST_PURCHASE_DAY), utc=True)
    columns["days_since_first_purchase_day"] = np.asarray(
        (pd.Timestamp(cutoff_instant(cutoff)) - first_day).total_seconds() / 86_400.0, dtype="float64"
    )
    return rfm_summary_from_features(columns)


def fit_sample(summary: pd.DataFrame) -> pd.DataFrame:
    """The buyers the population is fitted on: all of them, or FIT_SAMPLE_CUSTOMERS drawn with a
    fixed seed (in the summary's order, so the same lake gives the same fit)."""
    buyers = summary[summary["T"] > 0]
    if len(buyers) <= FIT_SAMPLE_CUSTOMERS:
        return buyers
    chosen = np.sort(np.random.default_rng(FIT_SEED).choice(len(buyers), FIT_SAMPLE_CUSTOMERS, replace=False))
    return buyers.iloc[chosen]


def family_at(purchases: pa.Table, cutoff: date, windows: dict[str, int]) -> tuple[pd.DataFrame, BtydFit]:
    """The family's values (customer_id and FEATURE_NAMES, NaN for NULL) of every customer of the
    purchases family at `cutoff`, and the fit they come from."""
    from training.baselines.btyd import BetaGeo, GammaGamma

    summary = summary_at(purchases, cutoff)
    sample = fit_sample(summary)
    repeat_buyers = int((sample["frequency"] > 0).sum())
    unfitted: list[str] = []
    bg: BetaGeo | None = None
    gg: GammaGamma | None = None
    if repeat_buyers < MIN_REPEAT_BUYERS:
        unfitted.append(f"BG/NBD and Gamma-Gamma: {repeat_buyers} customer(s) with a repeat purchase day before "
                        f"the cutoff, fewer than {MIN_REPEAT_BUYERS}")  # fmt: skip
    else:
        bg = _fitted(BetaGeo.fit, sample, "BG/NBD", unfitted)
        gg = _fitted(GammaGamma.fit, sample, "Gamma-Gamma", unfitted)
        if gg is not None and gg.q <= 1:
            # the expected value of a purchase day, p v / (q - 1) at the population level, is infinite
            unfitted.append(f"Gamma-Gamma: q = {gg.q:.3g} <= 1, the expected value per purchase day is unbounded")
            gg = None
    values = _values(summary, bg, gg, windows)
    fit = BtydFit(
        cutoff=cutoff.isoformat(), window_days=dict(windows), buyers=int((summary["T"] > 0).sum()),
        fitted_on=len(sample), repeat_buyers=repeat_buyers, bgnbd=asdict(bg) if bg else None,
        gamma_gamma=asdict(gg) if gg else None, unfitted=unfitted,
    )  # fmt: skip
    return values, fit


def _fitted(fit: Any, sample: pd.DataFrame, model: str, unfitted: list[str]) -> Any:
    """`fit(sample)`, or None with the reason appended when it fails or finds no finite parameters."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fitted = fit(sample)
    except CustlensError as exc:
        unfitted.append(f"{model}: {exc}")
        return None
    if not all(np.isfinite(value) for value in asdict(fitted).values()):
        unfitted.append(f"{model}: the fit found non-finite parameters {asdict(fitted)}")
        return None
    return fitted


def _values(summary: pd.DataFrame, bg: Any, gg: Any, windows: dict[str, int]) -> pd.DataFrame:
    """Each customer's quantities under the fitted models (NaN where a model has no fit or a value
    is not finite), in catalog order."""
    count = len(summary)
    nothing = np.full(count, np.nan)
    values: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        alive = bg.prob_alive(summary) if bg else nothing
        values["btyd_prob_alive"] = alive
        for window in ("churn_window", "repurchase_window"):
            days = windows[window]
            values[f"btyd_prob_no_purchase_{window}"] = bg.prob_no_purchase(summary, days) if bg else nothing
            values[f"btyd_expected_purchases_{window}"] = bg.expected_purchases(summary, days) if bg else nothing
        purchases = bg.expected_purchases(summary, windows["clv_window"]) if bg else nothing
        values["btyd_expected_purchases_clv_window"] = purchases
        order_value = gg.expected_order_value(summary) if gg else nothing
        values["btyd_expected_order_value"] = order_value
        values["btyd_expected_revenue_clv_window"] = purchases * order_value
    frame = pd.DataFrame({"customer_id": summary.index.to_numpy()})
    for name in FEATURE_NAMES:
        column = np.asarray(values[name], dtype="float64")
        frame[name] = np.where(np.isfinite(column), column, np.nan)
    return frame
