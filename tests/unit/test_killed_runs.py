"""Runs that a killed process left RUNNING: who started a run (host and pid) decides whether it is
gone, and the next `custlens train` marks such runs KILLED in MLflow, leaving those of a live
process or of another host alone. (The manifest's side is in test_sinks, `custlens score`'s in
tests/service/test_batch.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custlens.runs import RunOwner
from custlens.settings import Settings
from tests.support.run_holder import holding
from training.tracking import HOST_TAG, KILLED_TAG, PID_TAG, connect, end_killed_runs, use_experiment
from training.train import train_all


def test_this_process_is_not_gone() -> None:
    assert not RunOwner.here().is_gone(datetime.now(UTC))


def test_a_process_killed_and_reaped_is_gone_and_so_is_one_killed_but_not_yet_reaped() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    owner = RunOwner(socket.gethostname(), process.pid)
    assert not owner.is_gone(datetime.now(UTC))  # a run it began just now
    process.kill()
    try:
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # ended, and left a zombie until reaped
        assert owner.is_gone()
    finally:
        process.wait()
    assert owner.is_gone()


def test_a_pid_taken_by_a_process_started_after_the_run_is_gone() -> None:
    # this process started after a run of a day ago: its pid is another process's now
    assert RunOwner(socket.gethostname(), os.getpid()).is_gone(datetime.now(UTC) - timedelta(days=1))


def test_a_process_of_another_host_is_never_taken_for_gone() -> None:
    assert not RunOwner("another-host", 2**22 + 1).is_gone(datetime.now(UTC))


@pytest.fixture
def tracked(settings: Settings, tmp_path: Path) -> Settings:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    return settings.model_copy(update={"training": settings.training.model_copy(update={"tracking_uri": uri})})


def test_the_next_train_marks_the_runs_of_a_killed_process_killed_and_leaves_the_others(tracked: Settings) -> None:
    uri = tracked.training.tracking_uri
    assert uri is not None
    # given a training run (with a nested trial) of a process killed outright, a scoring run of a
    # process still running, and a run of another host
    with holding("--tracking", uri, "--experiment", "churn") as killed, \
            holding("--tracking", uri, "--experiment", "batch-scoring") as alive:  # fmt: skip
        killed.kill()
        client = connect(tracked)
        elsewhere = client.create_run(
            use_experiment(tracked, "churn"), tags={HOST_TAG: "another-host", PID_TAG: str(killed.pid)}
        ).info.run_id
        # when `custlens train` starts (here with no model to train)
        train_all(tracked, [])
        runs = (killed.run_id, killed.nested_run_id, alive.run_id, alive.nested_run_id, elsewhere)
        status = {run_id: client.get_run(run_id).info.status for run_id in runs}
    # then the killed process's runs are KILLED, saying why, and the others still run
    assert status == {killed.run_id: "KILLED", killed.nested_run_id: "KILLED", alive.run_id: "RUNNING",
                      alive.nested_run_id: "RUNNING", elsewhere: "RUNNING"}  # fmt: skip
    reason = f"killed: process {killed.pid} on {socket.gethostname()} is gone"
    assert client.get_run(killed.run_id).data.tags[KILLED_TAG] == reason
    assert client.get_run(killed.run_id).data.tags[HOST_TAG] == socket.gethostname()
    # and a second start finds nothing more to mark
    assert end_killed_runs(tracked) == []
