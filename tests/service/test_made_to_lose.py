"""When the learned model is made to lose (its features withheld), training crowns the best
baseline and scoring serves it: the batch job and /score give the baseline's numbers, with the same
outputs as a learned model would (probabilities, bands, dates; no reasons: a baseline has none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from custlens.settings import Settings
from serving.runtime import Asked, Runtime, score
from tests.support.sinks import score_into_parquet
from tests.support.trained import trained_project
from training import train as training
from training.registry import CHAMPION
from training.tracking import connect, registered_name


def _withheld(rows: pd.DataFrame, categories: dict[str, list[str]] | None = None, inputs: Any = None) -> pd.DataFrame:
    """The model's feature matrix with every value withheld: the trees can learn nothing."""
    matrix = _feature_matrix(rows, categories, inputs) if inputs is not None else _feature_matrix(rows, categories)
    for name in matrix.columns:
        matrix[name] = np.nan if matrix[name].dtype.kind in "fiub" else matrix[name].cat.set_categories([])
    return matrix


_feature_matrix = training.feature_matrix


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Settings, training.ModelResult]:
    """The shared project's data on an empty registry, its churn model trained without features."""
    shared = trained_project(tmp_path_factory, worker_id)
    folder = tmp_path_factory.mktemp("made-to-lose")
    settings = shared.model_copy(update={
        "training": shared.training.model_copy(update={"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}),
        "batch": shared.batch.model_copy(update={"kpi_segments": False}),  # the shared data folder stays as it is
    })  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "feature_matrix", _withheld)
        (result,) = training.train_all(settings, ["churn"])  # with its baselines, as `custlens train churn`
    return settings, result


def test_the_losing_model_is_not_promoted_and_the_best_baseline_becomes_champion(
    lost: tuple[Settings, training.ModelResult],
) -> None:
    settings, result = lost
    assert not result.promoted
    assert result.metrics["test_auc"] == pytest.approx(0.5, abs=0.02)  # no features, no ranking
    best = max(result.baselines, key=lambda name: result.baselines[name]["test_auc"])
    assert result.baselines[best]["test_auc"] > 0.65
    champion = connect(settings).get_model_version_by_alias(registered_name("churn"), CHAMPION)
    assert champion.tags["kind"] == "baseline" and champion.tags["flavour"] == best
    assert champion.version != result.version and best in result.served


def test_score_and_the_service_serve_the_baseline(lost: tuple[Settings, training.ModelResult], tmp_path: Path) -> None:
    settings, _ = lost
    champion = connect(settings).get_model_version_by_alias(registered_name("churn"), CHAMPION).version
    report, written = score_into_parquet(settings, tmp_path)
    assert report.versions["churn"] == str(champion)
    assert set(written["churn_model_version"].dropna()) == {str(champion)}
    # the other models have no version here: their outputs are NULL, and scoring went on
    assert {"repurchase", "clv", "segments"} <= set(report.unserved)
    scored = written.dropna(subset=["churn_probability"]).set_index("customer_id")
    assert len(scored) > 100 and scored["churn_probability"].nunique() > 50  # a baseline that ranks
    assert scored["churn_risk"].isin(["low", "medium", "high"]).all()

    loaded = Runtime(settings).load()
    ids = scored.index[:100].tolist()
    answer = score(loaded, [Asked(customer_id, None, None) for customer_id in ids], reasons=True)
    assert answer["unserved"].keys() >= {"repurchase", "clv", "segments"}
    assert answer["model_versions"]["churn"] == str(champion)
    for result in answer["results"]:
        batch = scored.loc[result["customer_id"]]
        assert result["churn_probability"] == pytest.approx(batch["churn_probability"], rel=1e-9)
        assert result["churn_risk"] == batch["churn_risk"] and result["churn_reasons"] == []
