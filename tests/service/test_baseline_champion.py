"""A baseline can be the champion: registered as a version of the same model, served by the batch
job and the service with the same outputs, computed from the feature store exactly as training's
BTYD baselines compute them from the orders."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from custlens.settings import Settings
from features.lake.tables import cutoff_instant, table_path
from serving.runtime import Asked, Runtime, score
from tests.support.sinks import score_into_parquet
from tests.support.trained import scoring_copy, trained_project
from training.baselines import fit_on_history
from training.baselines.btyd import BetaGeo, GammaGamma, expected_revenue, rfm_summary
from training.registry import CHAMPION, register_baseline
from training.specs import SPECS
from training.tracking import connect, registered_name, use_experiment
from training.value_range import P90, range_of

MODELS = ("churn", "repurchase", "clv")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    """The shared project over a tracking copy whose churn, repurchase and CLV champions are the
    BTYD baselines fitted on its whole history."""
    settings = scoring_copy(trained_project(tmp_path_factory, worker_id), tmp_path_factory.mktemp("baselines"))
    client = connect(settings)
    for model in MODELS:
        bundle = fit_on_history(settings, SPECS[model])
        assert bundle is not None
        use_experiment(settings, model)
        with mlflow.start_run(run_name=f"{model} baseline: {bundle.flavour} (served)"):
            version = register_baseline(bundle, pd.DataFrame(index=range(3)))
        client.set_registered_model_alias(registered_name(model), CHAMPION, version)
    return settings


def test_the_batch_job_serves_the_baselines_as_training_computes_them(served: Settings, tmp_path: Path) -> None:
    report, written = score_into_parquet(served, tmp_path)
    scores = written.set_index("customer_id")
    client = connect(served)
    kinds = {m: client.get_model_version_by_alias(registered_name(m), CHAMPION).tags.get("kind") for m in MODELS}
    assert kinds == dict.fromkeys(MODELS, "baseline") and not report.unserved
    # the same numbers as BG/NBD and Gamma-Gamma on the orders before the as-of
    orders = pd.read_parquet(table_path(served, "orders"))
    summary = rfm_summary(orders, pd.Timestamp(cutoff_instant(report.as_of)), population=scores.index)
    bundle = fit_on_history(served, SPECS["clv"])
    assert bundle is not None
    bg = BetaGeo(**{k: bundle.params[k] for k in ("r", "alpha", "a", "b")})
    gg = GammaGamma(**{k: bundle.params[k] for k in ("p", "q", "v")})
    np.testing.assert_allclose(
        scores["repurchase_probability"].to_numpy(), 1 - bg.prob_no_purchase(summary, 30), rtol=1e-9, atol=1e-12
    )
    # churn only for the churn population (a purchase in the 365 days before the as-of), the rest say why
    active = (summary["T"] - summary["recency"] <= 365).to_numpy() & (summary["T"] > 0).to_numpy()
    np.testing.assert_allclose(scores["churn_probability"].to_numpy()[active],
                               bg.prob_no_purchase(summary, 90)[active], rtol=1e-9)  # fmt: skip
    assert scores["churn_probability"].isna().to_numpy()[~active].all()
    assert scores["churn_not_scored_reason"].notna().to_numpy()[~active].all()
    expected_clv = np.round(np.maximum(expected_revenue(bg, gg, summary, 365), 0.0))  # VND: whole
    np.testing.assert_allclose(scores["predicted_clv"].to_numpy(), expected_clv, atol=1.0)
    # the next order dated where one is as likely as not, by BG/NBD's own distribution
    median = bg.median_days_to_next_purchase(summary, longest=3650)
    median[median > served.serving.next_order_horizon_days] = np.nan
    dated = [None if np.isnan(d) else report.as_of + timedelta(days=math.floor(d)) for d in median]
    assert scores["expected_next_order_date"].tolist() == dated
    assert 0 < np.isnan(median).sum() < len(median)  # the unlikely buyers have none
    # its P10-P90 range, fitted on no held-out window, is the model's own posterior predictive
    table = range_of(bundle.meta)
    assert table is not None and "posterior" in table.source
    ranged = table.lookup(np.maximum(expected_revenue(bg, gg, summary, 365), 0.0))
    np.testing.assert_allclose(scores["predicted_clv_p90"].to_numpy(), np.round(ranged[P90]), atol=1.0)
    assert (scores["predicted_clv_p10"] <= scores["predicted_clv_p90"]).all()


def test_the_service_serves_the_baselines_with_the_batch_numbers(served: Settings, tmp_path: Path) -> None:
    batch = score_into_parquet(served, tmp_path)[1].set_index("customer_id")
    loaded = Runtime(served).load()
    ids = batch.index[:200].tolist()
    answer = score(loaded, [Asked(customer_id, None, None) for customer_id in ids], reasons=True)
    assert not answer["unserved"]
    for result in answer["results"]:
        row = batch.loc[result["customer_id"]]
        churn = row["churn_probability"]
        assert result["churn_probability"] == (None if np.isnan(churn) else churn)
        assert result["churn_not_scored_reason"] == row["churn_not_scored_reason"]
        assert result["repurchase_probability"] == row["repurchase_probability"]
        assert result["predicted_clv"] == row["predicted_clv"]
        assert result["churn_reasons"] == []  # a baseline has no per-feature contributions
