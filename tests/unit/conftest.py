"""Fixtures of the unit layer that need a local server: the real Redis, for the production
online store (skipped when none runs on 127.0.0.1:6379)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from custlens.settings import FeastSettings


def redis_is_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture()
def redis_feast() -> Iterator[FeastSettings]:
    """Feast settings for the local Redis, under a project of this test's own (its keys removed after)."""
    if not redis_is_running():
        pytest.skip("no Redis server on 127.0.0.1:6379 (start one to test the production online store)")
    import redis

    project = f"test_{uuid.uuid4().hex[:10]}"
    yield FeastSettings(project=project, online_store="redis", redis_connection_string="127.0.0.1:6379")
    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
        client.delete(key)
