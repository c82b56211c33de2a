"""One FeatureService per model version: the contract between training and serving. Each serves
exactly what its model reads (features/model_inputs.py), as projections of the family views and
of the `recency` day counts; training frames and online reads ask for the same service, never a
copied list of names.

The raw instants the day counts come from are not listed: Feast fetches an on-demand view's
sources itself (`_get_feature_views_to_use` adds them to the retrieval), so a service that lists
`recency[[...]]` gets its day counts without serving the instants.
"""

from typing import Any

from feast import FeatureService, FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView

from features.catalog import FAMILIES, RECENCY_FEATURES, feature
from features.model_inputs import ServiceSpec, spec_of_service
from features.repo.feature_views import family_views
from features.repo.on_demand_feature_views import recency


def _projections(spec: ServiceSpec) -> list[Any]:  # FeatureService takes a list of several view kinds
    """The model's inputs grouped by the view that serves them, in family order, then the day counts."""
    views: dict[str, FeatureView | OnDemandFeatureView] = {family: family_views[family] for family in FAMILIES}
    views[recency.name] = recency
    wanted: dict[str, list[str]] = {}
    for name in spec.inputs.names:
        view = recency.name if name in RECENCY_FEATURES else feature(name).family
        wanted.setdefault(view, []).append(name)
    return [views[view][wanted[view]] for view in (*FAMILIES, recency.name) if view in wanted]


def _service(name: str) -> FeatureService:
    spec = spec_of_service(name)
    return FeatureService(
        name=spec.service, features=_projections(spec), description=spec.description, tags={"model": spec.model}
    )


churn_v1 = _service("churn_v1")
repurchase_v1 = _service("repurchase_v1")
clv_v1 = _service("clv_v1")
segments_v1 = _service("segments_v1")
baselines_v1 = _service("baselines_v1")
churn_v2 = _service("churn_v2")
repurchase_v2 = _service("repurchase_v2")
clv_v2 = _service("clv_v2")
