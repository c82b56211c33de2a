"""Fixtures of the integration layer that need a local server: the real Redis, for the production
online store (skipped when none runs on 127.0.0.1:6379)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from custlens.settings import FeastSettings
from tests.support.databases import REDIS_ADDRESS, REDIS_HOST, REDIS_PORT, skip_without_redis


@pytest.fixture()
def redis_feast() -> Iterator[FeastSettings]:
    """Feast settings for the local Redis, under a project of this test's own (its keys removed after)."""
    skip_without_redis("the production online store")
    import redis

    project = f"test_{uuid.uuid4().hex[:10]}"
    yield FeastSettings(project=project, online_store="redis", redis_connection_string=REDIS_ADDRESS)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
        client.delete(key)
