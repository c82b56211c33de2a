"""One FeatureService per model version: the contract between training and serving. Training
frames and online reads ask for the same service, never a copied list of names."""

from feast import FeatureService

from features.repo.feature_views import engagement, profile, purchases, support, voice
from features.repo.on_demand_feature_views import recency

_everything = [purchases, engagement, voice, support, profile, recency]

churn_v1 = FeatureService(
    name="churn_v1",
    features=_everything,
    description="Features of the churn model, version 1.",
    tags={"model": "churn"},
)
repurchase_v1 = FeatureService(
    name="repurchase_v1",
    features=_everything,
    description="Features of the 30-day repurchase model, version 1.",
    tags={"model": "repurchase"},
)
clv_v1 = FeatureService(
    name="clv_v1",
    features=_everything,
    description="Features of the 12-month customer value model, version 1.",
    tags={"model": "clv"},
)
segments_v1 = FeatureService(
    name="segments_v1",
    features=_everything,  # support features name clusters ("Support-heavy") even if not clustered on
    description="Features the RFM segments and behavioural clusters are computed from, version 1.",
    tags={"model": "segments"},
)
