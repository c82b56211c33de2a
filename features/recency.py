"""The one definition of a day count between a stored instant and the request time, shared by
the on-demand feature view (training frames) and the online reader (serving)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0


def days_between(now: pd.Series, stamp: pd.Series) -> pd.Series:
    """Fractional days from `stamp` to `now` (both UTC instants); NULL where `stamp` is NULL."""
    now_s = pd.to_datetime(now, utc=True)
    stamp_s = pd.to_datetime(stamp, utc=True)
    return ((now_s - stamp_s).dt.total_seconds() / SECONDS_PER_DAY).astype("float64")


def days_between_epochs(now_epoch_s: float | np.ndarray, stamp_epoch_s: np.ndarray) -> np.ndarray:
    """The same day count on epoch seconds (the packed online vector); NaN stays NaN."""
    return (np.asarray(now_epoch_s, dtype="float64") - stamp_epoch_s) / SECONDS_PER_DAY
