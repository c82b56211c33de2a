"""The online service: in-process (BentoML's ASGI app under Starlette's TestClient) and over real
HTTP (`custlens serve` in a subprocess); unknown ids, auth, every bad input as a 4xx, the same
scores as the Scorer, hot reload of a new champion, a schemathesis run over the OpenAPI schema,
and a service that stays up: bounded metrics, quiet logs, body limits, slow clients let go, and a
short soak under the load that used to stall it."""

from __future__ import annotations

import logging
import random
import re
import shutil
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from custlens.settings import Settings
from features.model_inputs import service_spec
from features.online import OnlineFeatures
from features.snapshot_reader import load_packed_snapshot
from serving.scorer import SCORE_COLUMNS, Scorer
from tests.support.server import custlens_serve, wait_until_ready
from tests.support.trained import trained_project
from training.tracking import connect, registered_name

AUTH = {"Authorization": "Bearer test-key"}
MODELS = ("churn", "repurchase", "clv", "segments")
# A bound for a reload that never comes, not a measure of a slow one (the poll is every 0.3 s).
RELOAD_BOUND_SECONDS = 600
# The real server's limits, small so that the tests reach them quickly (see `server`).
HTTP_MAX_IN_FLIGHT = 4
HTTP_READ_TIMEOUT = 2.0  # header and body, seconds
GENEROUS = 60.0  # seconds: only a server that never answers makes a test wait this long


def service_env(settings: Settings, tracking_uri: str | None = None, poll_seconds: float = 0.0) -> dict[str, str]:
    """The CUSTLENS_* variables that make a service worker load these settings."""
    assert settings.api_keys is not None and settings.pii_salt is not None
    return {
        "CUSTLENS_DATA_DIR": str(settings.data_dir),
        "CUSTLENS_API_KEYS": settings.api_keys.get_secret_value(),
        "CUSTLENS_PII_SALT": settings.pii_salt.get_secret_value(),
        "CUSTLENS_TRAINING__TRACKING_URI": tracking_uri or str(settings.training.tracking_uri),
        "CUSTLENS_SERVING__RELOAD_POLL_SECONDS": str(poll_seconds),
        "CUSTLENS_SERVING__WORKERS": "1",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    return trained_project(tmp_path_factory, worker_id)


@pytest.fixture(scope="module")
def tracking_copy(project: Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the shared project's tracking DB that this module may promote models in."""
    source = Path(str(project.training.tracking_uri).removeprefix("sqlite:///"))
    copy = tmp_path_factory.mktemp("tracking") / "mlflow.db"
    shutil.copy(source, copy)
    return f"sqlite:///{copy}"


@pytest.fixture(scope="module")
def served(project: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shared project seen through a data folder of its own: the lake, features and Feast
    linked, plus the KPI cube (which the shared project does not build) made here."""
    from features.kpis import build_kpi_cube

    data_dir = tmp_path_factory.mktemp("served-data")
    for name in ("lake", "features", "feast", "sample"):
        (data_dir / name).symlink_to(project.data_dir / name)
    settings = project.model_copy(update={"data_dir": data_dir})
    build_kpi_cube(settings)
    return settings


@pytest.fixture(scope="module")
def client(served: Settings, tracking_copy: str) -> Iterator[TestClient]:
    """The service in-process, over the tracking copy, polling the registry every 0.3 s."""
    from serving.service import Custlens

    with pytest.MonkeyPatch.context() as patch:
        for name, value in service_env(served, tracking_copy, poll_seconds=0.3).items():
            patch.setenv(name, value)
        with TestClient(Custlens.to_asgi(), raise_server_exceptions=False) as test_client:
            wait_until_ready(lambda: test_client.get("/readyz").status_code == 200, what="the in-process service")
            yield test_client


@pytest.fixture(scope="module")
def ids(project: Settings) -> list[str]:
    return load_packed_snapshot(project).customer_ids[:50]


# ---------------------------------------------------------------------------------------------
# Scores


def test_known_ids_get_every_score_and_unknown_ids_none(client: TestClient, ids: list[str]) -> None:
    answer = client.post("/score", json={"customer_ids": [ids[0], "C-nobody", ids[1]], "reasons": True}, headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["model_versions"]) == set(MODELS) and body["model_alias"] == "champion"
    assert set(body["windows"]) == {"churn_days", "repurchase_days", "clv_days"}
    first, nobody, second = body["results"]
    assert [first["customer_id"], nobody["customer_id"], second["customer_id"]] == [ids[0], "C-nobody", ids[1]]
    for known in (first, second):
        assert known["known"] is True and known["feature_time"]
        assert set(SCORE_COLUMNS) <= set(known) and 1 <= len(known["churn_reasons"]) <= 3
        assert 0 <= known["churn_probability"] <= 1 and known["churn_risk"] in ("low", "medium", "high")
        # money comes with its unit, in the unit's minor units (the sample's VND has none)
        assert known["currency"] == "VND" and known["predicted_clv"] == round(known["predicted_clv"])
        # and its P10-P90 range (P10 <= P90; the mean itself may lie outside a zero-heavy range)
        low, high = known["predicted_clv_p10"], known["predicted_clv_p90"]
        assert low is not None and high is not None and low <= high and high == round(high)
    assert nobody == {"customer_id": "C-nobody", "source": None, "source_customer_id": None, "known": False}


def test_source_ids_are_resolved_through_the_crosswalk_and_answered_with_both(
    client: TestClient, project: Settings
) -> None:
    import pyarrow.parquet as pq

    crosswalk = pq.read_table(project.lake_dir / "crosswalk.parquet").to_pylist()[:3]
    pairs = [{"source": row["source"], "source_customer_id": row["source_customer_id"]} for row in crosswalk]
    pairs.append({"source": "crm", "source_customer_id": "CRM-unknown"})
    body = client.post("/score", json={"customers": pairs}, headers=AUTH).json()
    assert len(crosswalk) == 3 and len(body["results"]) == 4
    for row, result in zip(crosswalk, body["results"], strict=False):
        assert (result["source"], result["source_customer_id"]) == (row["source"], row["source_customer_id"])
        assert result["customer_id"] == row["customer_id"]
    assert body["results"][-1] == {
        "customer_id": None, "source": "crm", "source_customer_id": "CRM-unknown", "known": False,
    }  # fmt: skip
    assert "churn_reasons" not in body["results"][0]


def test_online_scores_equal_the_scorers_for_the_same_features(
    client: TestClient, project: Settings, ids: list[str]
) -> None:
    body = client.post("/score", json={"customer_ids": ids}, headers=AUTH).json()
    # the shared project's data ended long ago: the answer is as of its snapshot, not of the request
    as_of = datetime.fromisoformat(body["as_of"])
    snapshot_time = datetime.fromisoformat(body["results"][0]["feature_time"])
    assert as_of == snapshot_time < datetime.fromisoformat(body["scored_at"])
    scorer = Scorer.from_registry(project)
    expected = scorer.score(OnlineFeatures(project).features_frame(ids, scorer.inputs, as_of), as_of)
    for column in SCORE_COLUMNS:
        served = [result[column] for result in body["results"]]
        wanted = expected[column].tolist()
        if expected[column].dtype.kind == "f":
            np.testing.assert_array_equal(np.array(served, dtype=float), wanted, err_msg=column)
        else:
            assert served == [v.isoformat() if hasattr(v, "isoformat") else v for v in wanted], column


# ---------------------------------------------------------------------------------------------
# Auth, health, metadata, metrics


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-key"}, {"Authorization": "Basic test-key"}],
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/score"), ("POST", "/kpis"), ("GET", "/metadata"),
                                              ("POST", "/admin/reload")])  # fmt: skip
def test_protected_endpoints_need_a_valid_key(
    client: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    answer = client.request(method, path, json={"customer_ids": ["x"]}, headers=headers)
    assert answer.status_code == 401
    assert "API key" in answer.json()["error"] and answer.headers["www-authenticate"] == "Bearer"


def test_every_configured_key_is_accepted_and_health_stays_open(client: TestClient) -> None:
    assert client.post("/score", json={"customer_ids": ["x"]}, headers={"Authorization": "Bearer other-key"}).is_success
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_metadata_names_models_versions_runs_and_feature_services(client: TestClient) -> None:
    body = client.get("/metadata", headers=AUTH).json()
    assert set(body["models"]) == set(MODELS)
    for model, ref in body["models"].items():
        assert ref["alias"] == "champion" and ref["run_id"] and ref["version"]
        # the service each model was trained with: what features/model_inputs.py says the next training reads
        assert ref["registered_model"] == registered_name(model)
        assert ref["feature_service"] == service_spec(model).service
    bands = body["churn_risk_thresholds"]  # by rank: quantiles of the served churn version's test scores
    assert 0 < bands["medium"] < bands["high"] < 1 and bands["basis"].startswith("quantiles 0.5 and 0.8")
    assert body["next_order_horizon_days"] == 365
    assert body["clv_range"]["quantiles"] == [0.1, 0.9] and body["clv_range"]["rows"] > 0  # made on held-out rows


def test_metrics_count_scored_customers(client: TestClient) -> None:
    client.post("/score", json={"customer_ids": ["C-nobody"]}, headers=AUTH)
    metrics = client.get("/metrics").text
    assert 'custlens_customers_scored_total{known="false"}' in metrics
    assert 'custlens_http_requests_total{route="/score",status="200"}' in metrics


def test_unknown_paths_share_one_metrics_label_and_never_grow_it(client: TestClient) -> None:
    # given the metrics after one unknown path was asked for
    client.get("/no-such-page")
    before = client.get("/metrics").text
    # when a caller (no key needed) makes up 300 more paths
    for _ in range(300):
        assert client.get(f"/probe-{random.getrandbits(64):x}").status_code == 404
    after = client.get("/metrics").text
    # then they are counted under one label, and the metrics are no longer than before
    assert "probe-" not in after and "no-such-page" not in after
    assert 'custlens_http_requests_total{route="other",status="404"}' in after
    assert len(after.splitlines()) == len(before.splitlines())


def test_scoring_writes_no_warning(client: TestClient, ids: list[str]) -> None:
    # Each /score request wrote a PydanticDeprecatedSince211 warning to stderr: BentoML read
    # `model_fields` off the input instance of an endpoint with separate parameters.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert client.post("/score", json={"customer_ids": ids[:2], "reasons": True}, headers=AUTH).is_success
            assert client.post("/kpis", json={}, headers=AUTH).is_success
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_a_bad_request_is_one_info_line_not_an_error_with_a_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # given requests refused by BentoML's input checks and by the service's own
    not_json: dict[str, Any] = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"json": {"customer_ids": "C1"}}, "POST /score answered 400: customer_ids: Input should be a valid array"),
        (not_json, "POST /score answered 400: Invalid JSON"),
        ({"json": {"customer_ids": []}}, "POST /score answered 400: `customer_ids` is empty"),
    ]
    with caplog.at_level(logging.INFO):
        for request, _ in bad:
            answer = client.post("/score", **{**request, "headers": {**AUTH, **request.get("headers", {})}})
            assert answer.status_code == 400
    # then each is logged once, at INFO, in one line without a traceback
    logged = [r for r in caplog.records if r.name.startswith(("bentoml", "custlens"))]
    assert [r for r in logged if r.levelno >= logging.WARNING or r.exc_info] == []
    lines = [r.getMessage() for r in logged]
    for _, line in bad:
        assert sum(line in logged_line for logged_line in lines) == 1, (line, lines)
    assert all("\n" not in line for line in lines)


# ---------------------------------------------------------------------------------------------
# Bad input: 4xx with a message, never a 500


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/score", {"customer_ids": []}, "empty"),
        ("/score", {"customers": []}, "empty"),
        ("/score", {}, "either"),
        ("/score", {"customer_ids": ["a"], "customers": [{"source": "crm", "source_customer_id": "a"}]}, "either"),
        ("/score", {"customer_ids": ["a"] * 1001}, "at most 1000"),
        ("/score", {"customer_ids": [1, 2]}, "valid string"),
        ("/score", {"customer_ids": "C1"}, "valid array"),
        ("/score", {"customers": [{"source": "crm"}]}, "required"),
        ("/score", {"customers": [["crm", "1"]]}, "an object"),
        ("/score", {"customer_ids": ["a"], "reasons": "maybe"}, "valid boolean"),
        ("/score", [1], "object"),
        ("/kpis", {"by": "planet"}, "'month', 'week', 'channel', 'city', 'segment' or 'behaviour'"),
        ("/kpis", {"from": "2026-02-30", "to": "2026-03-01"}, "valid date"),
        ("/kpis", {"from": "yesterday", "to": "2026-03-01"}, "valid date"),
        ("/kpis", {"from": "2026-03-01", "to": "2026-01-01"}, "after its end"),
        ("/kpis", {"from": "2026-03-01"}, "both"),
        ("/kpis", {"from": "0440-09-14", "to": "6849-09-14", "by": "week"}, "at most 3,660"),
        ("/kpis", {"from": "9999-12-30", "to": "9999-12-31"}, "after 9899-12-31, the last day"),
        ("/kpis", {"from": "9999-12-01", "to": "9999-12-31", "by": "month"}, "after 9899-12-31, the last day"),
        ("/kpis", {"from": "9999-12-27", "to": "9999-12-31", "by": "week"}, "after 9899-12-31, the last day"),
        ("/kpis", {"from": "0001-01-01", "to": "0001-01-31"}, "before 0100-01-01, the first day"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(client: TestClient, path: str, body: Any, words: str) -> None:
    answer = client.post(path, json=body, headers=AUTH)
    assert 400 <= answer.status_code < 500, answer.text
    assert words in answer.text


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    answer = client.post("/score", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.text


def test_a_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    # given 2 MB of JSON, over the default 1 MiB limit, with its length and as a chunked stream
    body = b'{"customer_ids": ["' + b"C" * 2_000_000 + b'"]}'
    headers = {**AUTH, "Content-Type": "application/json"}
    declared = client.post("/score", content=body, headers=headers)
    chunked = client.post("/score", content=iter([body[i : i + 65_536] for i in range(0, len(body), 65_536)]),
                          headers=headers)  # fmt: skip
    # then both are refused with a message saying the limit
    assert declared.status_code == 413 and f"{len(body):,} bytes; at most 1,048,576" in declared.json()["error"]
    assert chunked.status_code == 413 and "over 1,048,576 bytes" in chunked.json()["error"]
    assert client.post("/score", json={"customer_ids": ["C-nobody"]}, headers=AUTH).is_success  # and nothing else


def test_kpis_equal_the_cli(client: TestClient, served: Settings) -> None:
    import json
    from datetime import date

    from features.kpis import kpis

    body = client.post("/kpis", json={"from": "2026-01-01", "to": "2026-03-31", "by": "channel"}, headers=AUTH)
    assert body.status_code == 200
    assert body.json() == json.loads(kpis(served, date(2026, 1, 1), date(2026, 3, 31), "channel").to_json())
    assert client.post("/kpis", json={}, headers=AUTH).json()["groups"] == ["all"]  # the last full month


# ---------------------------------------------------------------------------------------------
# Hot reload


def _promote_a_new_version(tracking_uri: str, project: Settings) -> dict[str, str]:
    """A new version of every model (same artifacts) in the copy, made @champion; its versions."""
    copy = project.model_copy(update={"training": project.training.model_copy(update={"tracking_uri": tracking_uri})})
    registry = connect(copy)
    versions = {}
    for model in MODELS:
        name = registered_name(model)
        current = registry.get_model_version_by_alias(name, "champion")
        new = registry.create_model_version(name, source=current.source, run_id=current.run_id)
        registry.set_registered_model_alias(name, "champion", new.version)
        versions[model] = str(new.version)
    return versions


def test_a_new_champion_is_picked_up_without_a_failed_request(
    client: TestClient, project: Settings, tracking_copy: str, ids: list[str]
) -> None:
    before = client.post("/score", json={"customer_ids": ids[:1]}, headers=AUTH).json()["model_versions"]
    answers: list[tuple[int, dict[str, str] | None]] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            answer = client.post("/score", json={"customer_ids": ids[:3], "reasons": True}, headers=AUTH)
            answers.append((answer.status_code, answer.json().get("model_versions")))

    caller = threading.Thread(target=hammer)
    caller.start()
    try:
        after = _promote_a_new_version(tracking_copy, project)
        deadline = time.monotonic() + RELOAD_BOUND_SECONDS
        while time.monotonic() < deadline and (not answers or answers[-1][1] != after):
            time.sleep(0.1)
    finally:
        done.set()
        caller.join()
    assert {status for status, _ in answers} == {200}
    served = [versions for _, versions in answers]
    assert served[-1] == after != before
    # Models are promoted one after another, so a poll may land between two of them: each model
    # then switches on its own, once, from its old version to its new one, and never back.
    for model in MODELS:
        seen = [versions[model] for versions in served if versions is not None]
        assert set(seen) <= {before[model], after[model]}, model
        switch = seen.index(after[model])
        assert all(version == after[model] for version in seen[switch:]), model


def test_admin_reload_loads_the_new_champion_at_once(client: TestClient, project: Settings, tracking_copy: str) -> None:
    after = _promote_a_new_version(tracking_copy, project)
    answer = client.post("/admin/reload", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["versions"] == after  # (or the poller got there first)
    assert client.get("/metadata", headers=AUTH).json()["models"]["churn"]["version"] == after["churn"]


# ---------------------------------------------------------------------------------------------
# Property-based: every request the OpenAPI schema allows gets an answer below 500


def test_no_request_the_schema_allows_gets_a_5xx(client: TestClient) -> None:
    # Loaded from the served document and called through the module's client: schemathesis's own
    # ASGI transport would run the app's lifespan again and start a second service instance.
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/score", "/kpis"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: schemathesis.Case) -> None:
            response = client.request(**case.as_transport_kwargs(base_url="http://testserver", headers=AUTH))
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()


# ---------------------------------------------------------------------------------------------
# Over real HTTP


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "serve.log"


@pytest.fixture(scope="module")
def server(project: Settings, server_log: Path) -> Iterator[str]:
    """`custlens serve` on a free port, over the shared project (read-only: polling off), with
    small limits on requests in flight and on header and body read times."""
    limits = {
        "CUSTLENS_SERVING__MAX_IN_FLIGHT": str(HTTP_MAX_IN_FLIGHT),
        "CUSTLENS_SERVING__HEADER_TIMEOUT_SECONDS": str(HTTP_READ_TIMEOUT),
        "CUSTLENS_SERVING__BODY_TIMEOUT_SECONDS": str(HTTP_READ_TIMEOUT),
    }
    with custlens_serve({**service_env(project), **limits}, server_log) as url:
        yield url


def test_over_http_the_server_scores_and_guards(server: str, ids: list[str]) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/score", json={"customer_ids": ids[:2]}).status_code == 401
        answer = http.post("/score", json={"customer_ids": [ids[0], "C-nobody"], "reasons": True}, headers=AUTH)
        assert answer.status_code == 200
        first, nobody = answer.json()["results"]
        assert first["known"] and first["churn_reasons"] and nobody["known"] is False
        bad = http.post("/score", json={"customer_ids": []}, headers=AUTH)
        assert bad.status_code == 400 and "empty" in bad.json()["error"]
        assert "custlens_customers_scored_total" in http.get("/metrics").text


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=GENEROUS)
    return connection


def _read_to_the_end(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65_536):
        received += chunk
    return received


def test_slow_clients_are_answered_408_and_let_go_and_a_huge_body_413_at_once(server: str) -> None:
    # given a client that sends half a header, one that sends a header and half its body, and one
    # that announces 200 MB
    head = f"POST /score HTTP/1.1\r\nHost: test\r\nAuthorization: {AUTH['Authorization']}\r\n"
    slow_header, slow_body, huge = _connect(server), _connect(server), _connect(server)
    started = time.monotonic()
    slow_header.sendall(head.encode())
    slow_body.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"customer".encode())
    huge.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n{{".encode())
    # when they send nothing more
    with slow_header, slow_body, huge:
        answers = {name: _read_to_the_end(connection)
                   for name, connection in [("huge", huge), ("header", slow_header), ("body", slow_body)]}  # fmt: skip
    waited = time.monotonic() - started
    # then the huge one is refused without its body; the slow ones get a 408 and their connection
    # closed once the read time-out has run out
    assert answers["huge"].startswith(b"HTTP/1.1 413 ") and b"200,000,000 bytes" in answers["huge"]
    assert answers["header"].startswith(b"HTTP/1.1 408 ") and b"no whole request header" in answers["header"]
    assert answers["body"].startswith(b"HTTP/1.1 408 ") and b"body was not whole" in answers["body"]
    assert HTTP_READ_TIMEOUT <= waited < GENEROUS


def _score_5xx(metrics: str) -> list[str]:
    """The /score series of /metrics that count a 5xx answer other than a 503."""
    samples = [line for line in metrics.splitlines() if not line.startswith("#") and '"/score"' in line]
    return [line for line in samples if re.search(r'="5\d\d"', line) and '"503"' not in line]


def test_a_client_that_disconnects_mid_body_is_one_info_line_and_no_5xx(server: str, server_log: Path) -> None:
    # given a client that sends a header and part of its body
    with _connect(server) as leaving:
        leaving.sendall(b"POST /score HTTP/1.1\r\nHost: test\r\nAuthorization: " + AUTH["Authorization"].encode()
                        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")  # fmt: skip
        time.sleep(0.2)
    # when it has closed its connection, then the log says so in one INFO line, and no 5xx is counted
    line = "POST /score: the client disconnected before its request was whole"
    deadline = time.monotonic() + GENEROUS
    while line not in (log := server_log.read_text(errors="replace")) and "Exception on /score" not in log:
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.1)
    assert "Exception on /score" not in log and "Traceback" not in log, log[-3000:]
    assert [text for text in log.splitlines() if line in text and "[INFO]" in text]
    assert _score_5xx(httpx.get(f"{server}/metrics", timeout=GENEROUS).text) == []


SOAK_SECONDS = 12.0


def test_under_load_health_is_answered_at_once_and_score_is_200_or_a_fast_503(
    server: str, project: Settings
) -> None:
    # given 10 clients asking 1,000 ids each in a loop (waiting Retry-After after a 503) and 2
    # asking one id, on one worker that holds at most HTTP_MAX_IN_FLIGHT of them
    every_id = load_packed_snapshot(project).customer_ids
    until = time.monotonic() + SOAK_SECONDS
    answers: list[tuple[str, int | str, float, httpx.Headers | None]] = []

    def ask(kind: str, size: int) -> None:
        rng = random.Random()
        with httpx.Client(base_url=server, headers=AUTH, timeout=GENEROUS) as http:
            while time.monotonic() < until:
                started = time.monotonic()
                try:
                    answer = http.post("/score", json={"customer_ids": rng.sample(every_id, size)})
                except httpx.HTTPError as error:  # a time-out or a dropped connection
                    answers.append((kind, type(error).__name__, time.monotonic() - started, None))
                    continue
                answers.append((kind, answer.status_code, time.monotonic() - started, answer.headers))
                if answer.status_code == 503:
                    time.sleep(float(answer.headers["Retry-After"]))

    clients = [threading.Thread(target=ask, args=("1,000 ids", 1000)) for _ in range(10)]
    clients += [threading.Thread(target=ask, args=("1 id", 1)) for _ in range(2)]
    for client in clients:
        client.start()
    # when /healthz is asked every 0.1 s meanwhile
    health: list[tuple[int, float]] = []
    with httpx.Client(base_url=server, timeout=GENEROUS) as http:
        while time.monotonic() < until:
            started = time.monotonic()
            health.append((http.get("/healthz").status_code, time.monotonic() - started))
            time.sleep(0.1)
    for client in clients:
        client.join()

    # then /healthz was answered all along, not after the scoring (which takes seconds per answer)
    assert {status for status, _ in health} == {200} and len(health) > SOAK_SECONDS / 2
    assert statistics.quantiles([took for _, took in health], n=10)[-1] < 0.5  # p90, generous
    # every /score answer is a 200 or a 503 with Retry-After, answered at once; no time-out
    statuses = {(kind, status) for kind, status, _, _ in answers}
    assert statuses <= {(kind, status) for kind in ("1,000 ids", "1 id") for status in (200, 503)}, statuses
    assert {("1,000 ids", 200), ("1,000 ids", 503)} <= statuses  # (the one-id askers may find it full each time)
    busy = [(took, headers) for _, status, took, headers in answers if status == 503]
    assert all(headers is not None and headers["Retry-After"] for _, headers in busy)
    scored = [took for _, status, took, _ in answers if status == 200]
    assert statistics.median(took for took, _ in busy) < min(1.0, statistics.median(scored))
    # and the server counted no 5xx
    assert _score_5xx(httpx.get(f"{server}/metrics", timeout=GENEROUS).text) == []
