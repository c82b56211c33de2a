"""Optuna tuning of a LightGBM model on the validation window: TPE, seeded, poor trials pruned
while they train, budgets in trials and seconds from the config. Each trial can be recorded
as a nested MLflow run by the caller's `on_trial`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd

Objective = Literal["binary", "tweedie", "regression", "gamma"]

# Rounds are chosen by early stopping on the validation window, up to this many.
MAX_ROUNDS = 600
EARLY_STOPPING_ROUNDS = 30
# A trial reports its validation loss every this many rounds; the median pruner stops poor ones.
REPORT_EVERY = 10


@dataclass(frozen=True)
class TuningResult:
    params: dict[str, Any]  # LightGBM parameters of the best trial, num_boost_round included
    best_value: float  # its validation loss (lower is better)
    trials: int
    pruned: int


def base_params(objective: Objective, seed: int, threads: int = 1) -> dict[str, Any]:
    return {
        "objective": objective,
        "metric": validation_metric(objective),
        "seed": seed,
        "num_threads": threads,
        "verbosity": -1,
        # the same trees for the same seed and data, at a small cost in speed
        "deterministic": True,
        "force_row_wise": True,
    }


# A model whose validation window is too small to tune on (training.sufficiency) is fitted with
# these, for a fixed number of rounds: moderate trees, slow learning, nothing chosen by the noise
# of a few validation rows.
UNTUNED = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20, "lambda_l2": 1.0, "num_boost_round": 200}


def untuned_params(
    objective: Objective, seed: int, threads: int = 1, fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {**base_params(objective, seed, threads), **UNTUNED, **(fixed or {})}


def _suggest(trial: optuna.Trial, objective: Objective) -> dict[str, Any]:
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 300, log=True),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
        "bagging_freq": 1,
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }
    if objective == "tweedie":
        params["tweedie_variance_power"] = trial.suggest_float("tweedie_variance_power", 1.1, 1.9)
    return params


def validation_metric(objective: Objective) -> str:
    """The validation loss LightGBM reports and tuning minimizes for `objective`."""
    # gamma: the negative log-likelihood of a Gamma with log link (the two-part CLV's value given a purchase)
    return {"binary": "binary_logloss", "tweedie": "tweedie", "regression": "l2", "gamma": "gamma"}[objective]


Data = tuple[pd.DataFrame, np.ndarray]


def datasets(
    train: Data, valid: Data | None, init_scores: tuple[np.ndarray, np.ndarray | None] | None = None
) -> tuple[lgb.Dataset, lgb.Dataset | None]:
    """Binned once and reused by every trial: binning is most of a small fit's cost. No validation
    set (None) when the validation window is too small to stop on. `init_scores` (train, validation)
    are raw scores the trees start from, as when they learn a correction on top of another model."""
    # feature_pre_filter off: trials change min_data_in_leaf, which pre-filtering would freeze
    binning = {"verbosity": -1, "feature_pre_filter": False}
    train_init, valid_init = init_scores if init_scores is not None else (None, None)
    train_set = lgb.Dataset(train[0], train[1], init_score=train_init, free_raw_data=False, params=binning)
    if valid is None:
        return train_set, None
    valid_set = lgb.Dataset(valid[0], valid[1], reference=train_set, init_score=valid_init, free_raw_data=False,
                            params=binning)  # fmt: skip
    return train_set, valid_set


def fit_lightgbm(
    params: dict[str, Any],
    train_set: lgb.Dataset,
    valid_set: lgb.Dataset | None,
    callbacks: list[Callable[..., None]] | None = None,
) -> lgb.Booster:
    """Fit with early stopping on the validation set (the booster keeps its best iteration), or,
    without one, for the `num_boost_round` of `params`."""
    rounds = int(params.get("num_boost_round", MAX_ROUNDS))
    fit_params = {k: v for k, v in params.items() if k != "num_boost_round"}
    if valid_set is None:
        return lgb.train(fit_params, train_set, num_boost_round=rounds, callbacks=callbacks)
    return lgb.train(
        fit_params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), *(callbacks or [])],
    )


class _PruneWhilePoor:
    """Reports the validation loss to Optuna as the trees grow and stops a trial the pruner rejects."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if env.iteration % REPORT_EVERY:
            return
        for result in env.evaluation_result_list or []:
            name, value = result[1], result[2]
            if name == self.metric:
                self.trial.report(value, step=env.iteration)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at round {env.iteration}")


def tune(
    objective: Objective,
    train: Data,
    valid: Data,
    trials: int,
    timeout_seconds: float,
    seed: int,
    threads: int = 1,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    init_scores: tuple[np.ndarray, np.ndarray] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> TuningResult:
    """Search LightGBM parameters minimizing the validation loss; the test window is never seen.
    `init_scores`: raw scores the trees start from (see `datasets`); `fixed`: parameters every trial
    and the result keep (the spec's monotone constraints)."""
    metric = validation_metric(objective)
    train_set, valid_set = datasets(train, valid, init_scores)
    assert valid_set is not None

    def run(trial: optuna.Trial) -> float:
        params = {**base_params(objective, seed, threads), **(fixed or {}), **_suggest(trial, objective)}
        booster = fit_lightgbm(params, train_set, valid_set, callbacks=[_PruneWhilePoor(trial, metric)])
        trial.set_user_attr("num_boost_round", int(booster.best_iteration or MAX_ROUNDS))
        return float(booster.best_score["validation"][metric])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=30),
    )
    callbacks = [lambda _study, frozen: on_trial(frozen)] if on_trial else None
    study.optimize(run, n_trials=trials, timeout=timeout_seconds, callbacks=callbacks, gc_after_trial=False)
    best = study.best_trial
    params = {**base_params(objective, seed, threads), **(fixed or {}), **best.params, "bagging_freq": 1}
    params["num_boost_round"] = best.user_attrs["num_boost_round"]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return TuningResult(params, float(best.value or "nan"), len(study.trials), pruned)
