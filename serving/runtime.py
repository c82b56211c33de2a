"""What one service worker holds and does, in plain Python the tests call directly: the Scorer,
the online feature reader and the lake's crosswalk, loaded off the request path; readiness with
its reason; hot reload of a new champion; and a /score or /kpis request turned into JSON-able
answers. serving/service.py is only the HTTP shell around it.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings, load_settings
from features.kpis import (
    HTTP_SPELLING,
    MAX_KPI_DAYS,
    SEGMENT_GROUPINGS,
    KpiArgumentError,
    KpiCache,
    check_grouping,
    kpi_period,
)
from features.kpis import kpis as compute_kpis
from features.lake.tables import CrmIds, crosswalk_path
from features.online import OnlineFeatures, materialized_cutoff
from serving.scorer import SCORE_COLUMNS, Scorer
from training.value_range import HIGH, LOW, range_of

logger = logging.getLogger("custlens.serving")

CONFIG_ENV = "CUSTLENS_CONFIG"  # the YAML `custlens serve --config` hands to the service workers
_CROSSWALK_CHECK_SECONDS = 1.0  # how often a request may look whether the crosswalk file changed
_LOAD_RETRY_SECONDS = 5.0  # a failed first load is retried this often (the models may be training)


class ClientError(CustlensError):
    """A request the service cannot answer as asked: the caller gets a 4xx with this message."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def service_settings() -> Settings:
    """The settings a worker runs with: configs/default.yaml, the file named by CUSTLENS_CONFIG,
    then CUSTLENS_* variables."""
    config = os.environ.get(CONFIG_ENV)
    return load_settings(Path(config) if config else None)


# ---------------------------------------------------------------------------------------------
# The crosswalk: (source, source_customer_id) -> customer_id


class Crosswalk:
    """The lake's id crosswalk as dicts, reloaded when the file changes (a new ingest).

    Keys are "source\\x1fsource_customer_id" strings: one string per id costs half the memory of
    a tuple of two, and a dict lookup is all a request needs.
    """

    def __init__(self, path: Path, crm_source: str) -> None:
        self.path = path
        self.crm_source = crm_source
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._unified: dict[str, str] = {}
        self._crm_id: dict[str, str] = {}
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < _CROSSWALK_CHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise CustlensError(f"no crosswalk at {self.path}; run `custlens ingest` first") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            table = pq.read_table(self.path, columns=["source", "source_customer_id", "customer_id", "signup_at"])
            sources = table.column("source").to_pylist()
            source_ids = table.column("source_customer_id").to_pylist()
            unified_ids = table.column("customer_id").to_pylist()
            unified = {f"{s}\x1f{i}": c for s, i, c in zip(sources, source_ids, unified_ids, strict=True)}
            # The CRM's own id of each customer, for answers asked by unified id: the same rule
            # as the batch write-back (the account signed up first), so both give the CRM one id.
            accounts = table.filter(pc.equal(table.column("source"), self.crm_source))
            crm = CrmIds.from_accounts(accounts.select(["customer_id", "source_customer_id", "signup_at"]))
            crm_id = dict(zip(crm.customer_ids.to_pylist(), crm.crm_ids.to_pylist(), strict=True))
            self._unified, self._crm_id, self._stamp = unified, crm_id, stamp
            logger.info("crosswalk loaded: %d source ids from %s", len(unified), self.path)

    def customer_id(self, source: str, source_customer_id: str) -> str | None:
        return self._unified.get(f"{source}\x1f{source_customer_id}")

    def crm_customer_id(self, customer_id: str) -> str | None:
        return self._crm_id.get(customer_id)

    def __len__(self) -> int:
        return len(self._unified)


# ---------------------------------------------------------------------------------------------
# The loaded state, swapped as one reference


@dataclass(frozen=True)
class Loaded:
    """Everything a request reads, replaced whole on reload: a request takes one reference at its
    start and finishes on it, so a swap never mixes two versions or fails a request."""

    scorer: Scorer
    online: OnlineFeatures
    crosswalk: Crosswalk
    loaded_at: datetime


class Runtime:
    """One worker's scoring state: load in the background, report readiness, reload new champions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loaded: Loaded | None = None
        self.reason = "loading the models from the registry and opening the feature store"
        self.last_reload_error: str | None = None
        self.kpi_cache = KpiCache()  # this worker's KPI cubes in memory, loaded by the first /kpis
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load (retrying until it works) and then poll the registry, in one daemon thread."""
        self._thread = threading.Thread(target=self._run, name="custlens-loader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.loaded is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.loaded is not None

    def _run(self) -> None:
        while not self._stop.is_set() and self.loaded is None:
            try:
                self.load()
            except Exception as exc:  # reported by /readyz; the loop retries
                self.reason = f"not ready: {exc}"
                logger.warning("service not ready: %s", exc)
                self._stop.wait(_LOAD_RETRY_SECONDS)
        poll = self.settings.serving.reload_poll_seconds
        while poll > 0 and not self._stop.wait(poll):
            self.reload_if_changed()

    def load(self) -> Loaded:
        """Build everything a request needs, then swap it in with one assignment."""
        scorer = Scorer.from_registry(self.settings)
        online = OnlineFeatures(self.settings)
        crosswalk = self.loaded.crosswalk if self.loaded else Crosswalk(
            crosswalk_path(self.settings), self.settings.crm_source)  # fmt: skip
        _warm_up(scorer, online)
        loaded = Loaded(scorer, online, crosswalk, datetime.now(UTC))
        self.loaded = loaded
        self.reason = "ready"
        _settle_heap()
        counted = "fresh data: day counts to each request's time" if online.freshness.fresh(datetime.now(UTC)) else (
            "answered as of the snapshot")
        logger.info("serving models %s, windows %s, on the feature snapshot %s (%s)", scorer.versions, scorer.windows,
                    materialized_cutoff(self.settings), counted)  # fmt: skip
        for note in scorer.window_notes():
            logger.warning("%s", note)
        return loaded

    def reload_if_changed(self, force: bool = False) -> dict[str, Any]:
        """Load the alias's versions if they differ from the served ones (or `force`); the old
        state keeps answering until the new one is complete. Returns what happened."""
        with self._reload_lock:
            before = self.loaded.scorer.versions if self.loaded else None
            try:
                now = Scorer.registry_versions(self.settings)
                if not force and before is not None and now == before:
                    return {"reloaded": False, "versions": before}
                if all(version is None for version in now.values()):
                    raise CustlensError(f"no @{self.settings.serving.model_alias} version of any model")
                loaded = self.load()
            except Exception as exc:
                self.last_reload_error = str(exc)
                logger.warning("reload failed, still serving %s: %s", before, exc)
                return {"reloaded": False, "versions": before, "error": str(exc)}
            self.last_reload_error = None
            return {"reloaded": loaded.scorer.versions != before, "versions": loaded.scorer.versions}

    # -- requests ---------------------------------------------------------------------------------

    def require(self) -> Loaded:
        loaded = self.loaded
        if loaded is None:
            raise ClientError(f"the service is not ready yet: {self.reason}", status=503)
        return loaded

    def metadata(self) -> dict[str, Any]:
        loaded = self.require()
        return {
            "models": {model: ref.as_dict() for model, ref in loaded.scorer.refs.items()},
            "feature_services": loaded.scorer.feature_services,
            "windows": loaded.scorer.windows,
            "churn_risk_thresholds": loaded.scorer.risk_thresholds,  # medium, high and their basis
            "next_order_horizon_days": self.settings.serving.next_order_horizon_days,
            "clv_range": _clv_range(loaded.scorer),
            "model_alias": self.settings.serving.model_alias,
            "unserved": loaded.scorer.unserved,
            "loaded_at": loaded.loaded_at.isoformat(),
            "reload_poll_seconds": self.settings.serving.reload_poll_seconds,
            "last_reload_error": self.last_reload_error,
            "online_store": self.settings.feast.online_store,
            "feature_snapshot": None if (served := materialized_cutoff(self.settings)) is None else served.isoformat(),
            "data_end": None if (end := loaded.online.freshness.data_end()) is None else end.isoformat(),
            "data_fresh": loaded.online.freshness.fresh(datetime.now(UTC)),
            "fresh_within_days": self.settings.features.fresh_within_days,
            "crosswalk_ids": len(loaded.crosswalk),
            "max_ids_per_request": self.settings.serving.max_ids_per_request,
        }


def _clv_range(scorer: Scorer) -> dict[str, Any] | None:
    """What `predicted_clv_p10` / `predicted_clv_p90` are, from the served CLV version: the
    quantiles, the held-out rows the range was made on and which; None when it serves no range."""
    table = range_of(scorer.clv.meta) if scorer.clv is not None else None
    if table is None:
        return None
    return {"quantiles": [LOW, HIGH], "bins": len(table.predicted), "rows": table.rows, "made_on": table.source}


def _warm_up(scorer: Scorer, online: OnlineFeatures) -> None:
    """Score an unknown and a made-up id once so that first-call costs (imports, caches, plans)
    are paid before the service says it is ready, not by the first customer."""
    now = datetime.now(UTC)
    columns = online.features_columns(["C-warm-up"], scorer.inputs, now)
    scorer.score(columns, now, reasons=True)
    scorer.score({**columns, "known": np.ones(1, dtype=bool)}, now, reasons=True)


def _settle_heap() -> None:
    """Collect once, then freeze what is alive (modules, models, caches) out of the cyclic GC.

    A full collection walks every tracked object: with MLflow, Feast, pandas and BentoML imported
    that is several hundred thousand objects and 50-300 ms on a busy 2-core machine, a pause every
    request in flight waits for. Frozen objects are still freed by reference counting; each reload
    unfreezes first, so an old model's cycles are collected, then freezes again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------------------------------------
# /score


@dataclass(frozen=True)
class Asked:
    """One requested customer: the unified id it resolves to (None: not in the crosswalk) and the
    source id it was asked by (or the CRM's id, when asked by unified id)."""

    customer_id: str | None
    source: str | None
    source_customer_id: str | None


def resolve(
    loaded: Loaded,
    customer_ids: Sequence[str] | None,
    customers: Sequence[tuple[str, str]] | None,
    max_ids: int,
) -> list[Asked]:
    """The customers a /score request asks for, in order; exactly one of the two lists."""
    if (customer_ids is None) == (customers is None):
        raise ClientError("give either `customer_ids` or `customers` (source, source_customer_id pairs), not both")
    field = "customer_ids" if customer_ids is not None else "customers"
    count = len(customer_ids if customer_ids is not None else customers or [])
    if count == 0:
        raise ClientError(f"`{field}` is empty; ask for at least one customer", field)
    if count > max_ids:
        raise ClientError(f"`{field}` holds {count} ids; at most {max_ids} per request", field)
    crosswalk = loaded.crosswalk
    crosswalk.refresh()
    if customers is not None:
        return [Asked(crosswalk.customer_id(s, i), s, i) for s, i in customers]
    asked = []
    for customer_id in customer_ids or []:
        crm_id = crosswalk.crm_customer_id(customer_id)
        asked.append(Asked(customer_id, crosswalk.crm_source if crm_id else None, crm_id))
    return asked


def score(loaded: Loaded, asked: Sequence[Asked], reasons: bool, now: datetime | None = None) -> dict[str, Any]:
    """Every score of the asked customers as JSON-able rows, in order; unknown ones with none."""
    now = now or datetime.now(UTC)
    scorer = loaded.scorer
    ids = [a.customer_id or "" for a in asked]  # "" is never stored: an unresolved pair stays unknown
    features, as_of = loaded.online.features_columns_as_of(ids, scorer.inputs, now)
    scored = scorer.score(features, as_of, reasons=reasons)
    columns = {name: _plain_column(scored[name]) for name in (*SCORE_COLUMNS, *(["churn_reasons"] if reasons else []))}
    known = features["known"].tolist()
    feature_time = [None if pd.isna(t) else t.isoformat() for t in features["feature_time"]]
    as_of_text = as_of.isoformat()
    results = []
    for row, (who, is_known) in enumerate(zip(asked, known, strict=True)):
        result: dict[str, Any] = {
            "customer_id": who.customer_id,
            "source": who.source,
            "source_customer_id": who.source_customer_id,
            "known": is_known,
        }
        if is_known:
            result["feature_time"] = feature_time[row]
            result["feature_snapshot"] = str(feature_time[row])[:10]
            result["as_of"] = as_of_text
            for name, values in columns.items():
                result[name] = values[row]
        results.append(result)
    return {
        "scored_at": now.isoformat(),
        "as_of": as_of_text,
        "model_alias": scorer.alias,
        "model_versions": scorer.versions,
        "unserved": scorer.unserved,  # models with no version to serve (their fields are null), and why
        "windows": scorer.windows,  # the days after `scored_at` each output is over, as trained
        "results": results,
    }


def _plain_column(column: pd.Series) -> list[Any]:
    """A score column as plain Python values: floats at full precision (online and batch give the
    same numbers), NaN as None, dates as ISO strings."""
    values = column.tolist()
    if column.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in values]
    return [v.isoformat() if isinstance(v, date) else v for v in values]


# ---------------------------------------------------------------------------------------------
# /kpis


def kpis(
    settings: Settings, date_from: date | None, date_to: date | None, by: str | None, cache: KpiCache
) -> dict[str, Any]:
    """The KPI table `custlens kpis --format json` prints, as a dict; the period and grouping are
    checked by features.kpis' rules (both days or neither, at most MAX_KPI_DAYS per request)."""
    try:
        grouping = check_grouping(by)
        start, end = kpi_period(settings, date_from, date_to, HTTP_SPELLING, max_days=MAX_KPI_DAYS)
        table = compute_kpis(settings, start, end, grouping, cache)
    except KpiArgumentError as exc:
        raise ClientError(str(exc), exc.field) from exc
    except CustlensError as exc:
        if by in SEGMENT_GROUPINGS:  # no batch scores yet (or older than the lake): a state, not a fault
            raise ClientError(str(exc), "by", status=409) from exc
        # the arguments are checked above: this is the server's data (no cube, say)
        raise ClientError(str(exc), status=503) from exc
    answer: dict[str, Any] = json.loads(table.to_json())
    return answer


__all__ = ["Asked", "ClientError", "Crosswalk", "Loaded", "Runtime", "kpis", "resolve", "score", "service_settings"]
