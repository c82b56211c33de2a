"""A process that begins a run the way `custlens score` and `custlens train` do, says so on one line
of stdout, and holds it until its stdin closes: the run a test kills (SIGKILL) or keeps alive.

    python -m tests.support.run_holder --sink URI             # a `running` row in the sink's manifest
    python -m tests.support.run_holder --tracking URI --experiment churn   # an MLflow run and a nested one

It prints {"pid": ..., "run_id": ..., "nested_run_id": ...} once the run is recorded, and ends the
run (failed in the manifest, finished in MLflow) when its stdin closes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


Release = Callable[[], None]


def hold_manifest_run(uri: str) -> tuple[dict[str, object], Release]:
    from custlens.runs import RunOwner
    from serving.sinks import FAILED, RUNNING, RunEntry, open_sink

    owner = RunOwner.here()
    entry = RunEntry(run_id=uuid.uuid4().hex, as_of=date(2025, 1, 1), status=RUNNING, scope="all",
                     started_at=datetime.now(UTC), churn_model_version="1", repurchase_model_version="1",
                     clv_model_version="1", segments_model_version="1", host=owner.host, pid=owner.pid)  # fmt: skip
    sink = open_sink(uri)
    sink.check()
    sink.begin(entry)

    def release() -> None:
        sink.abort(replace(entry, status=FAILED, error="released by the test"))
        sink.close()

    return {"pid": owner.pid, "run_id": entry.run_id}, release


def hold_mlflow_run(tracking_uri: str, experiment: str) -> tuple[dict[str, object], Release]:
    import mlflow

    from custlens.settings import load_settings
    from training.tracking import connect, start_run, use_experiment

    base = load_settings()
    settings = base.model_copy(update={"training": base.training.model_copy(update={"tracking_uri": tracking_uri})})
    connect(settings)
    use_experiment(settings, experiment)
    run = start_run(f"{experiment} held")
    nested = mlflow.start_run(run_name="trial 000", nested=True)  # as training's trials and baselines

    def release() -> None:
        mlflow.end_run()  # the nested run
        mlflow.end_run()

    return {"pid": os.getpid(), "run_id": run.info.run_id, "nested_run_id": nested.info.run_id}, release


@dataclass
class Held:
    process: subprocess.Popen[str]
    pid: int
    run_id: str
    nested_run_id: str | None

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone (reaped: no zombie left)."""
        self.process.kill()
        self.process.wait()


@contextmanager
def holding(*args: str) -> Iterator[Held]:
    """A holder process with a run begun (see the module's doc); ended at the end if still alive."""
    command = [sys.executable, "-m", "tests.support.run_holder", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line, f"the holder ended before holding a run (exit status {process.wait()})"
        held = json.loads(line)
        yield Held(process, held["pid"], held["run_id"], held.get("nested_run_id"))
    finally:
        if process.poll() is None:
            process.stdin.close()
            process.wait()
        process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sink")
    parser.add_argument("--tracking")
    parser.add_argument("--experiment", default="churn")
    args = parser.parse_args()
    held, release = hold_manifest_run(args.sink) if args.sink else hold_mlflow_run(args.tracking, args.experiment)
    print(json.dumps(held), flush=True)
    sys.stdin.read()  # until the test closes it, or kills us
    release()


if __name__ == "__main__":
    main()
