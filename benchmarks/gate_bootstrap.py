"""The promotion gate's bootstrap on 20,000 test customers and 1,000 resamples, against the naive path.

Measured, in one run, on generated test rows (not customers: a world of two traits where the
candidate knows both and each incumbent less, one of them with tied scores):
- ours: `training.registry.decide` for churn (two baselines and a champion: 4 predictors x AUC,
  log loss, calibration error) and CLV (a baseline and a champion: 3 x normalized Gini, MAE,
  total ratio), every predictor and metric on one draw of the counts (`training.bootstrap`);
- the naive path (benchmarks/gate_bootstrap_naive.py): the same (predictor, metric) draws, each
  bootstrapped on its own with the multinomial counts drawn again, as the gate first did.
Each is the median of --runs runs. The intervals of the primary check are printed side by side:
the two paths draw different resamples of the same distribution, so they agree within Monte Carlo
error, not to the digit.

    .venv/bin/python benchmarks/gate_bootstrap.py
    .venv/bin/python benchmarks/gate_bootstrap.py --customers 5000 --resamples 200 --runs 1
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from gate_bootstrap_naive import gate_draws  # beside this script, on the path of a script run
from scipy.special import expit

from custlens.settings import load_settings
from training import bootstrap
from training.registry import GUARDS, TOTAL_RATIO, decide
from training.specs import SPECS


def churn_rows(customers: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    first, second = rng.normal(size=customers), rng.normal(size=customers)
    truth = expit(-0.2 + first + 0.8 * second)
    churned = (rng.random(customers) < truth).astype(float)
    return churned, {
        "": truth,
        "logistic_rfm": expit(-0.2 + first),
        "bgnbd": np.round(expit(-0.1 + 0.9 * first), 2),  # tied scores, as a model of few inputs gives
        "champion v1": expit(-0.2 + first + 0.4 * second),
    }


def clv_rows(customers: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    spend = rng.gamma(2.0, 50.0, customers)
    value = np.where(rng.random(customers) < 0.4, spend, 0.0)
    return value, {
        "": 0.4 * spend * rng.lognormal(0.0, 0.3, customers),
        "bgnbd_gamma_gamma": 0.4 * spend * rng.lognormal(0.0, 0.8, customers),
        "champion v1": 0.4 * spend * rng.lognormal(0.0, 0.5, customers),
    }


def median_seconds(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    training = load_settings().training.model_copy(update={"bootstrap_resamples": args.resamples})
    rng = np.random.default_rng(7)
    print(f"{args.customers:,} test customers, {args.resamples:,} resamples, median of {args.runs} runs; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    for model, (actual, predictions) in {"churn": churn_rows(args.customers, rng),
                                         "clv": clv_rows(args.customers, rng)}.items():  # fmt: skip
        spec = SPECS[model]
        primary = "test_auc" if spec.output == "probability" else "test_normalized_gini"
        metrics = [primary, *GUARDS[spec.output]] + ([TOTAL_RATIO] if spec.output == "predicted_value" else [])
        candidate, incumbents = predictions[""], {k: v for k, v in predictions.items() if k}
        gate = decide(spec, actual, candidate, incumbents, training)
        naive = gate_draws(metrics, actual, predictions, args.resamples, training.seed)
        ours = functools.partial(decide, spec, actual, candidate, incumbents, training)
        ours_seconds = median_seconds(ours, args.runs)
        naive_seconds = median_seconds(
            functools.partial(gate_draws, metrics, actual, predictions, args.resamples, training.seed), args.runs
        )
        print(f"\n{model}: {len(incumbents)} incumbents x {len(metrics)} metrics")
        print(f"  ours  (training.registry.decide, whole gate): {ours_seconds:6.2f} s")
        print(f"  naive (the gate's draws alone, one per predictor and metric): {naive_seconds:6.2f} s "
              f"({naive_seconds / ours_seconds:.1f}x)")  # fmt: skip
        for check in (c for c in gate.checks if c.kind == "primary"):
            low, high = bootstrap.interval(naive[""][primary] - naive[check.against][primary])
            print(f"  {check.name} vs {check.against}: ours [{check.low:+.4f}, {check.high:+.4f}], "
                  f"naive [{low:+.4f}, {high:+.4f}]")  # fmt: skip


if __name__ == "__main__":
    main()
