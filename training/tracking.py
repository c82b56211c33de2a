"""Where MLflow keeps runs and models: by default a SQLite store and local artifacts in `mlruns/`
at the project root; a tracking server when the config names one. Set up by the entry point
that trains or scores, never at import."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from custlens.settings import PROJECT_ROOT, Settings

EXPERIMENT_PREFIX = "custlens"


def tracking_uri(settings: Settings) -> str:
    return settings.training.tracking_uri or f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


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
