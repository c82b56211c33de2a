"""Who may call the service: the paths that need an API key (`Authorization: Bearer <key>`), the
constant-time check of a request's key against the configured ones, and the 401 answer."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

# Paths that need `Authorization: Bearer <key>`; health, metrics and the API docs stay open.
PROTECTED_PATHS = frozenset({"/score", "/kpis", "/metadata", "/admin/reload"})


def authorized(scope: Scope, keys: frozenset[str]) -> bool:
    """Whether the request's `Authorization: Bearer <key>` holds one of `keys` (none: nobody is)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return False
            given = token.strip().encode()
            # every key compared, so the time taken says nothing about which one nearly matched
            return sum(hmac.compare_digest(given, key.encode()) for key in keys) > 0
    return False


def unauthorized() -> Response:
    """The answer to a request for a protected path without a configured key."""
    return JSONResponse(
        {"error": "missing or unknown API key; send `Authorization: Bearer <key>`"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
