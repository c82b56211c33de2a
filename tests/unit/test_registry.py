"""The promotion gate on tiny metric dicts: a candidate is promoted only when it beats every
baseline and the champion (by the margin) on its model's primary metric, and the reason says why."""

from __future__ import annotations

from training.registry import decide

MARGIN = 0.002
BASELINES = {"logistic_rfm": {"test_auc": 0.70}, "bgnbd": {"test_auc": 0.72}}


def test_a_model_that_beats_its_baselines_and_the_champion_by_the_margin_is_promoted() -> None:
    promoted, why = decide("churn", {"test_auc": 0.80}, "3", {"test_auc": 0.79}, BASELINES, MARGIN)

    assert promoted
    assert why.startswith("promoted:") and "test_auc 0.8000" in why and "champion v3 (0.7900)" in why


def test_the_first_model_is_promoted_when_it_beats_every_baseline() -> None:
    promoted, why = decide("churn", {"test_auc": 0.80}, None, {}, BASELINES, MARGIN)

    assert promoted
    assert why == "promoted: first model, test_auc 0.8000, beats every baseline"


def test_a_model_that_loses_to_a_baseline_is_refused_even_without_a_champion() -> None:
    promoted, why = decide("churn", {"test_auc": 0.71}, None, {}, BASELINES, MARGIN)

    assert not promoted
    assert why == "not promoted: test_auc 0.7100 does not beat baseline bgnbd (0.7200)"


def test_a_model_that_loses_to_a_baseline_is_refused_though_it_beats_the_champion() -> None:
    promoted, why = decide("churn", {"test_auc": 0.69}, "2", {"test_auc": 0.60}, BASELINES, MARGIN)

    assert not promoted and "baseline logistic_rfm" in why  # the first baseline in the spec's order


def test_a_gain_on_the_champion_smaller_than_the_margin_is_refused() -> None:
    promoted, why = decide("churn", {"test_auc": 0.801}, "3", {"test_auc": 0.800}, BASELINES, MARGIN)

    assert not promoted
    assert why == "not promoted: test_auc 0.8010 vs champion v3 0.8000 on the same test rows (margin 0.002)"


def test_a_gain_of_exactly_the_margin_is_promoted() -> None:
    promoted, _ = decide("churn", {"test_auc": 0.75}, "1", {"test_auc": 0.5}, {}, 0.25)

    assert promoted


def test_a_worse_model_than_the_champion_is_refused() -> None:
    promoted, why = decide("churn", {"test_auc": 0.78}, "3", {"test_auc": 0.80}, BASELINES, MARGIN)

    assert not promoted and "champion v3" in why


def test_clv_is_gated_on_the_normalized_gini_not_on_other_metrics() -> None:
    better_mae_worse_gini = {"test_normalized_gini": 0.69, "test_mae": 1.0}
    champion = {"test_normalized_gini": 0.70, "test_mae": 9.0}

    refused, why = decide("clv", better_mae_worse_gini, "1", champion, {}, MARGIN)
    promoted, _ = decide("clv", {"test_normalized_gini": 0.8}, "1", champion,
                         {"bgnbd_gamma_gamma": {"test_normalized_gini": 0.75}}, MARGIN)  # fmt: skip

    assert not refused and "test_normalized_gini 0.6900" in why
    assert promoted
