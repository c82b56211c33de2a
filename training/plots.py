"""The figures a reviewer looks at in a training run: calibration, cumulative gains, feature
importance and a SHAP summary. Each function returns a matplotlib Figure for mlflow.log_figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; set before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve


def calibration_figure(actual: np.ndarray, probability: np.ndarray, title: str) -> Figure:
    observed, predicted = calibration_curve(actual, probability, n_bins=10, strategy="quantile")
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axis.plot(predicted, observed, marker="o", label="model")
    axis.set(xlabel="predicted probability", ylabel="observed share", title=title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def gains_figure(actual: np.ndarray, score: np.ndarray, title: str) -> Figure:
    """Cumulative share of positives (or revenue) captured, customers ranked by score."""
    order = np.argsort(-np.asarray(score), kind="stable")
    captured = np.cumsum(np.asarray(actual, dtype=float)[order])
    captured = captured / captured[-1] if captured[-1] > 0 else captured
    reached = np.arange(1, len(order) + 1) / len(order)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(reached, captured, label="model")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    axis.set(xlabel="share of customers contacted", ylabel="share captured", title=title)
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
