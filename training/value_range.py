"""The P10-P90 range of a predicted value (CLV), for any point predictor, learned or baseline.

Made on held-out rows, never on the rows that fitted the predictor: the rows are cut into bins of
their predicted value (quantile bins), and each bin records the 10th and 90th percentile of the
actual values of its rows, and their mean and variance (what a total of many customers needs). A
customer's range is read off that table at their predicted value, interpolated between the bins'
median predictions; below the first bin it is the first bin's, above the last it grows in
proportion to the prediction (twice the top bin's median, twice its P10 and P90: value scales with
spend, and clamping would leave the best customers' mean above their P90). This is split conformal
prediction done per bin (Mondrian by predicted value): it assumes nothing about the shape of the
value's distribution, which for net revenue in a window is zero-heavy and skewed. The table is
small JSON in the bundle's meta (`RANGE_KEY`), so the range is read from the model, never from
today's code; a bundle saved without one serves no range (NULL), and no error.

With many actual values exactly 0 (customers who do not buy), a bin's P10 and often its P90 are 0,
and the closed interval [P10, P90] then holds more than 80% of that bin: coverage is measured and
logged, and so are the shares below P10 and above P90 (each about 10% or less when calibrated).

A total of many customers (a segment's predicted revenue) gets its own range: not the sum of the
customers' P10s, but a normal approximation of the sum, centred on the sum of the predictions, with
the sum of the customers' variances (features.kpis.answer.total_range): customers' outcomes are
taken as independent given their predictions, so the range leaves out an error all customers share
(a model biased in total), which the promotion gate bounds with `training.clv_total_band`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RANGE_KEY = "value_range"  # in ModelBundle.meta / BaselineBundle.meta
LOW, HIGH = 0.1, 0.9  # the quantiles of the range
# Fewest held-out rows a bin's percentiles are read from, and most bins.
MIN_BIN_ROWS, MAX_BINS = 50, 20
# What ModelBundle.scores / BaselineBundle.scores add next to `predicted_value` when the bundle has a range.
P10, P90, VARIANCE = "predicted_value_p10", "predicted_value_p90", "predicted_value_variance"


@dataclass(frozen=True)
class ValueRange:
    """Per bin of predicted value (increasing): its rows' median prediction and the 10th and 90th
    percentile, mean and variance of their actual values; `rows` held-out rows made it, `source`
    says which (e.g. `validation 2025-11-01`)."""

    predicted: tuple[float, ...]
    p10: tuple[float, ...]
    p90: tuple[float, ...]
    mean: tuple[float, ...]
    variance: tuple[float, ...]
    rows: int
    source: str = ""

    @classmethod
    def fit(cls, predicted: np.ndarray, actual: np.ndarray, source: str = "") -> ValueRange | None:
        """The table of held-out rows' predictions and actual values; None with fewer than
        MIN_BIN_ROWS rows (no percentile worth reading)."""
        predicted, actual = np.asarray(predicted, dtype="float64"), np.asarray(actual, dtype="float64")
        keep = np.isfinite(predicted) & np.isfinite(actual)
        predicted, actual = predicted[keep], actual[keep]
        if len(predicted) < MIN_BIN_ROWS:
            return None
        bins = _bins(predicted, min(MAX_BINS, len(predicted) // MIN_BIN_ROWS))
        rows = [(predicted[b], actual[b]) for b in bins]
        return cls(
            predicted=tuple(float(np.median(p)) for p, _ in rows),
            p10=tuple(float(np.quantile(a, LOW)) for _, a in rows),
            p90=tuple(float(np.quantile(a, HIGH)) for _, a in rows),
            mean=tuple(float(a.mean()) for _, a in rows),
            variance=tuple(float(a.var()) for _, a in rows),
            rows=len(predicted),
            source=source,
        )

    def lookup(self, predicted: np.ndarray) -> dict[str, np.ndarray]:
        """P10, P90 and variance (`P10`, `P90`, `VARIANCE`) at each predicted value, interpolated
        between bins, scaled beyond the last; NaN where the prediction is NaN. P10 <= P90 always
        (both interpolate between ordered pairs); the prediction itself may lie outside a
        zero-heavy bin's range."""
        values = np.asarray(predicted, dtype="float64")
        at = np.array(self.predicted)
        top = at[-1]
        scale = np.where(values > top, values / top, 1.0) if top > 0 else np.ones(len(values))
        out = {key: np.interp(values, at, np.array(column)) * scale**power for key, column, power in
               ((P10, self.p10, 1), (P90, self.p90, 1), (VARIANCE, self.variance, 2))}  # fmt: skip
        missing = np.isnan(values)
        for column in out.values():
            column[missing] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ValueRange:
        columns = {key: tuple(float(v) for v in state[key]) for key in ("predicted", "p10", "p90", "mean", "variance")}
        return cls(**columns, rows=int(state["rows"]), source=str(state.get("source", "")))


def _bins(predicted: np.ndarray, count: int) -> list[np.ndarray]:
    """Row indices of `count` bins of about equal size by predicted value; rows with the same
    prediction stay in one bin (a bin may then be larger, and there may be fewer bins)."""
    order = np.argsort(predicted, kind="stable")
    ranked = predicted[order]
    cuts = [round(len(ranked) * i / max(count, 1)) for i in range(1, max(count, 1))]
    # move each cut past the ties it falls in; drop cuts that leave a bin too small
    edges, last = [], 0
    for cut in cuts:
        cut = int(np.searchsorted(ranked, ranked[cut], side="right")) if cut < len(ranked) else len(ranked)
        if cut - last >= MIN_BIN_ROWS and len(ranked) - cut >= MIN_BIN_ROWS:
            edges.append(cut)
            last = cut
    return np.split(order, edges)


def range_of(meta: Mapping[str, Any]) -> ValueRange | None:
    """The range a bundle's meta holds; None for a bundle saved before ranges (it serves none)."""
    state = meta.get(RANGE_KEY)
    return ValueRange.from_dict(state) if state else None


def with_range(predicted: np.ndarray, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`predicted_value` and, when the bundle's meta holds a range, its P10, P90 and variance:
    what both kinds of bundle answer for CLV."""
    table = range_of(meta)
    return {"predicted_value": predicted, **(table.lookup(predicted) if table is not None else {})}


def coverage_metrics(actual: np.ndarray, p10: np.ndarray, p90: np.ndarray, buyers: np.ndarray) -> dict[str, float]:
    """How the range held on test rows: the share with P10 <= actual <= P90 (`test_interval_coverage`),
    among buyers and non-buyers, the shares below P10 and above P90, and the mean width."""
    actual, p10, p90 = (np.asarray(a, dtype="float64") for a in (actual, p10, p90))
    buyers = np.asarray(buyers, dtype=bool)
    inside = (p10 <= actual) & (actual <= p90)

    def share(mask: np.ndarray, of: np.ndarray | None = None) -> float:
        within = mask if of is None else mask[of]
        return float(within.mean()) if len(within) else float("nan")

    return {
        "test_interval_coverage": share(inside),
        "test_interval_coverage_buyers": share(inside, buyers),
        "test_interval_coverage_non_buyers": share(inside, ~buyers),
        "test_interval_below_p10": share(actual < p10),
        "test_interval_above_p90": share(actual > p90),
        "test_interval_mean_width": float(np.mean(p90 - p10)) if len(actual) else float("nan"),
    }
