"""`custlens backtest`: one holdout, [cutoff, cutoff + horizon), on which every baseline and every
model that can be trained from data before the cutoff is scored on the same customers and labels,
each metric with a bootstrap interval over customers (training.bootstrap) and, for a learned
model, its paired difference to the best baseline.

The labels are training's (training.labels) with every label window set to the horizon:
- the population: customers with a completed order before the cutoff (the CDNOW convention:
  everyone of the calibration period);
- repurchase: at least one completed order in [cutoff, cutoff + horizon);
- churn: no completed order in that horizon, for the customers with a completed order in the
  `training.activity_window_days` before the cutoff (churn is undefined for the others);
- CLV: net revenue in the horizon (completed orders minus refunds dated in it).

Nothing after the cutoff is read to predict: BG/NBD and Gamma-Gamma are fitted on the orders before
it and extrapolate to the horizon as the published models do; logistic RFM and the learned models
are fitted on labels of earlier cutoffs whose windows end by the cutoff. When no full horizon fits
before the cutoff (CDNOW's standard holdout: 39 weeks of history, a 39-week horizon), the direct
LightGBM model cannot be trained and says so, and `lightgbm_bgnbd` still predicts the horizon: a
LightGBM correction on top of BG/NBD, trained at many earlier cutoffs on shorter windows with
BG/NBD's prediction for each row's own window as its starting score (log-odds, or log revenue), and
applied at the cutoff on top of BG/NBD's prediction for the horizon. The window length enters only
through BG/NBD's structure; the correction is what the features add to it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from rich.console import Console, Group
from rich.table import Table
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from custlens.errors import CustlensError
from custlens.settings import Settings
from custlens.words import counted
from features.lake.tables import cutoff_instant, lake_end, table_path
from features.snapshots import default_cutoffs, grid_counts, grid_every, is_period_start
from training import bootstrap, two_part
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_logistic_features, rfm_summary
from training.frames import (
    CATEGORY_FEATURES,
    FEATURE_SERVICES,
    WINDOW_KEYS,
    CannotTrain,
    ModelFrame,
    ModelName,
    Split,
    feature_matrix,
    is_validation_customer,
)
from training.labels import compute_labels
from training.specs import SPECS, ModelSpec
from training.sufficiency import Sufficiency
from training.tuning import Objective

# oracle: on generated sample data only, the generator's truth (training.oracle), the ceiling
Kind = Literal["learned", "baseline", "oracle"]
MODELS: tuple[ModelName, ...] = ("churn", "repurchase", "clv")
# Shortest label window a training cutoff of the BG/NBD correction may have: a few days of labels
# say more about the calendar than about the customer.
MIN_TRAINING_WINDOW_DAYS = 28
EXPERIMENT = "backtest"  # MLflow experiment custlens-backtest


@dataclass(frozen=True)
class Holdout:
    cutoff: date
    horizon_days: int
    labels: pd.DataFrame  # training.labels' columns, every window the horizon

    def rows(self, model: ModelName) -> pd.DataFrame:
        return _population(self.labels, model)

    def actual(self, model: ModelName) -> np.ndarray:
        return SPECS[model].labels(self.rows(model))


def _population(labels: pd.DataFrame, model: ModelName) -> pd.DataFrame:
    """The rows a model is measured on: everyone who bought before the cutoff; churn: the active ones."""
    return (labels[labels["active"]] if model == "churn" else labels).reset_index(drop=True)


def horizon_settings(settings: Settings, days: int) -> Settings:
    """The settings with every label window (churn, repurchase, CLV) set to `days`."""
    windows = {key: days for key in WINDOW_KEYS.values()}
    return settings.model_copy(update={"training": settings.training.model_copy(update=windows)})


def _labels(settings: Settings, cutoff: date, days: int) -> pd.DataFrame:
    return compute_labels(horizon_settings(settings, days), [cutoff])


def load_holdout(settings: Settings, cutoff: date, horizon_days: int) -> Holdout:
    """The holdout's labels; an error that says what fits when the horizon runs past the data end."""
    end = lake_end(settings)
    start = cutoff_instant(cutoff)
    if start >= end:
        raise CustlensError(
            f"--cutoff {cutoff} is after the data end ({end.date() - timedelta(days=1)}): a holdout needs data "
            "after its cutoff; choose an earlier --cutoff"
        )
    if start + timedelta(days=horizon_days) > end:
        longest = max((end - start).days, 0)
        raise CustlensError(
            f"--horizon {horizon_days} days from --cutoff {cutoff} ends after the data end "
            f"({end.date() - timedelta(days=1)}): the longest horizon from this cutoff is {longest} days; "
            "shorten --horizon or choose an earlier --cutoff"
        )
    labels = _labels(settings, cutoff, horizon_days)
    if labels.empty:
        raise CustlensError(f"no customer has a completed order before --cutoff {cutoff}; choose a later cutoff")
    return Holdout(cutoff, horizon_days, labels)


@dataclass(frozen=True)
class Candidate:
    """One model's predictions on the holdout rows, or the reason there are none."""

    model: ModelName
    name: str  # lightgbm, lightgbm_bgnbd (CLV: also *_two_part), bgnbd, bgnbd_expected, bgnbd_gg, logistic_rfm
    kind: Kind
    predicted: np.ndarray | None
    note: str  # what it was fitted on, or why it was not

    @property
    def skipped(self) -> bool:
        return self.predicted is None


# --------------------------------------------------------------------------------------------
# The probabilistic baselines at a cutoff


def _orders(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(
        table_path(settings, "orders"), columns=["customer_id", "ordered_at", "status", "net_amount"]
    )


@dataclass(frozen=True)
class Btyd:
    """BG/NBD and Gamma-Gamma fitted on everyone's orders before one cutoff."""

    summary: pd.DataFrame  # rfm_summary of everyone who ordered before the cutoff
    bg: BetaGeo
    gg: GammaGamma

    @classmethod
    def fit(cls, orders: pd.DataFrame, cutoff: date) -> Btyd:
        summary = rfm_summary(orders, pd.Timestamp(cutoff_instant(cutoff)))
        return cls(summary, BetaGeo.fit(summary), GammaGamma.fit(summary))

    def of(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.summary.reindex(rows["customer_id"].to_numpy()).fillna(0.0)

    def predict(self, model: ModelName, rows: pd.DataFrame, days: int) -> np.ndarray:
        """BG/NBD's P(no purchase in `days`) for churn, P(any purchase) for repurchase; BG/NBD x
        Gamma-Gamma's expected net revenue for CLV."""
        summary = self.of(rows)
        if model == "clv":
            return expected_revenue(self.bg, self.gg, summary, days=days)
        none = self.bg.prob_no_purchase(summary, days)
        return np.asarray(none if SPECS[model].label_is_no_order else 1.0 - none)

    def expected_purchases_as_probability(self, rows: pd.DataFrame, days: int) -> np.ndarray:
        """1 - exp(-E[purchase days in `days`]): ranks customers as BG/NBD's expected purchases do
        (lifetimes' conditional_expected_number_of_purchases_up_to_time, the score the published
        CDNOW AUC was reproduced with), mapped into (0, 1) as a Poisson count would."""
        return -np.expm1(-self.bg.expected_purchases(self.of(rows), days))


@dataclass(frozen=True)
class TrainingWindow:
    """A cutoff before the holdout and its label window: the horizon, or the days left to the
    holdout's cutoff when fewer (its labels never reach past the holdout's cutoff)."""

    cutoff: date
    days: int


def training_windows(settings: Settings, holdout: Holdout) -> list[TrainingWindow]:
    """Grid cutoffs (features.cutoff_every) before the holdout with a window of MIN_TRAINING_WINDOW_DAYS
    or more, oldest first."""
    every = grid_every(settings)
    grid = [day for day in default_cutoffs(settings) if is_period_start(day, every) and day < holdout.cutoff]
    windows = [TrainingWindow(day, min(holdout.horizon_days, (holdout.cutoff - day).days)) for day in grid]
    return [w for w in windows if w.days >= MIN_TRAINING_WINDOW_DAYS]


def _logistic_rfm(settings: Settings, orders: pd.DataFrame, holdout: Holdout, model: ModelName,
                  windows: list[TrainingWindow]) -> Candidate:  # fmt: skip
    """Logistic regression on the RFM summary, fitted at the training cutoff with the longest window
    (the latest of those) that has enough rows of both classes."""
    spec = SPECS[model]
    minimums = settings.training
    for window in sorted(windows, key=lambda w: (w.days, w.cutoff), reverse=True):
        rows = _population(_labels(settings, window.cutoff, window.days), model)
        positives = int(spec.is_positive(rows).sum())
        if len(rows) < minimums.min_split_rows or min(positives, len(rows) - positives) < minimums.min_class_rows:
            continue
        cutoff = pd.Timestamp(cutoff_instant(window.cutoff))
        train = rfm_logistic_features(rfm_summary(orders, cutoff, pd.Index(rows["customer_id"])))
        fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        fitted.fit(_log_rfm(train), spec.labels(rows).astype(int))
        test_rows = holdout.rows(model)
        test = rfm_summary(orders, pd.Timestamp(cutoff_instant(holdout.cutoff)), pd.Index(test_rows["customer_id"]))
        predicted = np.asarray(fitted.predict_proba(_log_rfm(rfm_logistic_features(test)))[:, 1])
        fitted_on = f"fitted on {counted(len(rows), 'customer')} at {window.cutoff}, {window.days}-day window"
        return Candidate(model, "logistic_rfm", "baseline", predicted, fitted_on)
    return Candidate(model, "logistic_rfm", "baseline", None,
                     "no earlier cutoff has enough customers of both classes to fit it")  # fmt: skip


def _log_rfm(features: pd.DataFrame) -> np.ndarray:
    return np.log1p(features.clip(lower=0)).to_numpy()


def baseline_candidates(settings: Settings, holdout: Holdout, orders: pd.DataFrame, btyd: Btyd) -> list[Candidate]:
    windows = training_windows(settings, holdout)
    days = holdout.horizon_days
    fitted_on = f"fitted on {len(btyd.summary):,} customers' orders before {holdout.cutoff}"
    candidates = []
    for model in MODELS:
        rows = holdout.rows(model)
        if model == "clv":
            candidates.append(Candidate(model, "bgnbd_gg", "baseline", btyd.predict(model, rows, days), fitted_on))
            continue
        candidates.append(Candidate(model, "bgnbd", "baseline", btyd.predict(model, rows, days), fitted_on))
        if model == "repurchase":
            candidates.append(Candidate(model, "bgnbd_expected", "baseline",
                                        btyd.expected_purchases_as_probability(rows, days),
                                        f"{fitted_on}; ranked by expected purchases"))  # fmt: skip
        candidates.append(_logistic_rfm(settings, orders, holdout, model, windows))
    return candidates


# --------------------------------------------------------------------------------------------
# Learned models


def _link(model: ModelName, predicted: np.ndarray) -> np.ndarray:
    """BG/NBD's prediction on LightGBM's raw scale: log-odds, or log revenue (Tweedie's log link)."""
    if SPECS[model].output == "probability":
        return np.asarray(logit(np.clip(predicted, 1e-6, 1 - 1e-6)))
    return np.log(np.maximum(predicted, 1e-6))


def _unlink(model: ModelName, raw: np.ndarray) -> np.ndarray:
    return np.asarray(expit(raw) if SPECS[model].output == "probability" else np.exp(raw))


@dataclass
class _LearningRows:
    frame: ModelFrame  # train and validation rows of the training windows, test rows of the holdout
    offsets: dict[str, np.ndarray] = field(default_factory=dict)  # BG/NBD's raw score per split
    # CLV: BG/NBD's log-odds of any purchase in each row's window, per split: a two-part model's
    # classifier starts there, and its value part at log(expected revenue / P(purchase))
    purchase_offsets: dict[str, np.ndarray] = field(default_factory=dict)


def _learning_rows(settings: Settings, holdout: Holdout, model: ModelName, windows: list[TrainingWindow],
                   fits: dict[date, Btyd | None] | None, holdout_btyd: Btyd) -> _LearningRows:  # fmt: skip
    """Training rows of each window with their features and, with `fits` (BG/NBD at each window's
    cutoff), BG/NBD's raw score for that window (0 without); the holdout rows as the test split. A
    fifth of customers (frames.is_validation_customer) is held out of training to tune on, as in
    training."""
    from features.store import training_frame  # Feast takes seconds to import

    parts, offsets, purchase = [], [], []
    for window in windows:
        labels = _population(_labels(settings, window.cutoff, window.days), model)
        fitted = fits.get(window.cutoff) if fits is not None else None
        if labels.empty or (fits is not None and fitted is None):
            continue
        offsets.append(_link(model, fitted.predict(model, labels, window.days)) if fitted else np.zeros(len(labels)))
        purchase.append(_link("repurchase", fitted.predict("repurchase", labels, window.days)) if fitted
                        else np.zeros(len(labels)))  # fmt: skip
        parts.append(labels)
    if not parts:
        history = " with enough history for BG/NBD (a repeat purchase)" if fits is not None else ""
        raise CannotTrain(f"no training cutoff has customers{history}")
    test = holdout.rows(model)
    labels = pd.concat([*parts, test], ignore_index=True)
    offset = np.concatenate([*offsets, _link(model, holdout_btyd.predict(model, test, holdout.horizon_days))])
    bought = np.concatenate([*purchase, _link("repurchase", holdout_btyd.predict("repurchase", test,
                                                                                 holdout.horizon_days))])  # fmt: skip
    features = training_frame(settings, labels[["customer_id", "cutoff"]], FEATURE_SERVICES[model])
    rows = pd.concat([features.reset_index(drop=True),
                      labels.drop(columns=["customer_id", "cutoff"]).reset_index(drop=True)], axis=1)  # fmt: skip
    is_test = np.arange(len(rows)) >= len(rows) - len(test)
    held_out = is_validation_customer(rows["customer_id"])
    rows["split"] = np.where(is_test, "test", np.where(held_out, "validation", "train"))
    for name in CATEGORY_FEATURES:
        rows[name] = rows[name].astype("category")
    split = Split(train=tuple(w.cutoff for w in windows), validation=(windows[-1].cutoff,), test=holdout.cutoff)
    frame = ModelFrame(model, split, FEATURE_SERVICES[model], rows)
    splits = {name: (rows["split"] == name).to_numpy() for name in ("train", "validation", "test")}
    return _LearningRows(frame, {name: offset[mask] for name, mask in splits.items()},
                         {name: bought[mask] for name, mask in splits.items()})  # fmt: skip


def _fit_and_predict(settings: Settings, spec: ModelSpec, learning: _LearningRows, with_offset: bool,
                     design: str = "") -> np.ndarray:  # fmt: skip
    """LightGBM tuned by Optuna on the validation customers (fixed parameters when they are too few),
    started from BG/NBD's score when `with_offset`; its prediction for the test rows. `design`
    two_part: CLV as P(purchase) x E[revenue | purchase] (training.two_part), each part tuned on half
    the trials and, with the offset, started from BG/NBD x Gamma-Gamma's own two factors."""
    frame = learning.frame
    data = Sufficiency.of(spec, frame, settings.training)
    data.require_training()
    train, valid, test = frame.part("train"), frame.part("validation"), frame.part("test")
    train_x = feature_matrix(train, inputs=frame.inputs)
    categories = {name: list(train_x[name].cat.categories) for name in CATEGORY_FEATURES}
    valid_x, test_x = feature_matrix(valid, categories, frame.inputs), feature_matrix(test, categories, frame.inputs)
    targets = {"train": (train_x, spec.fit_targets(train)), "validation": (valid_x, spec.fit_targets(valid))}
    tunable, fixed = data.enough("validation"), spec.tree_params(list(train_x.columns))
    if design != "two_part":
        offsets = learning.offsets if with_offset else None
        budget = (settings.training.trials, float(settings.training.timeout_seconds))
        raw = _fit_raw(settings, spec.objective, targets, test_x, offsets, budget, tunable, fixed)
        return _unlink(spec.name, raw)
    # the value part's offset: log(expected revenue) - log(P(purchase)), on the buyers' rows only
    purchase_offsets = learning.purchase_offsets if with_offset else None
    value_offsets = ({split: learning.offsets[split] - np.log(expit(learning.purchase_offsets[split]))
                      for split in learning.offsets} if with_offset else None)  # fmt: skip
    bought = {split: y > 0 for split, (_, y) in targets.items()}
    budgets = two_part.split_budget(settings.training.trials, settings.training.timeout_seconds)
    p = expit(_fit_raw(settings, two_part.PURCHASE_OBJECTIVE,
                       {split: two_part.purchase_data(data) for split, data in targets.items()}, test_x,
                       purchase_offsets, budgets["booster"], tunable, fixed))  # fmt: skip
    value_targets = {split: two_part.value_data(data) for split, data in targets.items()}
    value_offsets = (None if value_offsets is None else
                     {split: offset[bought[split]] if split in bought else offset
                      for split, offset in value_offsets.items()})  # fmt: skip
    value = np.exp(_fit_raw(settings, two_part.VALUE_OBJECTIVE, value_targets, test_x, value_offsets,
                            budgets["value_booster"], tunable, fixed))  # fmt: skip
    return np.asarray(p * value)


def _fit_raw(settings: Settings, objective: Objective, data: dict[str, tuple[pd.DataFrame, np.ndarray]],
             test_x: pd.DataFrame, offsets: dict[str, np.ndarray] | None, budget: tuple[int, float],
             tunable: bool, fixed: dict[str, Any]) -> np.ndarray:  # fmt: skip
    """One booster tuned (`budget`: trials and seconds, as training.two_part.split_budget shares
    them between two parts; `fixed`: the spec's tree parameters) and fitted on the train rows of
    `data`, stopping on its validation rows; its raw test score, plus the test offset."""
    from training.tuning import datasets, fit_lightgbm, tune, untuned_params

    training = settings.training
    init = (offsets["train"], offsets["validation"]) if offsets is not None else None
    if tunable:
        trials, seconds = budget
        params = tune(objective, data["train"], data["validation"], trials, seconds, training.seed, training.threads,
                      init_scores=init, fixed=fixed).params  # fmt: skip
    else:
        params = untuned_params(objective, training.seed, training.threads, fixed)
    booster = fit_lightgbm(params, *datasets(data["train"], data["validation"] if tunable else None, init))
    raw = np.asarray(booster.predict(test_x, raw_score=True))
    return raw + offsets["test"] if offsets is not None else raw


def learned_candidates(settings: Settings, holdout: Holdout, orders: pd.DataFrame, btyd: Btyd,
                       console: Console | None = None) -> list[Candidate]:  # fmt: skip
    """For each model: `lightgbm` trained directly on full-horizon windows before the cutoff (when
    any fit), and `lightgbm_bgnbd`, the correction on top of BG/NBD over every training window."""
    say = console.print if console else (lambda *_: None)
    windows = training_windows(settings, holdout)
    most = grid_counts(settings).train
    full = [w for w in windows if w.days == holdout.horizon_days][-most:]
    recent = windows[-most:]
    _ensure_snapshots(settings, [w.cutoff for w in recent + full] + [holdout.cutoff], console)
    fits = {window.cutoff: _fit_or_none(orders, window.cutoff) for window in recent}
    candidates = []
    for model in MODELS:
        spec = SPECS[model]

        # A window set's rows are read once (a Feast retrieval) for the one-booster and the two-part design.
        @cache
        def learning_rows(
            chosen: tuple[TrainingWindow, ...], with_offset: bool, model: ModelName = model
        ) -> _LearningRows:
            return _learning_rows(settings, holdout, model, list(chosen), fits if with_offset else None, btyd)

        designs: list[tuple[str, list[TrainingWindow], bool]] = [
            ("lightgbm", full, False),
            ("lightgbm_bgnbd", recent, True),
        ]
        if spec.two_part:  # the same two, as P(purchase) x E[value | purchase] (training.two_part)
            designs += [("lightgbm_two_part", full, False), ("lightgbm_bgnbd_two_part", recent, True)]
        for name, chosen, with_offset in designs:
            if not chosen:
                candidates.append(Candidate(model, name, "learned", None, _no_window(holdout, windows, with_offset)))
                continue
            say(f"[bold]{model}[/]: {name} on {len(chosen)} cutoffs {chosen[0].cutoff}..{chosen[-1].cutoff}")
            try:
                learning = learning_rows(tuple(chosen), with_offset)
                predicted = _fit_and_predict(settings, spec, learning, with_offset,
                                             "two_part" if name.endswith("two_part") else "")  # fmt: skip
            except CannotTrain as exc:
                candidates.append(Candidate(model, name, "learned", None, str(exc)))
                continue
            counts = learning.frame.part("train")
            spans = (
                f"{chosen[0].days}..{chosen[-1].days}-day windows"
                if with_offset
                else f"{holdout.horizon_days}-day windows"
            )
            candidates.append(Candidate(model, name, "learned", predicted,
                                        f"trained on {counted(len(counts), 'row')} at {counted(len(chosen), 'cutoff')} "
                                        f"{chosen[0].cutoff}..{chosen[-1].cutoff}, {spans}"))  # fmt: skip
    return candidates


def _fit_or_none(orders: pd.DataFrame, cutoff: date) -> Btyd | None:
    """BG/NBD and Gamma-Gamma at a training cutoff; None when its history is too short for them
    (no repeat purchase yet): that cutoff trains nothing."""
    try:
        return Btyd.fit(orders, cutoff)
    except CustlensError:
        return None


def _no_window(holdout: Holdout, windows: list[TrainingWindow], with_offset: bool) -> str:
    if with_offset:
        return (
            f"no grid cutoff before {holdout.cutoff} leaves a label window of {MIN_TRAINING_WINDOW_DAYS} days or more"
        )
    longest = max((w.days for w in windows), default=0)
    return (
        f"no training rows fit the {holdout.horizon_days}-day horizon before {holdout.cutoff}: the longest label "
        f"window that ends by the cutoff is {longest} days (see lightgbm_bgnbd)"
    )


def _ensure_snapshots(settings: Settings, cutoffs: list[date], console: Console | None) -> None:
    """Build the feature snapshots of the cutoffs that have none (never rebuilds one that exists)."""
    from features.snapshot_reader import snapshot_cutoffs
    from features.snapshots import build_snapshots

    missing = sorted(set(cutoffs) - set(snapshot_cutoffs(settings)))
    if missing:
        if console:
            console.print(f"building feature snapshots at {', '.join(map(str, missing))}", highlight=False)
        build_snapshots(settings, missing, console=console)


def oracle_candidates(settings: Settings, holdout: Holdout) -> list[Candidate]:
    """On a lake ingested from generated sample data, the oracle's predictions from the generator's
    latent truth (what a perfect model of this world would say); real data has none."""
    from training.oracle import load_truth, oracle_predictions, truth_dir_for

    truth_dir = truth_dir_for(settings)
    if truth_dir is None:
        return []
    try:
        truth = load_truth(truth_dir, settings.lake_dir)
    except CustlensError:
        return []  # the lake was not ingested from this sample
    note = "the generator's latent truth: purchase rate, drop-out hazard and alive state at the cutoff"
    return [Candidate(model, "oracle", "oracle", oracle_predictions(truth, holdout.rows(model)["customer_id"].tolist(),
                                                                     holdout.cutoff, model, holdout.horizon_days), note)
            for model in MODELS]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _finite(self.value), "ci_low": _finite(self.low), "ci_high": _finite(self.high)}


@dataclass(frozen=True)
class Row:
    model: ModelName
    candidate: str
    kind: Kind
    metric: str  # without training's `test_` prefix: auc, pr_auc, normalized_gini, ...
    estimate: Interval
    diff_vs_best_baseline: Interval | None  # learned rows

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"model": self.model, "candidate": self.candidate, "kind": self.kind,
                               "metric": self.metric, **self.estimate.to_dict()}  # fmt: skip
        if self.kind != "baseline":
            row["diff_vs_best_baseline"] = self.diff_vs_best_baseline.to_dict() if self.diff_vs_best_baseline else None
        return row


@dataclass
class BacktestResult:
    cutoff: date
    horizon_days: int
    rows: list[Row]
    candidates: list[Candidate]
    populations: dict[ModelName, dict[str, int]]  # model -> customers, positives, negatives
    best_baselines: dict[ModelName, str]  # model -> its baseline with the best primary metric
    metrics: dict[tuple[ModelName, str], dict[str, float]]  # (model, candidate) -> training's test metrics
    resamples: int
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "horizon_days": self.horizon_days,
            "rows": [row.to_dict() for row in self.rows],
            "populations": self.populations,
            "best_baselines": self.best_baselines,
            "candidates": [
                {"model": c.model, "candidate": c.name, "kind": c.kind, "evaluated": not c.skipped, "note": c.note}
                for c in self.candidates
            ],
            "resamples": self.resamples,
            "mlflow_run_id": self.run_id,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> Group:
        end = self.cutoff + timedelta(days=self.horizon_days - 1)
        title = f"custlens backtest: {self.cutoff}..{end} ({self.horizon_days} days), 95% bootstrap intervals"
        table = Table(title=title, expand=False)
        for column in ("model", "candidate", "kind", "metric", "value", "95% interval", "vs best baseline"):
            table.add_column(column)
        for row in self.rows:
            diff = row.diff_vs_best_baseline
            versus = "" if diff is None else f"{'+' if diff.value >= 0 else ''}{_number(diff.value)} {_range(diff)}"
            table.add_row(row.model, row.candidate, row.kind, row.metric, _number(row.estimate.value),
                          _range(row.estimate), versus)  # fmt: skip
        lines = []
        for model, counts in self.populations.items():
            positive, negative = SPECS[model].classes
            best = self.best_baselines.get(model, "-")
            lines.append(f"{model}: {counted(counts['customers'], 'customer')}, "
                         f"{counted(counts['positives'], positive)}, {counted(counts['negatives'], negative)}; "
                         f"best baseline {best}")  # fmt: skip
        lines += [f"{c.model} {c.name}: {'not evaluated: ' if c.skipped else ''}{c.note}" for c in self.candidates]
        return Group(table, *lines)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def _range(interval: Interval) -> str:
    return f"[{_number(interval.low)}, {_number(interval.high)}]"


def evaluate(holdout: Holdout, candidates: list[Candidate], resamples: int, seed: int) -> BacktestResult:
    """Every evaluated candidate's metrics with bootstrap intervals; each model's resamples are the
    same for all its candidates, so the difference to the best baseline is paired."""
    rows: list[Row] = []
    populations: dict[ModelName, dict[str, int]] = {}
    best_baselines: dict[ModelName, str] = {}
    metrics: dict[tuple[ModelName, str], dict[str, float]] = {}
    for model in MODELS:
        spec = SPECS[model]
        actual = holdout.actual(model)
        positives = int(spec.is_positive(holdout.rows(model)).sum())
        populations[model] = {"customers": len(actual), "positives": positives, "negatives": len(actual) - positives}
        evaluated = [c for c in candidates if c.model == model and not c.skipped]
        metric_defs = bootstrap.CLASSIFIER_METRICS if spec.output == "probability" else bootstrap.VALUE_METRICS
        predictions: dict[str, np.ndarray] = {}
        for candidate in evaluated:
            assert candidate.predicted is not None
            metrics[(model, candidate.name)] = spec.test_metrics(actual, candidate.predicted)
            predictions[candidate.name] = candidate.predicted
        weighted = {key: metric for key, (metric, _) in metric_defs.items()}
        draws = bootstrap.bootstrap(weighted, actual, predictions, resamples, seed)
        baselines = [c.name for c in evaluated if c.kind == "baseline"]
        best = max(baselines, key=lambda name: metrics[(model, name)][spec.primary_metric], default=None)
        if best is not None:
            best_baselines[model] = best
        for candidate in evaluated:
            for key in metric_defs:
                point = metrics[(model, candidate.name)][key]
                estimate = Interval(point, *bootstrap.interval(draws[candidate.name][key]))
                diff = None
                if candidate.kind != "baseline" and best is not None:
                    paired = draws[candidate.name][key] - draws[best][key]
                    diff = Interval(point - metrics[(model, best)][key], *bootstrap.interval(paired))
                rows.append(Row(model, candidate.name, candidate.kind, key.removeprefix("test_"), estimate, diff))
    return BacktestResult(holdout.cutoff, holdout.horizon_days, rows, candidates, populations, best_baselines,
                          metrics, resamples)  # fmt: skip


def log_run(settings: Settings, result: BacktestResult) -> str:
    """One MLflow run of the backtest, a nested run per candidate with training's metric keys plus
    `<key>_ci_low`, `<key>_ci_high` and `<key>_diff_vs_best_baseline` (and its interval)."""
    import mlflow

    from training.tracking import connect, start_run, use_experiment

    connect(settings)
    use_experiment(settings, EXPERIMENT)
    with start_run(f"backtest {result.cutoff} +{result.horizon_days}d") as run:
        mlflow.log_params({"cutoff": result.cutoff.isoformat(), "horizon_days": result.horizon_days,
                           "resamples": result.resamples, "seed": settings.training.seed})  # fmt: skip
        mlflow.log_dict(result.to_dict(), "backtest.json")
        for candidate in result.candidates:
            with mlflow.start_run(run_name=f"{candidate.model} {candidate.name}", nested=True):
                mlflow.set_tags({"model": candidate.model, "candidate": candidate.name, "kind": candidate.kind,
                                 "note": candidate.note, "cutoff": result.cutoff.isoformat()})  # fmt: skip
                if candidate.skipped:
                    mlflow.set_tag("skipped", candidate.note)
                    continue
                logged = dict(result.metrics[(candidate.model, candidate.name)])
                for row in result.rows:
                    if (row.model, row.candidate) != (candidate.model, candidate.name):
                        continue
                    key = f"test_{row.metric}"
                    logged |= {f"{key}_ci_low": row.estimate.low, f"{key}_ci_high": row.estimate.high}
                    if row.diff_vs_best_baseline is not None:
                        diff = row.diff_vs_best_baseline
                        logged |= {f"{key}_diff_vs_best_baseline": diff.value,
                                   f"{key}_diff_ci_low": diff.low, f"{key}_diff_ci_high": diff.high}  # fmt: skip
                mlflow.log_metrics({k: v for k, v in logged.items() if math.isfinite(v)})
    return str(run.info.run_id)


def run_backtest(settings: Settings, cutoff: date, horizon_days: int, learned: bool = True,
                 resamples: int = bootstrap.RESAMPLES, console: Console | None = None) -> BacktestResult:  # fmt: skip
    """Baselines (and, unless `learned` is off, the learned models) on the holdout, evaluated and logged."""
    holdout = load_holdout(settings, cutoff, horizon_days)
    orders = _orders(settings)
    btyd = Btyd.fit(orders, cutoff)
    candidates = baseline_candidates(settings, holdout, orders, btyd)
    if learned:
        candidates += learned_candidates(settings, holdout, orders, btyd, console)
    candidates += oracle_candidates(settings, holdout)
    result = evaluate(holdout, candidates, resamples, settings.training.seed)
    result.run_id = log_run(settings, result)
    return result
