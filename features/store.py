"""The Feast feature store of custlens: its configuration from Settings, idempotent apply of
the definitions in `features/repo/`, and point-in-time training frames."""

from __future__ import annotations

import os
import sys
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
from features import layout
from features.lake.tables import cutoff_instant

REPO_DIR = Path(__file__).resolve().parent / "repo"

# Feast warns on every call that on-demand feature views are experimental; we pin the version.
warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")


def repo_config(settings: Settings) -> RepoConfig:
    """Feast's configuration for these settings: file or SQL registry, SQLite or Redis online store."""
    feast_dir = settings.feast_dir.resolve()
    registry: RegistryConfig
    if settings.feast.registry_url:
        from feast.infra.registry.sql import SqlRegistryConfig

        registry = SqlRegistryConfig(
            registry_type="sql",
            path=settings.feast.registry_url,
            cache_ttl_seconds=60,
            sqlalchemy_config_kwargs={"echo": False, "pool_pre_ping": True},
        )
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
        entity_key_serialization_version=3,
        repo_path=REPO_DIR,
    )


def _file_registry(settings: Settings) -> Path:
    return settings.feast_dir.resolve() / "registry.db"


@contextmanager
def _definitions_see(settings: Settings) -> Iterator[None]:
    """The repo modules find the data directory through the environment, and Feast names the
    modules it imports after their path from the working directory: make both right."""
    previous = os.environ.get(layout.DATA_DIR_VARIABLE)
    previous_cwd = Path.cwd()
    os.environ[layout.DATA_DIR_VARIABLE] = str(settings.data_dir.resolve())
    os.chdir(REPO_DIR.parents[1])  # so the modules are `features.repo.*`, as our own imports name them
    try:
        yield
    finally:
        os.chdir(previous_cwd)
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
    """Register the repo's definitions; re-applying unchanged definitions changes nothing.

    Feast's own apply rewrites every object's timestamps, and after a materialization reports
    a data source's `meta` as changed forever; only real differences are applied here.
    """
    from feast.diff.property_diff import TransitionType
    from feast.project import Project
    from feast.repo_operations import parse_repo

    store = feature_store(settings)
    # The definitions read the data directory when imported: import them afresh for these settings.
    for module in [name for name in sys.modules if name == "features.repo" or name.startswith("features.repo.")]:
        del sys.modules[module]
    with _definitions_see(settings):
        contents = parse_repo(REPO_DIR)
    contents.projects.append(Project(name=store.project))
    registry_diff, infra_diff, new_infra = store.plan(contents)
    changes = tuple(
        f"{diff.transition_type.name.lower()} {diff.feast_object_type.value} {diff.name}"
        for diff in registry_diff.feast_object_diffs
        if diff.transition_type != TransitionType.UNCHANGED and _really_changed(diff)
    )
    if changes:
        store._apply_diffs(registry_diff, infra_diff, new_infra)
    return ApplyResult(changes)


def _really_changed(diff: Any) -> bool:
    from feast.diff.property_diff import TransitionType

    if diff.transition_type != TransitionType.UPDATE:
        return True
    for property_diff in diff.feast_object_property_diffs:
        existing, declared = property_diff.val_existing, property_diff.val_declared
        if hasattr(existing, "DESCRIPTOR") and "meta" in existing.DESCRIPTOR.fields_by_name:
            existing_copy, declared_copy = type(existing)(), type(declared)()
            existing_copy.CopyFrom(existing)
            declared_copy.CopyFrom(declared)
            existing_copy.ClearField("meta")
            declared_copy.ClearField("meta")
            if existing_copy == declared_copy:
                continue
        return True
    return False


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
