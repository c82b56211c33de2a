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

And four keep it up under load (the README's "A service that stays up"): scoring, KPI queries
and the JSON of their answers run in a bounded thread pool (`serving.threads`), so the event loop
answers /healthz, /readyz and /metrics at once; a worker holds at most `serving.max_in_flight`
/score and /kpis requests and answers one more 503 with Retry-After at once; a request body is
read whole under `serving.max_body_bytes` and `serving.body_timeout_seconds` (413 / 408) before
BentoML sees it, and a header under `serving.header_timeout_seconds`; /metrics counts requests by
route, so unknown paths cannot grow it (serving/traffic.py).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated, Any

import anyio
import anyio.to_thread
import bentoml
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from custlens.settings import ServingSettings
from features.kpis import Grouping
from serving.auth import PROTECTED_PATHS, authorized, unauthorized
from serving.bentoml_compat import cancel_request_timers, log_client_errors_at_info, time_out_slow_headers
from serving.runtime import ClientError, Runtime, kpis, resolve, score, service_settings
from serving.traffic import ClientLeft, HttpMetrics, Refused, busy, metrics_endpoint, read_body, replay, request_line

logger = logging.getLogger("custlens.serving")

HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})  # answered at once, no key, no body
WORK_PATHS = frozenset({"/score", "/kpis"})  # run in the thread pool, at most serving.max_in_flight at once


def _configured() -> ServingSettings:
    """The serving settings as the module is imported (BentoML reads the worker count then, uvicorn
    its protocol); a broken config is reported by /readyz, not by an import error."""
    try:
        return service_settings().serving
    except Exception:
        return ServingSettings()


CustomerId = Annotated[str, Field(min_length=1, max_length=256)]


class SourceCustomer(BaseModel):
    """A customer as a source system knows them."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="Source system, e.g. crm, pos, web.")
    source_customer_id: str = Field(min_length=1, max_length=256, description="The customer's id in that system.")


class ScoreQuery(BaseModel):
    """Whom to score: unified `customer_ids` or `customers` (source, source_customer_id pairs)."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[CustomerId] | None = None
    customers: list[SourceCustomer] | None = None
    reasons: bool = False


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
# The service's HTTP series (by route and status) are serving/traffic.py's.
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


_serving = _configured()
time_out_slow_headers(_serving.header_timeout_seconds)  # before uvicorn loads its protocol


@bentoml.service(
    name="custlens",
    workers=_serving.workers,
    # Access lines cost a formatted log record per request; turn on with BentoML's config if wanted.
    logging={"access": {"enabled": False}},
    # BentoML labels its HTTP metrics by the raw path, one new series per unknown path a caller
    # makes up: serving/traffic.py's HttpMetrics counts by route instead, and serves /metrics.
    metrics={"enabled": False},
    # BentoML records a span per request even unsampled; they die in reference cycles and make
    # full GC passes of 100+ ms. Excluding every URL keeps OpenTelemetry off the request path.
    tracing={"excluded_urls": ["/"]},
    envs=[{"name": "OMP_NUM_THREADS", "value": "1"}],
)
class Custlens:
    """Scores and KPI summaries for the CRM, from the @champion models and the online store."""

    def __init__(self) -> None:
        cancel_request_timers()
        log_client_errors_at_info()
        logging.getLogger("custlens").setLevel(logging.INFO)  # BentoML's root logger shows WARNING and up
        self.runtime: Runtime | None = None
        self.api_keys: frozenset[str] = frozenset()
        self.serving = ServingSettings()
        try:
            settings = service_settings()
        except Exception as exc:
            self.not_ready = f"invalid settings: {exc}"
        else:
            self.not_ready = ""
            self.runtime = Runtime(settings)
            self.api_keys = settings.api_key_set()
            self.serving = settings.serving
        # Scoring and KPI queries run in these threads, off the event loop; the requests waiting
        # for one are bounded by serving.max_in_flight (Gate).
        self.threads = anyio.CapacityLimiter(self.serving.threads)
        if self.runtime is None:
            return
        if not self.api_keys:
            logger.warning("no API keys configured (CUSTLENS_API_KEYS): every scoring request will get 401")
        self.runtime.start()

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()

    # Each endpoint takes its whole body as one model (a positional-only parameter): BentoML then
    # hands it over as it is, where for separate parameters it reads `model_fields` off the
    # instance, a PydanticDeprecatedSince211 warning on every request.
    @bentoml.api(route="/score")
    async def score(self, query: ScoreQuery, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Every score of these customers, in order: by unified `customer_ids` or by `customers`
        (source, source_customer_id pairs). An id the store never saw comes back `known: false`
        with no scores. `reasons` adds the top reasons behind each churn score."""
        try:
            runtime = self._runtime()
            answer = await anyio.to_thread.run_sync(_score, runtime, query, limiter=self.threads)
        except ClientError as exc:
            return _refuse(ctx, exc)
        return answer  # type: ignore[return-value]  # JSON already: BentoML sends a Response as it is

    @bentoml.api(route="/kpis")
    async def kpis(self, query: KpiQuery, /, ctx: bentoml.Context) -> dict[str, Any]:
        """The KPIs of a period, overall or per group: the numbers `custlens kpis` prints."""
        try:
            runtime = self._runtime()
            answer = await anyio.to_thread.run_sync(_kpis, runtime, query, limiter=self.threads)
        except ClientError as exc:
            return _refuse(ctx, exc)
        return answer  # type: ignore[return-value]  # JSON already, as for /score

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


def _score(runtime: Runtime, query: ScoreQuery) -> Response:
    """A /score request answered, in a thread of the pool: the answer's JSON made there too (for
    1,000 customers it takes longer than scoring one)."""
    loaded = runtime.require()
    pairs = None if query.customers is None else [(c.source, c.source_customer_id) for c in query.customers]
    asked = resolve(loaded, query.customer_ids, pairs, runtime.settings.serving.max_ids_per_request)
    answer = score(loaded, asked, query.reasons)
    known = sum(1 for result in answer["results"] if result["known"])
    scored_customers.labels(known="true").inc(known)
    if known < len(asked):
        scored_customers.labels(known="false").inc(len(asked) - known)
    return _json(answer)


def _kpis(runtime: Runtime, query: KpiQuery) -> Response:
    return _json(kpis(runtime.settings, query.date_from, query.date_to, query.by, runtime.kpi_cache))


def _json(answer: dict[str, Any]) -> Response:
    return Response(to_json(answer, inf_nan_mode="null"), media_type="application/json")


def _refuse(ctx: bentoml.Context, error: ClientError) -> dict[str, Any]:
    """A client error as the answer: its status and {"error": message[, "field": name]}, and one
    INFO line in the log."""
    ctx.response.status_code = error.status
    logger.info("%s answered %d: %s", request_line(ctx.request.scope), error.status, error)
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
admin_routes = [
    Route("/metadata", metadata, methods=["GET"]),
    Route("/admin/reload", admin_reload, methods=["POST"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]
service_definition.mount_asgi_app(Starlette(routes=admin_routes), path="/", name="custlens-admin")


class Gate:
    """Answers /readyz with the reason it is not ready; lets requests to PROTECTED_PATHS in only
    with a configured key (`Authorization: Bearer <key>`, compared in constant time); answers a
    /score or /kpis request beyond `serving.max_in_flight` 503 with Retry-After at once, and reads
    its body whole under the size limit and deadline (413 / 408) before BentoML does. (No other
    endpoint reads a body: uvicorn holds at most 64 KiB of one.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0  # /score and /kpis requests this worker holds: reading, waiting, scoring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in HEALTH_PATHS:
            if path != "/readyz":
                return await self.app(scope, receive, send)
            ready, body = _instance().readiness()
            return await JSONResponse(body, status_code=200 if ready else 503)(scope, receive, send)
        service = _instance()
        if path in PROTECTED_PATHS and not authorized(scope, service.api_keys):
            logger.info("%s answered 401: no valid API key", request_line(scope))
            return await unauthorized()(scope, receive, send)
        if path not in WORK_PATHS:
            return await self.app(scope, receive, send)
        if self.in_flight >= service.serving.max_in_flight:
            return await _refuse_early(busy(self.in_flight), scope, receive, send)
        self.in_flight += 1  # from here, so that the bodies held in memory are bounded too
        try:
            await self._read_then_answer(service.serving, scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _read_then_answer(self, limits: ServingSettings, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, limits.max_body_bytes, limits.body_timeout_seconds)
        except Refused as refusal:
            return await _refuse_early(refusal, scope, receive, send)
        except ClientLeft:
            logger.info("%s: the client disconnected before its request was whole", request_line(scope))
            return
        await self.app(scope, replay(body, receive), send)


async def _refuse_early(refusal: Refused, scope: Scope, receive: Receive, send: Send) -> None:
    logger.info("%s answered %d: %s", request_line(scope), refusal.status, refusal)
    await refusal.response()(scope, receive, send)


def _own_routes() -> set[str]:
    """The paths /metrics counts by name: the endpoints, the mounted routes, BentoML's own."""
    apis = {method.route for method in service_definition.apis.values()}
    return apis | {route.path for route in admin_routes} | HEALTH_PATHS | {"/", "/docs.json", "/schema.json"}


# Added outermost first: the metrics see every answer the Gate gives.
service_definition.add_asgi_middleware(HttpMetrics, routes=_own_routes())
service_definition.add_asgi_middleware(Gate)
