"""Where MLflow keeps runs and models: by default a SQLite store and local artifacts in `mlruns/`
at the project root; a tracking server when the config names one. Set up by the entry point
that trains or scores, never at import.

Each top-level run is tagged with the host and pid that run it (its nested runs share them through
their parent), so that the next `custlens train` or `custlens score` marks a run that a killed
process left RUNNING as KILLED (`end_killed_runs`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.entities import Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from custlens.runs import RunOwner
from custlens.settings import Settings

EXPERIMENT_PREFIX = "custlens"
HOST_TAG, PID_TAG = "custlens.host", "custlens.pid"
KILLED_TAG = "custlens.killed"  # why the run was marked KILLED
PARENT_TAG = "mlflow.parentRunId"


def tracking_uri(settings: Settings) -> str:
    """The configured tracking URI, or a SQLite store under the data folder: each data folder
    (`CUSTLENS_DATA_DIR`) has its own runs, registered models and champions, so the models of one
    business never serve another's customers."""
    return settings.training.tracking_uri or f"sqlite:///{settings.data_dir.resolve() / 'mlruns' / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts next to a SQLite store; a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def connect(settings: Settings) -> MlflowClient:
    uri = tracking_uri(settings)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(model: str) -> str:
    return f"{EXPERIMENT_PREFIX}-{model}"


def registered_name(model: str) -> str:
    return f"{EXPERIMENT_PREFIX}-{model}"


def use_experiment(settings: Settings, model: str) -> str:
    """The experiment of one model (created on first use); returns its id."""
    name = experiment_name(model)
    client = MlflowClient(tracking_uri=tracking_uri(settings))
    found = client.get_experiment_by_name(name)
    if found is None:
        root = _artifact_root(tracking_uri(settings))
        experiment_id = client.create_experiment(name, artifact_location=f"{root}/{model}" if root else None)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def start_run(run_name: str) -> mlflow.ActiveRun:
    """`mlflow.start_run` of a top-level run in the current experiment, tagged with its owner."""
    owner = RunOwner.here()
    return mlflow.start_run(run_name=run_name, tags={HOST_TAG: owner.host, PID_TAG: str(owner.pid)})


def end_killed_runs(settings: Settings) -> list[str]:
    """Mark KILLED every RUNNING run of custlens's experiments whose process, on this host, is gone;
    one line for each run marked. Runs of other hosts, of live processes and of no known owner stay."""
    client = connect(settings)
    experiments = client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}-%'")
    if not experiments:
        return []
    running: dict[str, Run] = {}
    token = None
    while True:
        page = client.search_runs([e.experiment_id for e in experiments], "attributes.status = 'RUNNING'",
                                  ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)  # fmt: skip
        running.update((run.info.run_id, run) for run in page)
        token = page.token
        if not token:
            break
    marked = []
    for run in running.values():
        owner = _owner(client, run, running)
        started = datetime.fromtimestamp(run.info.start_time / 1000, UTC) if run.info.start_time else None
        if owner is None or not owner.is_gone(started):
            continue
        client.set_tag(run.info.run_id, KILLED_TAG, owner.killed_reason())
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        marked.append(f"MLflow run {run.info.run_id} ({run.info.run_name}) marked KILLED: {owner.killed_reason()}")
    return marked


def _owner(client: MlflowClient, run: Run, running: dict[str, Run]) -> RunOwner | None:
    """The host and pid on the run, or on its nearest parent that has them; None when none has."""
    seen = set()
    while run.info.run_id not in seen:
        seen.add(run.info.run_id)
        tags = run.data.tags
        if HOST_TAG in tags and tags.get(PID_TAG, "").isdigit():
            return RunOwner(tags[HOST_TAG], int(tags[PID_TAG]))
        parent_id = tags.get(PARENT_TAG)
        if not parent_id:
            return None
        if parent_id in running:
            run = running[parent_id]
            continue
        try:
            run = client.get_run(parent_id)
        except MlflowException:
            return None  # the parent was deleted
    return None
