"""Waiting on a child process, never on the clock alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess


def wait_for(condition: Callable[[], bool], process: BaseProcess, limit: float) -> bool:
    """Whether `condition` came true while `process` ran (within `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.is_alive():
        if condition():
            return True
        time.sleep(0.002)
    return condition()  # a run may have ended between two looks
