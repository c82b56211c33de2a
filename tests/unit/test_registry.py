"""The promotion gate on hand-made test rows: a candidate is promoted only when the lower bound of
the 95% paired-bootstrap interval of its gain over every incumbent exceeds the margin, no guard
is materially worse, and a CLV total is within its band; the decision names the interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from custlens.settings import TrainingSettings, load_settings
from training.registry import decide
from training.specs import SPECS

ROWS = 3000
CHURN, CLV = SPECS["churn"], SPECS["clv"]


def world(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two customer traits, each customer's true churn probability and whether they churned."""
    rng = np.random.default_rng(seed)
    first, second = rng.normal(size=rows), rng.normal(size=rows)
    probability = expit(-0.2 + 1.0 * first + 0.8 * second)
    return first, second, probability, (rng.random(rows) < probability).astype(float)


FIRST, SECOND, TRUTH, CHURNED = world(ROWS, seed=0)
# The incumbent knows only the first trait, calibrated on a large sample of the same world.
_first, _, _, _churned = world(50_000, seed=1)
INCUMBENT = LogisticRegression().fit(_first.reshape(-1, 1), _churned).predict_proba(FIRST.reshape(-1, 1))[:, 1]


@pytest.fixture(scope="module")
def training() -> TrainingSettings:
    return load_settings().training.model_copy(update={"bootstrap_resamples": 200})


def test_a_clear_win_is_promoted_and_the_decision_names_the_interval(training: TrainingSettings) -> None:
    gate = decide(CHURN, CHURNED, TRUTH, {"bgnbd": INCUMBENT, "champion v3": INCUMBENT}, training)

    assert gate.promoted
    assert gate.decision.startswith("promoted: auc beats every incumbent by more than 0.002 with 95% confidence")
    gain = gate.checks[0]
    assert (gain.kind, gain.against) == ("primary", "bgnbd") and gain.low > 0.05
    assert f"(closest: bgnbd {gain.shown()})" in gate.decision or "(closest: champion v3" in gate.decision


def test_a_noisy_win_smaller_than_its_interval_is_not_promoted(training: TrainingSettings) -> None:
    noise = np.random.default_rng(11).normal(size=ROWS)
    slightly_better = expit(logit(INCUMBENT) + 0.09 * SECOND + 0.3 * noise)

    gate = decide(CHURN, CHURNED, slightly_better, {"bgnbd": INCUMBENT}, training)

    gain = gate.checks[0]
    assert gain.value > training.promotion_margin  # the point estimate alone would have promoted it
    assert gain.low <= training.promotion_margin
    assert not gate.promoted
    assert gate.decision == (
        f"not promoted: auc {gain.shown()} vs baseline bgnbd: the 95% interval's lower bound is not above "
        "the margin 0.002"
    )


def test_better_auc_with_much_worse_calibration_is_not_promoted(training: TrainingSettings) -> None:
    overconfident = expit(logit(TRUTH) + 1.5)  # the truth's ranking, every probability pushed up

    gate = decide(CHURN, CHURNED, overconfident, {"bgnbd": INCUMBENT}, training)

    checks = {check.metric: check for check in gate.checks}
    assert checks["test_auc"].passed
    assert not checks["test_log_loss"].passed and not checks["test_calibration_error"].passed
    assert not gate.promoted
    assert gate.decision.startswith("not promoted: log loss +")
    assert "materially worse" in gate.decision and "also failed: calibration error vs bgnbd" in gate.decision


def test_a_clv_total_outside_the_band_is_not_promoted_though_it_ranks_better(training: TrainingSettings) -> None:
    rng = np.random.default_rng(5)
    value = rng.gamma(2.0, 50.0, ROWS)
    revenue = np.where(rng.random(ROWS) < 0.4, value, 0.0)
    incumbent = 0.4 * value * np.exp(0.8 * rng.normal(size=ROWS))  # right total on average, noisier ranking
    incumbent *= revenue.sum() / incumbent.sum()
    inflated = 1.4 * 0.4 * value * revenue.sum() / (0.4 * value).sum()

    gate = decide(CLV, revenue, inflated, {"bgnbd_gamma_gamma": incumbent}, training)

    checks = {check.metric: check for check in gate.checks}
    assert checks["test_normalized_gini"].passed
    band = checks["test_total_ratio"]
    assert band.value == pytest.approx(1.4) and not band.passed
    assert not gate.promoted
    assert gate.decision == (
        f"not promoted: total predicted / actual revenue {band.shown()}: outside training.clv_total_band [0.80, 1.25]"
    )


def test_a_clv_total_inside_the_band_passes_the_band(training: TrainingSettings) -> None:
    revenue = np.random.default_rng(6).gamma(2.0, 50.0, ROWS)

    gate = decide(CLV, revenue, 1.1 * revenue, {}, training)

    assert gate.promoted and [check.kind for check in gate.checks] == ["band"]


def test_the_gate_is_logged_by_incumbent_and_the_same_seed_gives_the_same_intervals(
    training: TrainingSettings,
) -> None:
    gate = decide(CHURN, CHURNED, TRUTH, {"bgnbd": INCUMBENT, "champion v3": INCUMBENT}, training)
    again = decide(CHURN, CHURNED, TRUTH, {"bgnbd": INCUMBENT, "champion v3": INCUMBENT}, training)

    assert gate.metrics() == again.metrics()
    assert {"gate_diff_vs_bgnbd_ci_low", "gate_diff_vs_champion_ci_low", "gate_log_loss_diff_vs_bgnbd_ci_high",
            "gate_calibration_error_diff_vs_champion"} <= set(gate.metrics())  # fmt: skip
    tags = gate.tags()
    assert tags["promotion"] == gate.decision
    assert tags["gate_diff_vs_bgnbd"].startswith("pass: +0.") and tags["gate_diff_vs_bgnbd"].endswith("> 0.002")


def test_a_candidate_identical_to_the_champion_gains_nothing_and_stays_challenger(training: TrainingSettings) -> None:
    gate = decide(CHURN, CHURNED, TRUTH, {"champion v1": TRUTH}, training)

    assert not gate.promoted
    assert gate.checks[0].shown() == "+0.0000 [+0.0000, +0.0000]"
    assert "vs champion v1" in gate.decision and "baseline" not in gate.decision
