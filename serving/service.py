"""The online service a CRM calls (BentoML): POST /score and /kpis, GET /metadata, /healthz,
/readyz, /metrics, POST /admin/reload. Each endpoint is a few lines over serving/runtime.py.

Serve it with `custlens serve` (or `bentoml serve serving.service:Custlens`); the settings come
from configs/default.yaml, the YAML named by CUSTLENS_CONFIG and CUSTLENS_* variables, the API
keys from CUSTLENS_API_KEYS.

Four things keep BentoML 1.4.39's tail latency away (the README's "Why the service is fast"):
OpenTelemetry is kept out of the request path (`tracing.excluded_urls`), BentoML's request
timeout no longer leaves a 60-second timer alive per request (serving/bentoml_compat.py), the
heap is frozen out of the cyclic GC once the models are loaded (runtime._settle_heap), and
LightGBM predicts on one OpenMP thread (OMP_NUM_THREADS=1 in the workers).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated, Any

import anyio.to_thread
import bentoml
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from features.kpis import Grouping
from serving.auth import PROTECTED_PATHS, authorized, unauthorized
from serving.bentoml_compat import cancel_request_timers
from serving.runtime import ClientError, Runtime, kpis, resolve, score, service_settings

logger = logging.getLogger("custlens.serving")


def _configured_workers() -> int:
    """Worker processes from the settings; BentoML reads them when the module is imported."""
    try:
        return service_settings().serving.workers
    except Exception:  # a broken config is reported by /readyz, not by an import error
        return 1


CustomerId = Annotated[str, Field(min_length=1, max_length=256)]


class SourceCustomer(BaseModel):
    """A customer as a source system knows them."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="Source system, e.g. crm, pos, web.")
    source_customer_id: str = Field(min_length=1, max_length=256, description="The customer's id in that system.")


class KpiQuery(BaseModel):
    """The arguments of `custlens kpis`: a period (both days, or neither for the last full month)
    and an optional grouping."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    date_from: date | None = Field(
        None, alias="from", description="First day, YYYY-MM-DD (the business's local day), included."
    )
    date_to: date | None = Field(
        None, alias="to", description="Last day, YYYY-MM-DD (the business's local day), included."
    )
    by: Grouping | None = Field(
        None, description="Group KPIs by this (segment and behaviour after a batch scoring run)."
    )


# prometheus_client follows BentoML's PROMETHEUS_MULTIPROC_DIR: /metrics sums every worker.
scored_customers = Counter(
    name="custlens_customers_scored",
    documentation="Customers answered by /score, by whether the online store knew them.",
    labelnames=["known"],
)
model_reloads = Counter(
    name="custlens_model_reloads",
    documentation="Reloads of the served models: outcome reloaded, unchanged or failed.",
    labelnames=["outcome"],
)


@bentoml.service(
    name="custlens",
    workers=_configured_workers(),
    # Access lines cost a formatted log record per request; turn on with BentoML's config if wanted.
    logging={"access": {"enabled": False}},
    # BentoML records a span per request even unsampled; they die in reference cycles and make
    # full GC passes of 100+ ms. Excluding every URL keeps OpenTelemetry off the request path.
    tracing={"excluded_urls": ["/"]},
    envs=[{"name": "OMP_NUM_THREADS", "value": "1"}],
)
class Custlens:
    """Scores and KPI summaries for the CRM, from the @champion models and the online store."""

    def __init__(self) -> None:
        cancel_request_timers()
        try:
            settings = service_settings()
        except Exception as exc:
            self.runtime: Runtime | None = None
            self.not_ready = f"invalid settings: {exc}"
            self.api_keys: frozenset[str] = frozenset()
            return
        self.runtime = Runtime(settings)
        self.not_ready = ""
        self.api_keys = settings.api_key_set()
        if not self.api_keys:
            logger.warning("no API keys configured (CUSTLENS_API_KEYS): every scoring request will get 401")
        self.runtime.start()

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()

    @bentoml.api(route="/score")
    async def score(
        self,
        ctx: bentoml.Context,
        customer_ids: list[CustomerId] | None = None,
        customers: list[SourceCustomer] | None = None,
        reasons: bool = False,
    ) -> dict[str, Any]:
        """Every score of these customers, in order: by unified `customer_ids` or by `customers`
        (source, source_customer_id pairs). An id the store never saw comes back `known: false`
        with no scores. `reasons` adds the top reasons behind each churn score."""
        try:
            runtime = self._runtime()
            loaded = runtime.require()
            pairs = None if customers is None else [(c.source, c.source_customer_id) for c in customers]
            asked = resolve(loaded, customer_ids, pairs, runtime.settings.serving.max_ids_per_request)
            answer = score(loaded, asked, reasons)
        except ClientError as exc:
            return _refuse(ctx, exc)
        known = sum(1 for result in answer["results"] if result["known"])
        scored_customers.labels(known="true").inc(known)
        if known < len(asked):
            scored_customers.labels(known="false").inc(len(asked) - known)
        return answer

    @bentoml.api(route="/kpis", input_spec=KpiQuery)
    def kpis(
        self,
        ctx: bentoml.Context,
        date_from: date | None = None,
        date_to: date | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """The KPIs of a period, overall or per group: the numbers `custlens kpis` prints."""
        try:
            runtime = self._runtime()
            return kpis(runtime.settings, date_from, date_to, by, runtime.kpi_cache)
        except ClientError as exc:
            return _refuse(ctx, exc)

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise ClientError(f"the service is not ready: {self.not_ready}", status=503)
        return self.runtime

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.runtime is None:
            return False, {"ready": False, "reason": self.not_ready}
        loaded = self.runtime.loaded
        if loaded is None:
            return False, {"ready": False, "reason": self.runtime.reason}
        return True, {"ready": True, "model_versions": loaded.scorer.versions}


def _refuse(ctx: bentoml.Context, error: ClientError) -> dict[str, Any]:
    """A client error as the answer: its status and {"error": message[, "field": name]}."""
    ctx.response.status_code = error.status
    body: dict[str, Any] = {"error": str(error)}
    if error.field:
        body["field"] = error.field
    return body


# ---------------------------------------------------------------------------------------------
# GET /metadata, POST /admin/reload, GET /readyz and the API keys


def _instance() -> Custlens:
    service: Custlens = bentoml.get_current_service()
    return service


async def metadata(_: Request) -> Response:
    """Models, versions, aliases, training runs and feature services being served."""
    try:
        return JSONResponse(_instance()._runtime().metadata())
    except ClientError as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def admin_reload(_: Request) -> Response:
    """Load the alias's versions now instead of at the next poll (this worker; the others follow
    at their next poll). The old models answer until the new ones are loaded."""
    try:
        runtime = _instance()._runtime()
    except ClientError as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    outcome = await anyio.to_thread.run_sync(runtime.reload_if_changed)
    label = "failed" if "error" in outcome else "reloaded" if outcome["reloaded"] else "unchanged"
    model_reloads.labels(outcome=label).inc()
    return JSONResponse(outcome, status_code=503 if "error" in outcome else 200)


# mypy sees the decorated class, BentoML makes it a Service: its service-level methods are untyped here.
service_definition: Any = Custlens
service_definition.mount_asgi_app(
    Starlette(
        routes=[Route("/metadata", metadata, methods=["GET"]), Route("/admin/reload", admin_reload, methods=["POST"])]
    ),
    path="/",
    name="custlens-admin",
)


class Gate:
    """Answers /readyz with the reason it is not ready, and lets requests to PROTECTED_PATHS in
    only with a configured key (`Authorization: Bearer <key>`, compared in constant time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/readyz":
            ready, body = _instance().readiness()
            return await JSONResponse(body, status_code=200 if ready else 503)(scope, receive, send)
        if path in PROTECTED_PATHS and not authorized(scope, _instance().api_keys):
            return await unauthorized()(scope, receive, send)
        await self.app(scope, receive, send)


service_definition.add_asgi_middleware(Gate)
