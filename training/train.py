"""`custlens train`: for each model, build its point-in-time frame, tune LightGBM on the
validation window, calibrate, evaluate on the test window against its baselines, and log
everything to MLflow; then register it and let the gate decide @champion (training.registry).
What differs between models is read from their spec (training.specs), never from their name."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from rich import box
from rich.console import Console, Group
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from custlens.progress import progress_bar
from custlens.settings import Settings
from features.lake.tables import table_path
from training import plots, registry, two_part
from training.baselines import Baseline, baselines_for
from training.baselines.servable import BaselineBundle
from training.evaluation import PRIMARY_METRIC
from training.frames import (
    CATEGORY_FEATURES,
    CannotTrain,
    ModelFrame,
    ModelName,
    build_model_frame,
    customer_folds,
    feature_matrix,
)
from training.packaging import (
    FEATURE_DIRECTIONS,
    FEATURE_MEDIANS,
    SCORE_PERCENTILES,
    ModelBundle,
    SegmentsBundle,
    feature_directions,
    score_percentiles,
)
from training.registry import CHALLENGER, CHAMPION
from training.specs import SPECS, ModelSpec, NextOrderTiming
from training.sufficiency import SPLITS, Sufficiency
from training.tracking import connect, end_killed_runs, start_run, use_experiment
from training.tuning import (
    UNTUNED,
    Data,
    Objective,
    base_params,
    datasets,
    fit_lightgbm,
    tune,
    untuned_params,
    validation_metric,
)
from training.value_range import P10, P90, RANGE_KEY, ValueRange, coverage_metrics, range_of

# Every model `custlens train` knows: the supervised ones by their spec, then the segments.
MODELS: tuple[str, ...] = (*SPECS, "segments")
CANDIDATE = "candidate"  # the model just trained, among the predictors of the test rows
TEST_PREDICTIONS = "test_predictions.parquet"  # artifact of each run: the test rows and every predictor's score
RANGE_ARTIFACT = "clv_range.json"  # artifact of a CLV run: the P10-P90 table per predicted-value bin


@dataclass
class ModelResult:
    model: ModelName
    run_id: str
    version: str
    metrics: dict[str, float]
    promoted: bool
    decision: str
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    data: Sufficiency | None = None  # rows, positives, negatives per split (supervised models)
    gate: list[registry.Check] = field(default_factory=list)  # the promotion gate's checks, when it ran
    skipped: bool = False  # not trained: `decision` says why
    served: str = ""  # when the candidate lost: which version serves instead (a baseline, or the champion kept)


def _calibration(raw: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Platt scaling fitted on the validation window (the test window measures how well it holds).

    Isotonic regression calibrated as well here but turned the scores into steps, whose ties
    lowered the test AUC; a logistic map of the log-odds is strictly increasing and keeps the ranking.
    """
    logit = np.log(np.clip(raw, 1e-6, 1 - 1e-6) / (1 - np.clip(raw, 1e-6, 1 - 1e-6)))
    platt = LogisticRegression(C=1e6).fit(logit.reshape(-1, 1), actual.astype(int))
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def _timing_booster(timing: NextOrderTiming, frame: ModelFrame, train_x: pd.DataFrame,
                    valid_x: pd.DataFrame | None, seed: int, threads: int) -> Any:  # fmt: skip
    """log1p(days to the next order) for rows whose next order is known: the expected next date.
    Without a validation window to stop on (None), the untuned number of rounds."""

    def known(rows: pd.DataFrame, x: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        mask = rows[timing.target].notna().to_numpy()
        return x[mask], np.log1p(rows[timing.target].to_numpy()[mask])

    validation = None if valid_x is None else known(frame.part("validation"), valid_x)
    params = {**base_params("regression", seed, threads), "learning_rate": 0.1, "num_leaves": 31}
    if validation is None:
        params["num_boost_round"] = UNTUNED["num_boost_round"]
    return fit_lightgbm(params, *datasets(known(frame.part("train"), train_x), validation))


def _timing_error(timing: NextOrderTiming, scores: pd.DataFrame, test: pd.DataFrame) -> float:
    """Mean absolute error in days of the expected next order, over the test rows whose next order is known."""
    known = test[timing.target].notna().to_numpy()
    if not known.any():
        return float("nan")
    return float(np.mean(np.abs(scores[timing.output].to_numpy()[known] - test[timing.target].to_numpy()[known])))


# Folds of the training rows (by customer) cross-fitted for the CLV range: each row predicted by
# trees that never saw its customer.
RANGE_FOLDS = 5


def _value_range(spec: ModelSpec, frame: ModelFrame, bundle: ModelBundle, params: dict[str, dict[str, Any]],
                 train_x: pd.DataFrame) -> ValueRange | None:  # fmt: skip
    """The predicted value's P10-P90 range (training.value_range), made on rows no tree that
    predicts them was fitted on: the training rows cross-fitted by customer (RANGE_FOLDS folds, the
    model's design, parameters and rounds: `params` of each booster field), and the validation rows
    by the model itself (they chose its rounds, never its trees). The validation window alone is one
    cutoff of a fifth of the customers, too few rows for more than a couple of bins on a small lake."""
    train, valid = frame.part("train"), frame.part("validation")
    fold = customer_folds(train["customer_id"], RANGE_FOLDS)
    fixed = {part: {**part_params, "num_boost_round": _rounds(getattr(bundle, part))}
             for part, part_params in params.items()}  # fmt: skip
    # fitted on the training frame (the trees keep its feature names), scored through the bundle's encoding
    encoded, targets = bundle.encode(train), spec.fit_targets(train)
    predicted = np.full(len(train), np.nan)
    for k in range(RANGE_FOLDS):
        fit = fold != k
        if fit.all() or not fit.any():
            continue  # a fold without rows, or the only one
        # the bundle with trees of the other folds (and no range of its own): one scoring path for either design
        refitted = replace(bundle, **_fit_boosters(fixed, (train_x[fit], targets[fit]), None), meta={})
        predicted[~fit] = refitted.scores(encoded[~fit])["predicted_value"]
    held_out = bundle.scores(bundle.encode(valid))["predicted_value"] if len(valid) else np.empty(0)
    validation = frame.split.describe_validation()
    source = f"training rows cross-fitted ({RANGE_FOLDS} folds by customer) and validation {validation}"
    return ValueRange.fit(np.concatenate([predicted, held_out]), np.concatenate([spec.labels(train),
                          spec.labels(valid)]), source)  # fmt: skip


def _rounds(booster: Any) -> int:
    """The rounds a booster predicts with: its early-stopping best, or all it grew."""
    return int(booster.best_iteration or booster.current_iteration())


def _fit_boosters(params: dict[str, dict[str, Any]], train: Data, valid: Data | None) -> dict[str, Any]:
    """The ModelBundle booster fields `params` names, fitted on `train` (early stopping on `valid`
    when given): `booster` alone, or a two-part model's `booster` and `value_booster`."""
    if set(params) == set(two_part.PARTS):
        return two_part.fit_parts(params, train, valid)
    return {"booster": fit_lightgbm(params["booster"], *datasets(train, valid))}


@dataclass
class _Fitted:
    """One design of a model, fitted: its bundle and the LightGBM parameters of each booster field
    (what the CLV range's cross-fitting refits with)."""

    bundle: ModelBundle
    params: dict[str, dict[str, Any]]


def _designs(settings: Settings, spec: ModelSpec, tunable: bool) -> tuple[str, ...]:
    """The designs to fit: the spec's one booster (named by its objective), and for a value model that
    may be two-part (`training.clv_design`) the two-part one instead or as well. `auto` fits both when
    validation can choose; without a validation window to choose on it is the one booster."""
    if not spec.two_part:
        return (spec.objective,)
    setting = settings.training.clv_design
    if setting == "auto":
        return (spec.objective, "two_part") if tunable else (spec.objective,)
    return ("two_part",) if setting == "two_part" else (spec.objective,)


def _fit_design(settings: Settings, spec: ModelSpec, design: str, frame: ModelFrame, data: tuple[Data, Data],
                categories: dict[str, list[str]], tunable: bool, console: Console | None) -> _Fitted:  # fmt: skip
    """One design tuned on the validation window (each part with its share of the budget:
    training.two_part.split_budget), fitted, and as a bundle, calibrated where its classifier is."""
    train, valid = data
    training = settings.training
    fixed = spec.tree_params(list(train[0].columns))  # monotone constraints, for every part
    if design == "two_part":
        budgets = two_part.split_budget(training.trials, training.timeout_seconds)
        params = {part: _part_params(settings, objective, two_part.part_data(part, train),
                                     two_part.part_data(part, valid), tunable, (budgets[part], fixed),
                                     f"{spec.name} {_PART_NAMES[part]}", f"{_PART_NAMES[part]}_", console)
                  for part, objective in two_part.PARTS.items()}  # fmt: skip
    else:
        budget = (training.trials, float(training.timeout_seconds))
        params = {"booster": _part_params(settings, spec.objective, train, valid, tunable, (budget, fixed), spec.name,
                                          "", console)}  # fmt: skip
    boosters = _fit_boosters(params, train, valid if tunable else None)
    # the days after a cutoff its label is over: what its scores state, whatever the config says later
    meta = {"test_cutoff": frame.split.test.isoformat(), "window_days": spec.label_window(settings),
            "activity_window_days": int(training.activity_window_days),  # churn's population
            **({two_part.DESIGN_KEY: design} if spec.two_part else {})}  # fmt: skip
    bundle = ModelBundle(model=spec.name, features=list(train[0].columns), categories=categories,
                         feature_service=frame.service, meta=meta, **boosters)  # fmt: skip
    if tunable and (spec.calibrated or design == "two_part"):
        # Platt on the validation window; a two-part model's classifier is of P(value > 0)
        bundle.calibration = _calibration(bundle.raw_score(valid[0]), two_part.purchase_data(valid)[1]
                                          if design == "two_part" else valid[1])  # fmt: skip
    return _Fitted(bundle, params)


# How a two-part model's boosters are named in its run (parameters `purchase_best_*`, trials "value trial 003").
_PART_NAMES = {"booster": "purchase", "value_booster": "value"}


def _part_params(settings: Settings, objective: Objective, train: Data, valid: Data, tunable: bool,
                 budget: tuple[tuple[int, float], dict[str, Any]], who: str, prefix: str,
                 console: Console | None) -> dict[str, Any]:  # fmt: skip
    """One booster's LightGBM parameters: tuned on the validation window within `budget` ((trials,
    seconds), and the parameters the spec fixes: training.specs.ModelSpec.tree_params), logged with
    `prefix` (`best_*`, `validation_loss`, ...); fixed ones when it cannot tune."""
    training = settings.training
    (trials, seconds), fixed = budget
    if not tunable:
        return untuned_params(objective, training.seed, training.threads, fixed)
    with _trial_progress(console, who, trials, prefix.rstrip("_"), validation_metric(objective)) as on_trial:
        tuned = tune(objective, train, valid, trials, seconds, training.seed, training.threads, on_trial=on_trial,
                     fixed=fixed)  # fmt: skip
    logged = {k: v for k, v in tuned.params.items() if k not in ("num_threads", "verbosity", "monotone_constraints")}
    mlflow.log_params({f"{prefix}best_{k}": v for k, v in logged.items()})
    mlflow.log_metrics({f"{prefix}validation_loss": tuned.best_value, f"{prefix}trials": tuned.trials,
                        f"{prefix}trials_pruned": tuned.pruned})  # fmt: skip
    return tuned.params


def _choose_design(spec: ModelSpec, fits: dict[str, _Fitted], valid: pd.DataFrame, settings: Settings,
                   say: Callable[..., None]) -> str:  # fmt: skip
    """The design that goes to the gate: the only one fitted, or the one with the better primary
    metric on the validation window (the test rows never choose; a tie keeps the one booster). Each
    design's validation metric and the choice are logged (param and tag `clv_design`)."""
    if not spec.two_part:
        return next(iter(fits))
    key = spec.primary_metric.removeprefix("test_")
    measured: dict[str, float] = {}
    if len(valid):
        actual = spec.labels(valid)
        for design, fitted in fits.items():
            metrics = spec.test_metrics(actual, spec.scores(fitted.bundle.predict(valid)))
            measured[design] = metrics[spec.primary_metric]
            mlflow.log_metrics({f"validation_{name}_{design}": metrics[f"test_{name}"] for name in (key, "total_ratio")
                                if np.isfinite(metrics[f"test_{name}"])})  # fmt: skip
    ranked = [design for design in fits if np.isfinite(measured.get(design, np.nan))]
    chosen = max(ranked, key=lambda design: measured[design]) if len(ranked) > 1 else next(iter(fits))
    setting = settings.training.clv_design
    alone = f"training.clv_design {setting}" + (": no validation window to choose on" if setting == "auto" else "")
    why = (", ".join(f"{design} {measured[design]:.4f}" for design in ranked) + f" validation {key}"
           if len(ranked) > 1 else alone)  # fmt: skip
    mlflow.log_params({two_part.DESIGN_KEY: chosen, f"{two_part.DESIGN_KEY}_setting": setting})
    mlflow.set_tags({two_part.DESIGN_KEY: chosen, f"{two_part.DESIGN_KEY}_why": why})
    say(f"[bold]{spec.name}[/]: design {chosen} ({why})")
    return chosen


def _range_metrics(spec: ModelSpec, test: pd.DataFrame, scores: pd.DataFrame | dict[str, Any]) -> dict[str, float]:
    """How the P10-P90 range held on the test rows (training.value_range.coverage_metrics); empty
    when the scores have no range."""
    if P10 not in scores:
        return {}
    return coverage_metrics(spec.labels(test), np.asarray(scores[P10]), np.asarray(scores[P90]), spec.is_positive(test))


def _log_dataset(rows: pd.DataFrame, spec: ModelSpec, frame: ModelFrame, context: str, source: Path) -> None:
    cutoffs = sorted({c.date().isoformat() for c in rows["cutoff"]}) or ["no rows"]
    plain = rows.copy()
    for name in CATEGORY_FEATURES:
        plain[name] = plain[name].astype("object")
    # counts as float64: they can be missing, which an integer column in the schema cannot say
    integers = plain.select_dtypes("integer").columns
    plain[integers] = plain[integers].astype("float64")
    with warnings.catch_warnings():
        # a local folder matches MLflow's local-artifact source twice; it picks the right one
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            plain,
            source=str(source.resolve()),  # the snapshot folder Feast's point-in-time join read
            targets=spec.label,
            name=f"{frame.service} {cutoffs[0]}..{cutoffs[-1]}",
        )
    mlflow.log_input(dataset, context=context)


@contextmanager
def _trial_progress(
    console: Console | None, model: str, trials: int, part: str = "", metric: str = "loss"
) -> Iterator[Callable[[optuna.trial.FrozenTrial], None]]:
    """Each finished trial is logged as a nested run (named for its `part` of a two-part model) and,
    on a console, advances a progress bar that names the validation `metric` it shows the best of."""
    log = partial(_log_trial, part=part)
    if console is None:
        yield log
        return
    from rich.progress import TextColumn

    best_so_far = TextColumn(f"best validation {metric} {{task.fields[best]}}")
    with progress_bar(console, best_so_far, description=f"[bold]{model}[/]: tuning") as progress:
        task = progress.add_task("trials", total=trials, best="-")
        best = float("inf")

        def on_trial(trial: optuna.trial.FrozenTrial) -> None:
            nonlocal best
            log(trial)
            if trial.value is not None and trial.value < best:
                best = trial.value
            progress.update(task, advance=1, best=f"{best:.4f}" if best < float("inf") else "-")

        yield on_trial


def _log_trial(trial: optuna.trial.FrozenTrial, part: str = "") -> None:
    with mlflow.start_run(run_name=f"{part} trial {trial.number:03d}".lstrip(), nested=True):
        mlflow.log_params(trial.params)
        if part:
            mlflow.set_tag("part", part)
        mlflow.set_tag("trial_state", trial.state.name.lower())
        if trial.value is not None:
            mlflow.log_metric("validation_loss", trial.value)
        if "num_boost_round" in trial.user_attrs:
            mlflow.log_metric("num_boost_round", trial.user_attrs["num_boost_round"])


# Test rows whose per-feature contributions are computed once: the SHAP summary draws the first
# SHAP_ROWS of them, a classifier's learned feature directions read them all.
EXPLAINED_ROWS, SHAP_ROWS = 5000, 2000


def _log_explanations(bundle: ModelBundle, explained: pd.DataFrame, contributions: np.ndarray, model: str) -> None:
    """What the booster learned: feature importance (figure and JSON) and a SHAP summary of test
    rows (`explained`, a sample of them, and their `contributions`)."""
    importance = pd.Series(bundle.booster.feature_importance("gain"), index=bundle.booster.feature_name())
    shown = explained.iloc[:SHAP_ROWS]
    _log_and_close(
        {
            "feature_importance.png": plots.importance_figure(importance, f"{model}: feature importance"),
            "shap_summary.png": plots.shap_figure(contributions[:SHAP_ROWS], shown, f"{model}: SHAP summary (test)"),
        }
    )
    mlflow.log_dict({name: float(value) for name, value in importance.items()}, "feature_importance.json")


def _log_and_close(figures: dict[str, Figure]) -> None:
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        plots.close(figure)


def train_model(
    settings: Settings, model: ModelName, baselines: dict[str, Baseline] | None = None, console: Console | None = None
) -> ModelResult:
    """Train one supervised model as its spec (training.specs) describes it; gate it against its
    baselines and the champion. A model the data cannot train (its window does not fit, too few
    training rows) is a skipped result with the reason, logged as a run of its own."""
    spec = SPECS[model]
    started = time.perf_counter()
    say = console.print if console else (lambda *_: None)
    say(f"[bold]{model}[/]: building the point-in-time training frame")
    data: Sufficiency | None = None
    try:
        frame = build_model_frame(settings, model)
        data = Sufficiency.of(spec, frame, settings.training)
        data.require_training()
    except CannotTrain as exc:
        return _skipped(settings, spec, str(exc), data, started)
    train, valid, test = frame.part("train"), frame.part("validation"), frame.part("test")
    train_x = feature_matrix(train, inputs=frame.inputs)
    categories = {name: list(train_x[name].cat.categories) for name in CATEGORY_FEATURES}
    valid_x, test_x = feature_matrix(valid, categories, frame.inputs), feature_matrix(test, categories, frame.inputs)
    train_y, valid_y, test_y = spec.fit_targets(train), spec.fit_targets(valid), spec.labels(test)

    connect(settings)
    use_experiment(settings, model)
    with start_run(f"{model} lightgbm") as run:
        mlflow.set_tags({"model": model, "kind": "lightgbm", "feature_service": frame.service,
                         "test_cutoff": frame.split.test.isoformat(), **data.tags(),
                         **({"features_note": frame.note} if frame.note else {})})  # fmt: skip
        if frame.note:
            say(f"[yellow]{model}: {frame.note}[/]")
        mlflow.log_params(
            {
                "label_window_days": spec.label_window(settings),
                "train_cutoffs": ",".join(c.isoformat() for c in frame.split.train),
                "validation_cutoffs": ",".join(c.isoformat() for c in frame.split.validation),
                "test_cutoff": frame.split.test.isoformat(),
                "feature_service": frame.service,
                **data.params(),
                "trials_budget": settings.training.trials,
                "timeout_seconds_budget": settings.training.timeout_seconds,
                "seed": settings.training.seed,
                "monotone": ", ".join(
                    f"{name} {sign:+d}" for name, sign in spec.monotone.items() if name in train_x.columns
                )
                or "none",
            }
        )
        for rows, context in ((train, "training"), (valid, "validation"), (test, "test")):
            _log_dataset(rows, spec, frame, context, settings.features_dir)

        tunable = data.enough("validation")
        if not tunable:
            say(f"[bold]{model}[/]: {data.reason('validation')}; fitted with fixed parameters, uncalibrated")
        fits = {design: _fit_design(settings, spec, design, frame, ((train_x, train_y), (valid_x, valid_y)),
                                    categories, tunable, console)
                for design in _designs(settings, spec, tunable)}  # fmt: skip
        fitted = fits[_choose_design(spec, fits, valid, settings, say)]
        bundle, params = fitted.bundle, fitted.params
        if spec.output == "predicted_value":
            value_range = _value_range(spec, frame, bundle, params, train_x)
            if value_range is not None:
                bundle.meta[RANGE_KEY] = value_range.to_dict()
                mlflow.log_dict(value_range.to_dict(), RANGE_ARTIFACT)
        if spec.timing is not None:
            bundle.timing_booster = _timing_booster(spec.timing, frame, train_x, valid_x if tunable else None,
                                                    settings.training.seed, settings.training.threads)  # fmt: skip

        metrics: dict[str, float] = {}
        baseline_metrics: dict[str, dict[str, float]] = {}
        predictions: dict[str, np.ndarray] = {}  # every predictor's scores of the test rows, the model's first
        servables: dict[str, BaselineBundle] = {}  # each baseline's fit, as a model that can serve
        baseline_runs: dict[str, str] = {}  # each baseline's run: a baseline that serves is registered in it
        if data.measurable("test"):
            scores = bundle.predict(test)
            predictions[CANDIDATE] = spec.scores(scores)
            metrics = spec.test_metrics(test_y, predictions[CANDIDATE]) | _range_metrics(spec, test, scores)
            if spec.timing is not None:
                metrics[spec.timing.metric] = _timing_error(spec.timing, scores, test)
            mlflow.log_metrics(metrics)
            explained = test_x.sample(min(EXPLAINED_ROWS, len(test_x)), random_state=0)
            contributions = bundle.contributions(explained)  # per row and feature, the expected value left out
            _log_explanations(bundle, explained, contributions, model)
            baseline_metrics, baseline_predictions, servables, baseline_runs = _run_baselines(
                spec, frame, baselines or {}
            )
            predictions |= baseline_predictions
            _record_test_scores(spec, bundle, test_x, servables, predictions, (explained, contributions))
            metrics.update(_oracle_metrics(settings, spec, frame, metrics, baseline_metrics))
            if "oracle_gap_closed" in metrics:
                mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("oracle_")})

        say(f"[bold]{model}[/]: registering the model")
        version = registry.register(model, bundle, test if len(test) else train)
        champion_metrics: dict[str, float] | None = None  # the current champion's on these test rows
        if predictions:
            champion_version, champion_predicted = registry.champion_predictions(settings, spec, frame, predictions)
            if champion_version is not None and champion_predicted is not None:
                predictions[f"champion v{champion_version}"] = champion_predicted
                champion_metrics = spec.test_metrics(test_y, champion_predicted)
                mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items() if np.isfinite(v)})
            _log_test_scores(spec, test, predictions, model)
        if data.enough("test"):
            say(f"[bold]{model}[/]: promotion gate ({settings.training.bootstrap_resamples} bootstrap resamples)")
            incumbents = {name: scores for name, scores in predictions.items() if name != CANDIDATE}
            gate = registry.decide(spec, test_y, predictions[CANDIDATE], incumbents, settings.training)
            mlflow.log_metrics(gate.metrics())
        else:
            gate = registry.GateDecision(False, data.reason("test"))
        registry.set_alias(settings, model, version, gate.promoted, gate.decision, gate.tags())
        mlflow.set_tags(gate.tags())
        served = ""
        if not gate.promoted and servables:
            served = registry.serve_best_baseline(settings, spec, servables, baseline_metrics, champion_metrics,
                                                  test, baseline_runs)  # fmt: skip
    return ModelResult(model, run.info.run_id, version, metrics, gate.promoted, gate.decision, baseline_metrics,
                       time.perf_counter() - started, data, gate.checks, served=served)  # fmt: skip


def _record_test_scores(spec: ModelSpec, bundle: ModelBundle, test_x: pd.DataFrame,
                        servables: dict[str, BaselineBundle], predictions: dict[str, np.ndarray],
                        explained: tuple[pd.DataFrame, np.ndarray]) -> None:  # fmt: skip
    """What serving needs to know of the test customers, kept in each servable version's meta: the
    median of each numeric feature (the "typical" customer reasons compare with) and, for a
    probability model, the percentiles of its scores (risk bands by quantile) and the direction
    each feature learned (from `explained`: sampled test rows and their contributions)."""
    medians = test_x.select_dtypes("number").median()
    bundle.meta[FEATURE_MEDIANS] = {name: float(value) for name, value in medians.items() if np.isfinite(value)}
    if spec.output == "probability":
        bundle.meta[SCORE_PERCENTILES] = score_percentiles(predictions[CANDIDATE])
        for name, servable in servables.items():
            servable.meta[SCORE_PERCENTILES] = score_percentiles(predictions[name])
        bundle.meta[FEATURE_DIRECTIONS] = feature_directions(*explained)


def _log_test_scores(spec: ModelSpec, test: pd.DataFrame, predictions: dict[str, np.ndarray], who: str) -> None:
    """On the active run, the test rows with each predictor's score (the model's run: `candidate`,
    each baseline, `champion vN`; a baseline's run: its own) as `test_predictions.parquet`, what a
    data scientist needs for a paired test of their own; and the same predictors on one gains and
    one calibration figure (CLV: predicted vs actual by decile), the run's own predictor in front."""
    actual = spec.labels(test)
    table = pd.DataFrame({"customer_id": test["customer_id"].to_numpy(), "cutoff": test["cutoff"].to_numpy(),
                          "label": actual})  # fmt: skip
    for name, scores in predictions.items():
        table[name.replace(" ", "_")] = scores
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / TEST_PREDICTIONS
        table.to_parquet(path, index=False)
        mlflow.log_artifact(str(path))
    probability = spec.output == "probability"
    gains, calibration = (("cumulative gains", "calibration") if probability
                          else ("cumulative revenue captured", "predicted vs actual by decile"))  # fmt: skip
    _log_and_close({"gains.png": plots.gains_figure(actual, predictions, f"{who}: {gains} (test)"),
                    "calibration.png": plots.calibration_figure(actual, predictions, f"{who}: {calibration} (test)",
                                                                probability=probability)})  # fmt: skip


def _skipped(settings: Settings, spec: ModelSpec, reason: str, data: Sufficiency | None, started: float) -> ModelResult:
    """A run that says why the model was not trained (and, when the frame was built, its counts)."""
    connect(settings)
    use_experiment(settings, spec.name)
    with start_run(f"{spec.name} lightgbm") as run:
        mlflow.set_tags({"model": spec.name, "kind": "lightgbm", "skipped": reason, **(data.tags() if data else {})})
        mlflow.log_params({"label_window_days": spec.label_window(settings), **(data.params() if data else {})})
        served = registry.serve_history_baseline(settings, spec, reason)
    return ModelResult(spec.name, run.info.run_id, "-", {}, False, f"skipped: {reason}",
                       seconds=time.perf_counter() - started, data=data, skipped=True, served=served)  # fmt: skip


def _oracle_metrics(
    settings: Settings,
    spec: ModelSpec,
    frame: ModelFrame,
    metrics: dict[str, float],
    baselines: dict[str, dict[str, float]],
) -> dict[str, float]:
    """On generated sample data, the best achievable score and the share of the gap from the best
    baseline to it that the model closes; the same for the observable oracle, which does not know
    who is still alive (no model can: what separates the two is beyond reach). Real data has no
    truth: then nothing is returned."""
    from custlens.errors import CustlensError
    from training.oracle import gap_closed, load_evidence, load_truth, oracle_predictions, truth_dir_for

    truth_dir = truth_dir_for(settings)
    if truth_dir is None:
        return {}
    try:
        truth = load_truth(truth_dir, settings.lake_dir)
    except CustlensError:
        return {}  # the lake was not ingested from this sample: no truth to compare with
    test = frame.part("test")
    ids, window = test["customer_id"].tolist(), spec.label_window(settings)
    key = spec.primary_metric
    actual = spec.labels(test)
    oracle = spec.test_metrics(actual, oracle_predictions(truth, ids, frame.split.test, spec.name, window))[key]
    evidence = load_evidence(truth_dir, settings.lake_dir)
    observable_predicted = oracle_predictions(truth, ids, frame.split.test, spec.name, window, evidence=evidence)
    observable = spec.test_metrics(actual, observable_predicted)[key]
    best_baseline = max((b[key] for b in baselines.values()), default=float("nan"))
    return {
        f"oracle_{key}": oracle,
        "oracle_best_baseline": best_baseline,
        "oracle_gap_closed": gap_closed(best_baseline, metrics[key], oracle),
        f"oracle_observable_{key}": observable,
        "oracle_observable_gap_closed": gap_closed(best_baseline, metrics[key], observable),
    }


def _run_baselines(
    spec: ModelSpec, frame: ModelFrame, baselines: dict[str, Baseline]
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], dict[str, BaselineBundle], dict[str, str]]:
    """Each baseline as its own (nested) run with its fitted parameters, the same metric keys as the
    model and, of its own scores, the same test predictions and figures; returns each one's
    metrics, its predictions of the test rows, its servable fit and its run id."""
    metrics, predictions, servables, runs = {}, {}, {}, {}
    test = frame.part("test")
    test_y = spec.labels(test)
    for name, baseline in baselines.items():
        with mlflow.start_run(run_name=f"{spec.name} baseline: {name}", nested=True) as run:
            mlflow.set_tags({"model": spec.name, "kind": "baseline", "baseline": name})
            fitted = baseline(frame)
            mlflow.log_params(fitted.params)
            metrics[name] = spec.test_metrics(test_y, fitted.predicted)
            if spec.output == "predicted_value":
                table = range_of(fitted.servable.meta)
                served = table.lookup(fitted.predicted) if table is not None else {}
                if table is not None:
                    mlflow.log_dict(table.to_dict(), RANGE_ARTIFACT)
                metrics[name] |= _range_metrics(spec, test, served)
            mlflow.log_metrics(metrics[name])
            _log_test_scores(spec, test, {name: fitted.predicted}, f"{spec.name} baseline {name}")
            predictions[name] = fitted.predicted
            servables[name] = fitted.servable
            runs[name] = run.info.run_id
    return metrics, predictions, servables, runs


SEGMENTS_SERVICE = "segments_v1"
# Segment names must survive a retrain: two fits with different seeds keep at least this share.
MIN_SEGMENT_STABILITY = 0.9


def train_segments(settings: Settings, console: Console | None = None) -> ModelResult:
    """RFM segments and behavioural clusters on the latest snapshot; promoted when names are stable."""
    from features.asof import resolve_snapshot
    from features.snapshot_reader import snapshot_cutoffs
    from features.store import entity_rows, training_frame
    from training.segments import BehaviouralSegmenter, RfmScorer, stability

    started = time.perf_counter()
    say = console.print if console else (lambda *_: None)
    cutoff, why = resolve_snapshot(settings, None, snapshot_cutoffs(settings))
    say(f"[bold]segments[/]: clustering customers {why}")
    customers = pd.read_parquet(table_path(settings, "customers"), columns=["customer_id"])["customer_id"]
    frame = training_frame(settings, entity_rows(customers.tolist(), [cutoff]), SEGMENTS_SERVICE)
    seed = settings.training.seed
    connect(settings)
    use_experiment(settings, "segments")
    with start_run("segments kmeans") as run:
        mlflow.set_tags({"model": "segments", "kind": "kmeans", "feature_service": SEGMENTS_SERVICE,
                         "snapshot": cutoff.isoformat()})  # fmt: skip
        rfm = RfmScorer.fit(frame)
        behaviour = BehaviouralSegmenter.fit(frame, seed=seed)
        again = BehaviouralSegmenter.fit(frame, seed=seed + 1)
        bundle = SegmentsBundle(rfm, behaviour, SEGMENTS_SERVICE)
        labels = bundle.predict(frame)
        metrics = {f"test_{k}": float(v) for k, v in behaviour.metrics().items()}
        metrics["test_stability_across_seeds"] = stability(labels["behavioural_segment"], again.predict(frame))
        metrics["test_rows"] = float(len(frame))
        mlflow.log_params({"snapshot": cutoff.isoformat(), "seed": seed, "customers": len(frame)})
        mlflow.log_metrics(metrics)
        for column in ("rfm_segment", "behavioural_segment"):
            shares = labels[column].value_counts(normalize=True)
            mlflow.log_metrics({f"share_{column}_{_metric_key(name)}": float(v) for name, v in shares.items()})
        profile = behaviour.profile()
        mlflow.log_table(profile.reset_index(), "segment_profile.json")
        figure = plots.segments_figure(profile, "behavioural segments: size and profile")
        mlflow.log_figure(figure, "segment_profile.png")
        plots.close(figure)
        version = registry.register_segments(bundle, frame[bundle.inputs].head(5).astype("float64"))
        stable = metrics["test_stability_across_seeds"] >= MIN_SEGMENT_STABILITY
        decision = (
            f"promoted: names kept by {metrics['test_stability_across_seeds']:.1%} of customers across seeds"
            if stable
            else f"not promoted: only {metrics['test_stability_across_seeds']:.1%} keep their name across seeds"
        )
        registry.set_alias(settings, "segments", version, stable, decision)
        mlflow.set_tag("promotion", decision)
    return ModelResult("segments", run.info.run_id, version, metrics, stable, decision,  # type: ignore[arg-type]
                       seconds=time.perf_counter() - started)  # fmt: skip


def _metric_key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def train_all(settings: Settings, models: Sequence[str], console: Console | None = None) -> list[ModelResult]:
    """The chosen models in their order, each against the baselines its spec names; the segments
    last. A model the data cannot train is skipped with its reason, and the others still train.
    Runs that a killed process left RUNNING are marked KILLED first."""
    for killed in end_killed_runs(settings):
        if console:
            console.print(killed, highlight=False)
    specs = [SPECS[model] for model in models if model != "segments"]  # type: ignore[index]
    results = [train_model(settings, spec.name, baselines_for(settings, spec), console) for spec in specs]
    if "segments" in models:
        results.append(train_segments(settings, console))
    return results


def render(results: list[ModelResult]) -> Group:
    """The summary of `custlens train`, readable at 80 columns: each model's test metric, best
    baseline and alias; the promotion gate's checks with their intervals; the oracle (sample data
    only); the data per split; and each decision in words."""
    table = Table(title="custlens train", expand=False)
    for column in ("model", "v", "test metric", "baseline", "alias", "s"):
        table.add_column(column, no_wrap=column == "test metric")
    for result in results:
        key, _ = PRIMARY_METRIC[result.model]
        best = max((m[key] for m in result.baselines.values()), default=float("nan"))
        table.add_row(
            result.model,
            result.version,
            f"{key.removeprefix('test_')} {_number(result.metrics.get(key, float('nan')))}",
            _number(best),
            "skipped" if result.skipped else CHAMPION if result.promoted else CHALLENGER,
            f"{result.seconds:.0f}",
        )
    gated = [result for result in results if result.gate]
    oracles = [line for result in results if (line := _oracle_line(result))]
    decisions = [_decision(result) for result in results]
    counted = [result for result in results if result.data is not None]
    return Group(table, *([_gate_table(gated)] if gated else []), *oracles,
                 *([_data_table(counted)] if counted else []), *decisions)  # fmt: skip


def _gate_table(results: list[ModelResult]) -> Table:
    """Under each model, one row per check (marked passed or failed): the primary metric's gain and
    each guard's relative change against each incumbent, CLV's total ratio, with the 95%
    paired-bootstrap interval and what passing takes (on its lower bound; the band on the value)."""
    table = Table(title="promotion gate: 95% paired-bootstrap intervals", expand=False, box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True)  # fmt: skip
    for column in ("check", "vs", "value [95% interval]", "needs"):
        table.add_column(column, no_wrap=True)
    for result in results:
        table.add_row(f"[bold]{result.model} v{result.version}[/]")
        for check in result.gate:
            short = check.name.removesuffix(" error")  # calibration: the column stays narrow
            mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
            table.add_row(f"{mark} {short}", check.against, check.shown(), check.rule.removeprefix("in "))
    return table


def _oracle_line(result: ModelResult) -> str:
    """`churn: oracle auc 0.8512, gap closed 61%; observable oracle 0.8301, closed 74%`, on
    generated sample data (its truth is known); empty otherwise."""
    key, _ = PRIMARY_METRIC[result.model]
    if f"oracle_{key}" not in result.metrics:
        return ""
    metrics = result.metrics
    return (
        f"{result.model}: oracle {key.removeprefix('test_')} {_number(metrics[f'oracle_{key}'])}, "
        f"gap closed {_share(metrics.get('oracle_gap_closed', float('nan')))}; observable oracle "
        f"{_number(metrics.get(f'oracle_observable_{key}', float('nan')))}, "
        f"closed {_share(metrics.get('oracle_observable_gap_closed', float('nan')))}"
    )


def _decision(result: ModelResult) -> str:
    if result.skipped:
        return f"{result.model}: {result.decision}" + (f"\n{result.model}: {result.served}" if result.served else "")
    untuned = result.data is not None and not result.data.enough("validation")
    note = f" ({result.data.reason('validation')}: fixed parameters, uncalibrated)" if result.data and untuned else ""
    served = f"\n{result.model}: {result.served}" if result.served else ""
    return f"{result.model} v{result.version}: {result.decision}{note}{served}"


def _data_table(results: list[ModelResult]) -> Table:
    """Rows, positives and negatives of every split of the models that got as far as their frame."""
    table = Table(title="data per split", expand=False)
    for column in ("model", *SPLITS):
        table.add_column(column)
    for result in results:
        data = result.data
        assert data is not None
        table.add_row(result.model, *(data.describe(split) + ("" if data.enough(split) else " [yellow](too few)[/]")
                                      for split in SPLITS))  # fmt: skip
    return table


def _number(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.4f}"


def _share(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.0%}"
