"""The readiness wait of tests/support/server.py, on stand-in processes: it returns once ready,
retries a server that does not listen yet, and fails at once, with the log, when the process
exits first (rather than after its bound, as a fixed wait on a dead server did)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import stop, wait_until_ready


def test_returns_once_the_probe_says_ready_and_retries_transport_errors() -> None:
    answers: list[bool | Exception] = [httpx.ConnectError("refused"), False, True]
    remaining = iter(answers)

    def probe() -> bool:
        answer = next(remaining)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_until_ready(probe)

    assert next(remaining, None) is None  # asked until ready, not once more


def test_a_process_that_exits_before_ready_fails_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", "print('port 3000 is in use'); raise SystemExit(3)"],
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    process.wait()

    with pytest.raises(pytest.fail.Exception, match=r"(?s)exited with status 3 .*port 3000 is in use"):
        wait_until_ready(lambda: False, process, log, what="the stand-in")


def test_a_server_that_never_gets_ready_fails_after_the_bound_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text("still loading models\n", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        with pytest.raises(pytest.fail.Exception, match=r"(?s)not ready after 0 s.*still loading models"):
            wait_until_ready(lambda: False, process, log, what="the stand-in", timeout=0.0)
        assert process.poll() is None  # the wait gave up on a live process: the bound, not an exit
    finally:
        stop(process)
    assert process.returncode is not None
