"""The two-part (hurdle) design of a value model, next to the one Tweedie regressor: a LightGBM
classifier of P(value > 0) times a LightGBM regressor of E[value | value > 0] fitted on the rows
with a value (the buyers). Net revenue in a window is zero for most customers and skewed for the
rest; the two parts let each learn one of those shapes (`training.clv_design` chooses, train.py
chooses on validation under `auto`).

The value part is a Gamma regression with LightGBM's log link: it fits the mean of the money
itself (it starts at the log of the buyers' mean, and a leaf whose rows share one prediction moves
it to their mean), so p x value is not biased low the way exp() of an l2 fit of log value is
without a smearing factor; docs/model-quality.md ("Two-part CLV") has both measured.
"""

from __future__ import annotations

from typing import Any, Literal

import lightgbm as lgb
import numpy as np

from training.tuning import Data, Objective, datasets, fit_lightgbm

Design = Literal["tweedie", "two_part"]
# The LightGBM objective of each part: the classifier, and the value given a purchase.
PURCHASE_OBJECTIVE: Objective = "binary"
VALUE_OBJECTIVE: Objective = "gamma"
# What each booster of a two-part ModelBundle is (its field), tuned and fitted with its own parameters.
PARTS: dict[str, Objective] = {"booster": PURCHASE_OBJECTIVE, "value_booster": VALUE_OBJECTIVE}
# In a CLV bundle's meta and its run (param and tag): the design it was built as.
DESIGN_KEY = "clv_design"


def purchase_data(data: Data) -> Data:
    """The classifier's rows: every row, labelled 1 when its value is above 0."""
    features, value = data
    return features, (np.asarray(value) > 0).astype(float)


def value_data(data: Data) -> Data:
    """The value regressor's rows: those with a value above 0 (Gamma needs a positive target)."""
    features, value = data
    bought = np.asarray(value) > 0
    return features[bought], np.asarray(value)[bought]


def part_data(part: str, data: Data) -> Data:
    return purchase_data(data) if PARTS[part] == PURCHASE_OBJECTIVE else value_data(data)


def split_budget(trials: int, timeout_seconds: float) -> dict[str, tuple[int, float]]:
    """Each part's trials and seconds: the model's budget shared half and half (the classifier gets
    the odd trial), so the two-part design tunes in the time one model does."""
    purchase, half = max(1, (trials + 1) // 2), timeout_seconds / 2
    return {"booster": (purchase, half), "value_booster": (max(1, trials - purchase), half)}


def fit_parts(params: dict[str, dict[str, Any]], train: Data, valid: Data | None) -> dict[str, lgb.Booster]:
    """Both parts fitted on `train` (value: floored at 0 by the caller), early stopping on `valid`
    when given, else each for its `num_boost_round`: the ModelBundle fields `booster` and `value_booster`."""
    return {
        part: fit_lightgbm(params[part], *datasets(part_data(part, train),
                                                   part_data(part, valid) if valid is not None else None))
        for part in PARTS
    }  # fmt: skip
