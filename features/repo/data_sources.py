"""Where Feast reads features from: one Parquet folder per family of snapshots (one file per
cutoff, written by `custlens features build`), the packed snapshot the online store serves,
and the request itself."""

from feast import Field, FileSource, RequestSource
from feast.types import UnixTimestamp

from features import layout
from features.catalog import FAMILIES, Family


def _snapshots(family: Family) -> FileSource:
    return FileSource(
        name=f"{family}_snapshots",
        path=str(layout.family_glob(family)),
        timestamp_field="event_timestamp",
        description=f"Per-customer {family} features at each cutoff, computed from data strictly before it.",
        tags={"family": family},
    )


snapshot_sources: dict[Family, FileSource] = {family: _snapshots(family) for family in FAMILIES}

packed_snapshot = FileSource(
    name="packed_snapshot",
    path=str(layout.packed_path()),
    timestamp_field="event_timestamp",
    description="The latest snapshot with every feature packed in catalog order: what the online store serves.",
)

request = RequestSource(
    name="request",
    schema=[Field(name=layout.REQUEST_TIME, dtype=UnixTimestamp, description="when features are asked for (UTC)")],
    description="The moment features are asked for: the cutoff in training frames, now online.",
)
