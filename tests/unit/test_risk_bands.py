"""Churn risk bands by rank (quantiles of the served churn model's test scores) or by fixed
probability, the same online and in batch."""

from __future__ import annotations

import numpy as np

from custlens.settings import ServingSettings
from tests.unit.test_score_currency import NOW, features, scorer
from training.packaging import SCORE_PERCENTILES, score_percentiles


def _banded(meta: dict[str, object], serving: ServingSettings | None = None, probability: float = 0.5) -> object:
    served = scorer("VND")
    assert served.churn is not None
    served.churn.meta = meta
    if serving is not None:
        served.serving = serving
    rows = features([True])
    rows["days_since_last_order"] = np.array([10.0])
    fixed = served.churn.scores  # one stand-in serves every model: only its probability changes
    served.churn.scores = lambda x: {**fixed(x), "probability": np.full(len(x), probability)}  # type: ignore[method-assign]
    return served.score(rows, NOW)["churn_risk"].iloc[0], served.risk_thresholds


def test_quantile_bands_cut_the_test_scores_at_the_configured_quantiles() -> None:
    # given a churn version whose test customers scored evenly from 0 to 1
    meta = {SCORE_PERCENTILES: score_percentiles(np.linspace(0.0, 1.0, 10_001))}
    # then with the default quantiles 0.5 / 0.8, 0.5 is medium and 0.79 still medium, 0.8 high, 0.49 low
    for probability, band in ((0.49, "low"), (0.5, "medium"), (0.79, "medium"), (0.8, "high")):
        assert _banded(meta, probability=probability)[0] == band
    thresholds = _banded(meta)[1]
    assert (thresholds["medium"], thresholds["high"]) == (0.5, 0.8)
    assert "quantiles 0.5 and 0.8" in thresholds["basis"]


def test_quantile_bands_follow_the_scores_not_fixed_probabilities() -> None:
    # given a churn population where most are likely to churn (as on CDNOW): scores 0.6..0.95
    meta = {SCORE_PERCENTILES: score_percentiles(np.linspace(0.6, 0.95, 1_001))}
    # then 0.7 is low (the fixed 0.6 threshold would call it high): the riskiest fifth start at 0.88
    band, thresholds = _banded(meta, probability=0.7)
    assert band == "low" and thresholds["high"] == round(0.6 + 0.8 * 0.35, 6)


def test_fixed_probability_bands_when_configured_or_when_the_version_records_no_scores() -> None:
    meta = {SCORE_PERCENTILES: score_percentiles(np.linspace(0.6, 0.95, 1_001))}
    band, thresholds = _banded(meta, ServingSettings(churn_risk_bands="probability"), probability=0.7)
    assert band == "high" and thresholds["basis"] == "probability"
    band, thresholds = _banded({}, probability=0.7)  # an older version: no test scores kept
    assert band == "high" and thresholds["basis"].startswith("probability (the served churn version records no")
