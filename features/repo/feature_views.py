"""Feature views: one per family of the catalog (offline, for point-in-time training frames)
and one packed view, `customer_vector`, that the online store serves fast."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from features.catalog import FAMILIES, Family, FeatureKind, family_features
from features.repo.data_sources import packed_snapshot, snapshot_sources
from features.repo.entities import customer

FEAST_TYPES = {"count": Int64, "number": Float64, "timestamp": UnixTimestamp, "category": String}

# Snapshots are monthly; a training row at a cutoff finds the snapshot stamped at that cutoff.
# The TTL only stops a row from silently reusing a snapshot older than about a year.
SNAPSHOT_TTL = timedelta(days=400)


def _family_view(family: Family) -> FeatureView:
    kinds: dict[str, FeatureKind] = {f.name: f.kind for f in family_features(family)}
    return FeatureView(
        name=family,
        entities=[customer],
        ttl=SNAPSHOT_TTL,
        schema=[
            Field(name=f.name, dtype=FEAST_TYPES[kinds[f.name]], description=f.description)
            for f in family_features(family)
        ],
        source=snapshot_sources[family],
        # Offline only: online, every feature is served from customer_vector (one row per
        # customer instead of one per customer and feature, which no store loads fast).
        online=False,
        description=f"{family.capitalize()} features per customer, as of each cutoff.",
        tags={"family": family},
    )


family_views: dict[Family, FeatureView] = {family: _family_view(family) for family in FAMILIES}

purchases = family_views["purchases"]
engagement = family_views["engagement"]
voice = family_views["voice"]
support = family_views["support"]
profile = family_views["profile"]
btyd = family_views["btyd"]

customer_vector = FeatureView(
    name="customer_vector",
    entities=[customer],
    ttl=SNAPSHOT_TTL,
    schema=[
        Field(name="numbers", dtype=Array(Float64), description="catalog PACKED_NUMBERS; NaN is NULL"),
        Field(name="labels", dtype=Array(String), description="catalog PACKED_LABELS; empty is NULL"),
    ],
    source=packed_snapshot,
    online=True,
    description="Every stored feature of the latest snapshot, packed: the online read path.",
    tags={"packing": "catalog-order"},
)
