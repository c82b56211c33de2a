"""CLV's P10-P90 range on the generated test window of the shared trained project: the range
made on held-out rows before the test cutoff holds on the test customers' actual 12-month values,
for the learned model and for the baseline, and the training runs say how well.

Tolerance. The done-when asks for coverage of about 80%. On net revenue in a window, many
customers buy nothing: a bin's P10 is then exactly 0, and the closed interval [P10, P90] holds
every such customer, so its coverage is 1 - (share below P10) - (share above P90), above 80% by
the ties at 0 (measured on this project: 0.905 learned, 0.861 baseline; below P10 2.5% and 1.5%,
above P90 7.0% and 12.3%). What calibrated quantiles promise is each tail at about 10% or less:
so coverage within 0.75-0.95, below P10 at most 0.15 and above P90 within 0.04-0.16."""

from __future__ import annotations

import mlflow
import pytest

from custlens.settings import Settings
from serving.scorer import Scorer
from tests.support.trained import trained_project
from training.frames import build_model_frame
from training.specs import SPECS
from training.tracking import connect, registered_name
from training.train import RANGE_ARTIFACT
from training.value_range import P10, P90, coverage_metrics, range_of

COVERAGE = (0.75, 0.95)
BELOW_P10_AT_MOST = 0.15
ABOVE_P90 = (0.04, 0.16)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    return trained_project(tmp_path_factory, worker_id)


def within(metrics: dict[str, float]) -> None:
    assert COVERAGE[0] <= metrics["test_interval_coverage"] <= COVERAGE[1], metrics
    assert metrics["test_interval_below_p10"] <= BELOW_P10_AT_MOST, metrics
    assert ABOVE_P90[0] <= metrics["test_interval_above_p90"] <= ABOVE_P90[1], metrics


def test_the_served_range_covers_the_test_customers_actual_value(project: Settings) -> None:
    # given the served CLV version and the test window's customers with their actual 12-month value
    clv = Scorer.from_registry(project).clv
    assert clv is not None and range_of(clv.meta) is not None
    test = build_model_frame(project, "clv").part("test")
    actual = SPECS["clv"].labels(test)
    # when each is scored
    scores = clv.predict(test)
    # then P10 <= P90 always (not P10 <= mean <= P90: a mean can lie above a zero-heavy P90), and
    # the range holds the actual values as calibrated quantiles do
    assert (scores[P10] <= scores[P90]).all()
    within(coverage_metrics(actual, scores[P10].to_numpy(), scores[P90].to_numpy(), actual > 0))


def test_the_training_runs_log_the_coverage_of_the_model_and_of_the_baseline(project: Settings) -> None:
    # the learned version's run, and the baseline's nested run (whether or not it serves)
    client = connect(project)
    learned = [v for v in client.search_model_versions(f"name = '{registered_name('clv')}'") if "kind" not in v.tags]
    runs = [client.get_run(learned[0].run_id).data.metrics]
    table = mlflow.artifacts.load_dict(f"runs:/{learned[0].run_id}/{RANGE_ARTIFACT}")  # the table, for a reviewer
    assert len(table["p10"]) == len(table["p90"]) == len(table["predicted"]) > 1
    experiment = client.get_run(learned[0].run_id).info.experiment_id
    baseline = client.search_runs([experiment], "tags.baseline = 'bgnbd_gamma_gamma'")
    runs.append(baseline[0].data.metrics)
    for metrics in runs:
        within(metrics)
        assert 0 <= metrics["test_interval_coverage_non_buyers"] <= 1
        assert 0 <= metrics["test_interval_coverage_buyers"] <= 1
        assert metrics["test_interval_mean_width"] > 0
