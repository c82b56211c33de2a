"""The Feast feature store of custlens: its configuration from Settings, idempotent apply of
the definitions in `features/repo/`, and point-in-time training frames. The Feast internals
that apply needs are in features/feast_format.py."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureService, FeatureStore
from feast.repo_config import RegistryConfig, RepoConfig

from custlens.errors import CustlensError
from custlens.settings import Settings
from features import feast_format, layout
from features.lake.tables import cutoff_instant

REPO_DIR = Path(__file__).resolve().parent / "repo"

# Feast warns on every call that on-demand feature views are experimental; we pin the version.
warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")


def repo_config(settings: Settings) -> RepoConfig:
    """Feast's configuration for these settings: file or SQL registry, SQLite or Redis online store."""
    feast_dir = settings.feast_dir.resolve()
    registry: RegistryConfig | dict[str, Any]
    if settings.feast.registry_url:
        # As feature_store.yaml spells it; Feast builds its SqlRegistryConfig from this.
        registry = {
            "registry_type": "sql",
            "path": settings.feast.registry_url,
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }
    else:
        # 0: load once and never refresh behind the caller's back (a refresh is a latency spike);
        # a long-running reader calls refresh_registry() when it wants another process's apply.
        registry = RegistryConfig(path=str(_file_registry(settings)), cache_ttl_seconds=0)
    if settings.feast.online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": settings.feast.redis_connection_string,
        }
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online.db")}
    return RepoConfig(
        project=settings.feast.project,
        provider="local",
        registry=registry,
        offline_store={"type": "duckdb"},
        online_store=online,
        entity_key_serialization_version=feast_format.ENTITY_KEY_SERIALIZATION_VERSION,
        repo_path=REPO_DIR,
    )


def _file_registry(settings: Settings) -> Path:
    return settings.feast_dir.resolve() / "registry.db"


@contextmanager
def _definitions_see(settings: Settings) -> Iterator[None]:
    """The repo modules find the data directory through the environment: point it at these settings'."""
    previous = os.environ.get(layout.DATA_DIR_VARIABLE)
    os.environ[layout.DATA_DIR_VARIABLE] = str(settings.data_dir.resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(layout.DATA_DIR_VARIABLE, None)
        else:
            os.environ[layout.DATA_DIR_VARIABLE] = previous


def feature_store(settings: Settings) -> FeatureStore:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(REPO_DIR), config=repo_config(settings))


@dataclass(frozen=True)
class ApplyResult:
    changes: tuple[str, ...]  # "Created feature view purchases", ...; empty when nothing changed

    def render(self) -> str:
        if not self.changes:
            return "feature store definitions unchanged; nothing applied"
        return "applied:\n" + "\n".join(f"  {change}" for change in self.changes)


def apply_definitions(settings: Settings) -> ApplyResult:
    """Register the repo's definitions; re-applying unchanged definitions changes nothing
    (see feast_format.apply_real_changes)."""
    store = feature_store(settings)
    with _definitions_see(settings):
        # imported from the project root, so the modules are `features.repo.*` as our own imports name them
        contents = feast_format.parse_definitions(REPO_DIR, store.project, import_root=REPO_DIR.parents[1])
    return ApplyResult(feast_format.apply_real_changes(store, contents))


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    try:
        return store.get_feature_service(name)
    except Exception as exc:  # Feast raises its own not-found type per registry kind
        raise CustlensError(
            f"feature service {name!r} is not registered; run `custlens features apply` first"
        ) from exc


def service_features(store: FeatureStore, name: str) -> tuple[str, ...]:
    """The feature names a FeatureService serves, in the service's order."""
    return _served(feature_service(store, name))


def registered_services(settings: Settings) -> dict[str, tuple[str, ...]]:
    """What each registered FeatureService serves, by name; empty where the definitions were never
    applied (without a registry file none is created just to answer: Feast would make one)."""
    if not settings.feast.registry_url and not _file_registry(settings).exists():
        return {}
    return {service.name: _served(service) for service in feature_store(settings).list_feature_services()}


def _served(service: FeatureService) -> tuple[str, ...]:
    return tuple(field.name for projection in service.feature_view_projections for field in projection.features)


def training_frame(settings: Settings, entities: pd.DataFrame, service: str) -> pd.DataFrame:
    """Point-in-time features of `service` for each (customer_id, cutoff) row of `entities`.

    `entities` has a string `customer_id` and a `cutoff` (date or UTC timestamp). The answer
    keeps the rows and their order, with the service's features as of each cutoff; day counts
    are taken at the cutoff. Customers without a snapshot at their cutoff get NULL features.
    """
    missing = {"customer_id", "cutoff"} - set(entities.columns)
    if missing:
        raise CustlensError(f"training entities need columns customer_id and cutoff; missing {sorted(missing)}")
    store = feature_store(settings)
    frame = pd.DataFrame(
        {
            "customer_id": entities["customer_id"].astype(str).to_numpy(),
            "event_timestamp": _as_utc(entities["cutoff"]).to_numpy(),
        }
    )
    frame[layout.REQUEST_TIME] = frame["event_timestamp"]
    frame["_row"] = range(len(frame))
    job = store.get_historical_features(entity_df=frame, features=feature_service(store, service))
    joined = job.to_df()
    joined = joined.sort_values("_row", kind="stable").drop(columns=["_row", layout.REQUEST_TIME])
    return joined.rename(columns={"event_timestamp": "cutoff"}).reset_index(drop=True)


def _as_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")


def entity_rows(customer_ids: Sequence[str], cutoffs: Sequence[date]) -> pd.DataFrame:
    """Every customer at every cutoff, as training entities."""
    return pd.DataFrame(
        [(customer_id, cutoff_instant(day)) for day in cutoffs for customer_id in customer_ids],
        columns=["customer_id", "cutoff"],
    )
