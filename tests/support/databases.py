"""The production stores the tests use when they are there: Redis (the online store) and
PostgreSQL (the Feast registry, the batch sink) on 127.0.0.1. Whether each answers, and a skip
that says what goes untested and how to start the server when it does not."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_ADDRESS = f"{REDIS_HOST}:{REDIS_PORT}"  # Feast's redis_connection_string
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
POSTGRES_URL = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"  # user postgres, no password

START_REDIS = "start one: `redis-server`, or `docker run -p 6379:6379 redis`"
START_POSTGRES = (
    "start one with a database `test` that user postgres reaches without a password: "
    "`docker run -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres`"
)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_is_running() -> bool:
    return _listening(REDIS_HOST, REDIS_PORT)


def postgres_is_running() -> bool:
    return _listening(POSTGRES_HOST, POSTGRES_PORT)


def redis_unavailable() -> str | None:
    """Why the Redis tests cannot run here, or None when the server answers a PING."""
    if not redis_is_running():
        return f"no Redis server on {REDIS_ADDRESS}"
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5).ping()
    except redis.RedisError as exc:
        return f"the server on {REDIS_ADDRESS} does not answer as Redis ({exc})"
    return None


def postgres_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when the test database takes a connection."""
    if not postgres_is_running():
        return f"no PostgreSQL server on {POSTGRES_HOST}:{POSTGRES_PORT}"
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT} refused {POSTGRES_URL} ({str(exc).strip()})"
    return None


def skip_without_redis(untested: str) -> None:
    """Skip the calling test (or fixture) when Redis is not there, naming what goes untested."""
    if (reason := redis_unavailable()) is not None:
        pytest.skip(f"{reason}: {untested} is not tested ({START_REDIS})")


def skip_without_postgres(untested: str) -> None:
    """Skip the calling test (or fixture) when the PostgreSQL test database is not there."""
    if (reason := postgres_unavailable()) is not None:
        pytest.skip(f"{reason}: {untested} is not tested ({START_POSTGRES})")


def postgres_schema_url(prefix: str) -> Iterator[str]:
    """The test database's URL searching a schema of our own (`<prefix>_<random>`), dropped afterwards;
    a generator for fixtures. Skips when PostgreSQL is not there."""
    skip_without_postgres("the postgresql sink")
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
