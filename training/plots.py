"""The figures a reviewer looks at in a training run: calibration and cumulative gains of the model
beside its baselines and champion on the same test rows, feature importance and a SHAP summary.
Each function returns a matplotlib Figure for mlflow.log_figure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; set before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from training.evaluation import equal_count_bins

# Named scores of the same test rows, the run's own predictor first: one line each, in this order.
Scores = Mapping[str, np.ndarray]

# The reference lines (random, perfect, the diagonal), behind every predictor.
_REFERENCE: dict[str, Any] = {"color": "black", "linewidth": 1.0, "alpha": 0.6, "zorder": 1}
_COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")  # C7 is grey, too close to the references


def _styles(names: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The first predictor (the run's own) thick and in front; the others thinner, each its own colour."""
    for position, name in enumerate(names):
        colour = _COLOURS[position % len(_COLOURS)]
        if position == 0:
            yield name, {"color": colour, "linewidth": 2.6, "zorder": 4}
        else:
            yield name, {"color": colour, "linewidth": 1.4, "alpha": 0.85, "zorder": 3}


def calibration_figure(actual: np.ndarray, scores: Scores, title: str, probability: bool = True) -> Figure:
    """Mean outcome against mean score in ten equal-count bins of each predictor's score (the bins of
    test_calibration_error), beside the diagonal of a perfect calibration; for a value (CLV), the
    predicted-vs-actual deciles. Probabilities get a histogram of each predictor's scores below:
    where the customers are, which the equal-count bins hide."""
    actual = np.asarray(actual, dtype=float)
    counts: Axes | None = None
    if probability:
        figure, (axis, counts) = plt.subplots(2, 1, figsize=(6, 7.5), sharex=True,
                                              gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
    else:
        figure, axis = plt.subplots(figsize=(6, 6))
    means = []
    for name, style in _styles(scores):
        score = np.asarray(scores[name], dtype=float)
        bins = equal_count_bins(score)
        predicted, observed = [score[b].mean() for b in bins], [actual[b].mean() for b in bins]
        means += predicted + observed
        axis.plot(predicted, observed, marker="o", markersize=4, label=name, **style)
        if counts is not None:
            counts.hist(score, bins=20, range=(0, 1), histtype="step", color=style["color"],
                        linewidth=style["linewidth"])  # fmt: skip
    low, high = (0.0, 1.0) if probability else (min(0.0, *means), max(means, default=1.0))
    axis.plot([low, high], [low, high], linestyle="--", label="perfectly calibrated", **_REFERENCE)
    if counts is None:
        axis.set(xlabel="mean predicted value (decile of the prediction)", ylabel="mean actual value")
    else:
        axis.set(ylabel="observed share", xlim=(0, 1), ylim=(0, 1))
        counts.set(xlabel="predicted probability (points above: means of bins of equal count)", ylabel="customers")
    axis.set_title(title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def _gains(actual: np.ndarray, score: np.ndarray, points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(share of customers reached, share of the outcome captured), highest score first, from (0, 0),
    at most `points` steps: enough for the eye, a small PNG at any number of rows."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(actual[order])])
    captured = captured / captured[-1] if captured[-1] > 0 else captured
    keep = np.unique(np.linspace(0, len(order), min(len(order), points) + 1).astype(int))
    return keep / max(len(order), 1), captured[keep]


def gains_figure(actual: np.ndarray, scores: Scores, title: str) -> Figure:
    """Cumulative share of positives (or revenue) captured, customers ranked by each predictor's
    score, beside the random ranking and the perfect one (ranked by the outcome itself)."""
    actual = np.asarray(actual, dtype=float)
    figure, axis = plt.subplots(figsize=(6, 6))
    for name, style in _styles(scores):
        axis.plot(*_gains(actual, scores[name]), label=name, **style)
    axis.plot(*_gains(actual, actual), linestyle=":", label="perfect (ranked by the outcome)", **_REFERENCE)
    axis.plot([0, 1], [0, 1], linestyle="--", label="random", **_REFERENCE)
    axis.set(xlabel="share of customers contacted, highest score first", ylabel="share captured", title=title,
             xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def importance_figure(importance: pd.Series, title: str, top: int = 20) -> Figure:
    shown = importance.sort_values(ascending=True).tail(top)
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(shown) + 1))
    axis.barh(shown.index, shown.to_numpy())
    axis.set(xlabel="total gain", title=title)
    figure.tight_layout()
    return figure


def shap_figure(contributions: np.ndarray, matrix: pd.DataFrame, title: str, top: int = 20) -> Figure:
    """Mean |SHAP| per feature with the sign of its correlation with the feature value."""
    mean_abs = pd.Series(np.abs(contributions).mean(axis=0), index=matrix.columns)
    shown = mean_abs.sort_values().tail(top)
    signs = []
    for name in shown.index:
        values = pd.to_numeric(matrix[name], errors="coerce") if matrix[name].dtype != "category" else None
        if values is None or values.nunique() < 2:
            signs.append("grey")
            continue
        column = contributions[:, matrix.columns.get_loc(name)]
        correlation = np.corrcoef(values.fillna(values.median()), column)[0, 1]
        signs.append("tab:red" if correlation > 0 else "tab:blue")
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(shown) + 1))
    axis.barh(shown.index, shown.to_numpy(), color=signs)
    axis.set(xlabel="mean |SHAP value| (red: higher value raises the score)", title=title)
    figure.tight_layout()
    return figure


def close(figure: Figure) -> None:
    plt.close(figure)


def segments_figure(profile: pd.DataFrame, title: str) -> Figure:
    """Segment sizes beside a heat map of each segment's features relative to the population."""
    sizes = profile["share"] if "share" in profile.columns else profile.iloc[:, 0]
    features = profile.drop(columns=[c for c in ("share", "size") if c in profile.columns]).select_dtypes("number")
    relative = (features - features.mean()) / features.std(ddof=0).replace(0, 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * len(profile) + 2),
                                         gridspec_kw={"width_ratios": [1, 3]})  # fmt: skip
    left.barh(profile.index.astype(str), sizes.to_numpy())
    left.set(xlabel="share of customers", title="size")
    image = right.imshow(relative.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-2, vmax=2)
    right.set_xticks(range(len(relative.columns)), relative.columns, rotation=60, ha="right")
    right.set_yticks(range(len(relative.index)), [""] * len(relative.index))
    right.set_title(title)
    figure.colorbar(image, ax=right, label="z-score across segments")
    figure.tight_layout()
    return figure
