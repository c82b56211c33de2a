"""Churn is defined only for customers who bought within the activity window before the as-of:
everyone else gets no probability, no band and no reasons, and a machine-readable reason why."""

from __future__ import annotations

import numpy as np

from serving.scorer import INACTIVE_BEYOND_WINDOW, NO_PURCHASE_YET
from tests.unit.test_score_currency import NOW, features, scorer


def test_never_buyers_and_long_inactive_customers_get_no_churn_but_a_reason() -> None:
    # given a recent buyer, a never-buyer and one whose last order is 400 days before the as-of
    rows = features([True, True, True])
    rows["days_since_last_order"] = np.array([12.0, np.nan, 400.0])
    # when scored (activity window 365 days)
    scored = scorer("VND").score(rows, NOW)
    # then only the recent buyer has a churn probability and band
    assert scored["churn_probability"].tolist()[0] == 0.5 and np.isnan(scored["churn_probability"].tolist()[1:]).all()
    assert scored["churn_risk"].tolist() == ["medium", None, None]
    assert scored["churn_not_scored_reason"].tolist() == [None, NO_PURCHASE_YET, INACTIVE_BEYOND_WINDOW]
    # the other outputs are defined for everyone
    assert scored["repurchase_probability"].notna().all() and scored["predicted_clv"].notna().all()


def test_the_activity_window_is_the_one_the_churn_model_was_trained_with() -> None:
    rows = features([True])
    rows["days_since_last_order"] = np.array([400.0])
    served = scorer("VND")
    assert served.churn is not None
    served.churn.meta = {"activity_window_days": 730}
    assert served.score(rows, NOW)["churn_not_scored_reason"].tolist() == [None]
