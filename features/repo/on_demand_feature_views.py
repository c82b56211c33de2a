"""Day counts computed at request time from the stored timestamps, so that they are right on
the day of the request rather than frozen at the day of the snapshot."""

import pandas as pd
from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from features.catalog import RECENCY_FEATURES, Family, feature
from features.repo.data_sources import request
from features.repo.feature_views import family_views


def _instants() -> list[FeatureView]:
    """The stored instants the day counts are taken from, as projections of their family views:
    Feast fetches an on-demand view's sources with every request of it, and this one reads no more."""
    by_family: dict[Family, list[str]] = {}
    for stamp in RECENCY_FEATURES.values():
        by_family.setdefault(feature(stamp).family, []).append(stamp)
    return [family_views[family][stamps] for family, stamps in by_family.items()]


@on_demand_feature_view(
    sources=[*_instants(), request],
    schema=[Field(name=name, dtype=Float64) for name in RECENCY_FEATURES],
    mode="pandas",
    description="Days since the first/last order, the first purchase day, last engagement, last survey, and "
    "tenure, at request time.",
)
def recency(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast stores this function's source and runs it without this module's globals: import here.
    import pandas as pd

    from features.catalog import RECENCY_FEATURES
    from features.layout import REQUEST_TIME
    from features.recency import days_between

    now = inputs[REQUEST_TIME]
    return pd.DataFrame(
        {name: days_between(now, inputs[stamp]) for name, stamp in RECENCY_FEATURES.items()},
        index=inputs.index,
    )
