"""The service as a test waits for it: `custlens serve` started in a subprocess on a free port,
and a readiness wait that watches the process — ready when /readyz answers 200, a failure at once
(with the server's log) when the process exits first, and a failure after a bound only so generous
that a loaded machine never reaches it (a fixed 90 s ran out while the server was still starting)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from custlens.settings import PROJECT_ROOT

READY_TIMEOUT = 600.0  # seconds: a safety net for a hung start, not a measure of a slow one
POLL_SECONDS = 0.2
STOP_TIMEOUT = 30.0
LOG_TAIL = 4000  # characters of the server log shown when it did not start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]


def wait_until_ready(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    what: str = "the service",
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll `ready()` until it is true. A transport error counts as not ready yet (the server may
    not listen yet); `process` exiting fails at once, showing the end of `log`."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and (status := process.poll()) is not None:
            pytest.fail(f"{what} exited with status {status} before it was ready; its log ends:\n{log_tail(log)}")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was not ready after {timeout:.0f} s; its log ends:\n{log_tail(log)}")
        time.sleep(POLL_SECONDS)


def readyz(url: str) -> Callable[[], bool]:
    """A readiness probe of the service at `url` (a slow answer is retried, not a failure)."""
    return lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200


@contextmanager
def custlens_serve(env: Mapping[str, str], log: Path, timeout: float = READY_TIMEOUT) -> Iterator[str]:
    """`custlens serve` with these extra environment variables, on a free port, once ready: its
    URL. Stopped afterwards, with every worker BentoML started (they share its process group)."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "custlens"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(readyz(url), process, log, what=f"`{' '.join(command[1:])}`", timeout=timeout)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (BentoML stops its workers), SIGKILL if it lingers."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(process.pid, signum)  # (the group outlives its leader while a worker is left)
