"""The online service: in-process (BentoML's ASGI app under Starlette's TestClient) and over real
HTTP (`custlens serve` in a subprocess); unknown ids, auth, every bad input as a 4xx, the same
scores as the Scorer, hot reload of a new champion, and a schemathesis run over the OpenAPI schema."""

from __future__ import annotations

import shutil
import threading
import time
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
    first, nobody, second = body["results"]
    assert [first["customer_id"], nobody["customer_id"], second["customer_id"]] == [ids[0], "C-nobody", ids[1]]
    for known in (first, second):
        assert known["known"] is True and known["feature_time"]
        assert set(SCORE_COLUMNS) <= set(known) and 1 <= len(known["churn_reasons"]) <= 3
        assert 0 <= known["churn_probability"] <= 1 and known["churn_risk"] in ("low", "medium", "high")
        # money comes with its unit, in the unit's minor units (the sample's VND has none)
        assert known["currency"] == "VND" and known["predicted_clv_12m"] == round(known["predicted_clv_12m"])
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
    as_of = datetime.fromisoformat(body["scored_at"])
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
        assert ref["registered_model"] == registered_name(model) and ref["feature_service"] == f"{model}_v1"


def test_metrics_count_scored_customers(client: TestClient) -> None:
    client.post("/score", json={"customer_ids": ["C-nobody"]}, headers=AUTH)
    metrics = client.get("/metrics").text
    assert 'custlens_customers_scored_total{known="false"}' in metrics
    assert "bentoml_service_request_total" in metrics


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
    ],
)
def test_bad_input_is_a_4xx_with_a_message(client: TestClient, path: str, body: Any, words: str) -> None:
    answer = client.post(path, json=body, headers=AUTH)
    assert 400 <= answer.status_code < 500, answer.text
    assert words in answer.text


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    answer = client.post("/score", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.text


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
def server(project: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`custlens serve` on a free port, over the shared project (read-only: polling off)."""
    with custlens_serve(service_env(project), tmp_path_factory.mktemp("serve") / "serve.log") as url:
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
