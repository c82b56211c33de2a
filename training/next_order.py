"""When a customer is expected to order next, consistent with their repurchase probability.

A date 35 days out for a customer with a 0% chance of buying in 30 days is not a forecast. What
custlens answers instead is the *median* time to the next order counting the chance that there
is none: the number of days t after the as-of by which the customer has ordered again with
probability 1/2. So, with the repurchase probability p over its window of W days:

- p >= 1/2 exactly when the date falls within the window (t <= W), and p < 1/2 when it falls
  after it; the two outputs can never tell different stories;
- a customer whose chance of ever ordering again (within `longest` days) stays below 1/2 has no
  such date: NaN, shown as NULL.

The BG/NBD baseline has the whole distribution and solves for t exactly
(`BetaGeo.median_days_to_next_purchase`). The learned model has two parts, the calibrated
probability p of an order within W days and a timing booster for the typical wait of customers who
do order again (`d`, fitted on rows whose next order is known). `median_days` joins them: the wait
of a returning customer is taken as exponential with median d, and the share pi of customers who
return at all is set so that P(an order within W) = pi (1 - 2^(-W/d)) equals p. Where p is higher
than any pi <= 1 allows (the timing booster is slower than the classifier), the probability wins:
pi = 1 and a constant hazard through p. Then t solves pi (1 - 2^(-t/d)) = 1/2.
"""

from __future__ import annotations

import numpy as np

# The timing booster's own answer in ModelBundle.scores: the typical wait of a customer who orders again.
DAYS_IF_RETURN = "days_to_next_order_if_return"
# No customer's next order is dated further out than this (ten years): beyond it, NaN.
LONGEST_DAYS = 3650.0
# Shortest typical wait the timing booster's answer is taken as: half a day.
_SHORTEST_WAIT = 0.5


def median_days(probability: np.ndarray, window_days: float, days_if_return: np.ndarray,
                longest: float = LONGEST_DAYS) -> np.ndarray:  # fmt: skip
    """Days after the as-of by which an order has come with probability 1/2 (module docstring);
    NaN where the chance of one stays below 1/2 within `longest` days, or where either input is NaN."""
    p = np.clip(np.asarray(probability, dtype="float64"), 0.0, 1.0 - 1e-12)
    wait = np.maximum(np.asarray(days_if_return, dtype="float64"), _SHORTEST_WAIT)
    within = -np.expm1(-np.log(2.0) * window_days / wait)  # P(order within W | returns)
    share = p / within  # pi: who returns at all
    constant = share >= 1.0  # the classifier says more than the timing allows: a constant hazard through p
    with np.errstate(divide="ignore", invalid="ignore"):
        mixed = -wait / np.log(2.0) * np.log1p(-0.5 / share)  # NaN where share <= 1/2
        hazard = -window_days * np.log(2.0) / np.log1p(-p)
    days = np.where(constant, hazard, np.where(share > 0.5, mixed, np.nan))
    return np.where(days <= longest, days, np.nan)


def beyond_horizon(days: np.ndarray, horizon_days: float) -> np.ndarray:
    """`days` with NaN where it falls after the horizon the service dates orders within."""
    days = np.asarray(days, dtype="float64")
    return np.where(days <= horizon_days, days, np.nan)
