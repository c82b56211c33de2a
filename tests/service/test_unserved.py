"""Scoring is never blocked because one model has no version to serve: its outputs are NULL, the
others are scored as usual, and the batch summary and every service answer say which and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from custlens.settings import Settings
from features.snapshot_reader import load_packed_snapshot
from serving.runtime import Asked, Runtime, score
from tests.support.sinks import score_into_parquet
from tests.support.trained import scoring_copy, trained_project
from training.tracking import connect, registered_name


@pytest.fixture(scope="module")
def without_churn(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    """The shared project over a tracking copy whose churn model has no @champion."""
    settings = scoring_copy(trained_project(tmp_path_factory, worker_id), tmp_path_factory.mktemp("unserved"))
    connect(settings).delete_registered_model_alias(registered_name("churn"), "champion")
    return settings


def test_the_batch_scores_every_other_model_and_says_which_is_missing(without_churn: Settings, tmp_path: Path) -> None:
    report, scores = score_into_parquet(without_churn, tmp_path)
    assert report.versions["churn"] is None and report.versions["repurchase"] is not None
    assert "no custlens-churn@champion version" in report.unserved["churn"]
    assert scores["churn_probability"].isna().all() and scores["churn_risk"].isna().all()
    assert scores["churn_model_version"].isna().all()
    assert scores["repurchase_probability"].notna().all() and scores["predicted_clv"].notna().all()
    assert scores["rfm_segment"].notna().all()


def test_the_service_answers_with_null_churn_and_says_why(without_churn: Settings) -> None:
    runtime = Runtime(without_churn)
    loaded = runtime.load()
    ids = load_packed_snapshot(without_churn).customer_ids[:5]
    answer = score(loaded, [Asked(customer_id, None, None) for customer_id in ids], reasons=True)
    assert answer["model_versions"]["churn"] is None and set(answer["unserved"]) == {"churn"}
    for result in answer["results"]:
        assert result["churn_probability"] is None and result["churn_risk"] is None
        assert result["churn_reasons"] == []
        assert result["repurchase_probability"] is not None and result["predicted_clv"] is not None
    assert runtime.metadata()["unserved"] == answer["unserved"]
