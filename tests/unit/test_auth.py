"""The API-key check (serving/auth.py): only `Authorization: Bearer <configured key>` opens the
protected paths, and the refusal is a 401 that tells the client how to authenticate."""

from __future__ import annotations

import json

import pytest
from starlette.types import Scope

from serving.auth import PROTECTED_PATHS, authorized, unauthorized

KEYS = frozenset({"first-key", "second-key"})


def request(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "path": "/score", "headers": list(headers)}


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode("latin-1"))


def test_a_configured_key_is_let_in() -> None:
    assert authorized(request(bearer("first-key")), KEYS)


def test_every_configured_key_is_let_in() -> None:
    assert all(authorized(request(bearer(key)), KEYS) for key in KEYS)


def test_an_unknown_key_is_refused() -> None:
    assert not authorized(request(bearer("first-keyX")), KEYS)
    assert not authorized(request(bearer("first")), KEYS)


def test_a_request_without_an_authorization_header_is_refused() -> None:
    assert not authorized(request(), KEYS)
    assert not authorized(request((b"x-api-key", b"first-key")), KEYS)


@pytest.mark.parametrize("value", [b"Basic first-key", b"first-key", b"Bearer", b"Bearer ", b"Token first-key"])
def test_another_scheme_or_an_empty_token_is_refused(value: bytes) -> None:
    assert not authorized(request((b"authorization", value)), KEYS)


def test_the_scheme_is_case_insensitive_and_the_token_trimmed() -> None:
    assert authorized(request((b"authorization", b"bearer first-key")), KEYS)
    assert authorized(request((b"authorization", b"BEARER  second-key ")), KEYS)


def test_no_configured_key_lets_nobody_in() -> None:
    assert not authorized(request(bearer("first-key")), frozenset())
    assert not authorized(request(bearer("")), frozenset())


def test_the_refusal_is_a_401_asking_for_a_bearer_key() -> None:
    response = unauthorized()

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in json.loads(bytes(response.body))["error"]


def test_scoring_and_admin_paths_are_protected_and_health_is_open() -> None:
    assert {"/score", "/kpis", "/metadata", "/admin/reload"} <= PROTECTED_PATHS
    assert not {"/healthz", "/readyz", "/metrics", "/docs"} & PROTECTED_PATHS
