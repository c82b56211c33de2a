"""The model registry: a trained bundle logged and registered as a new version, the current
@champion re-scored on a run's test rows, the promotion gate, and the aliases. A version becomes
@champion because it beat its baselines and the champion on the same test rows by the configured
margin; a version that did not becomes @challenger, so it can still be compared. The MLflow
connection and the registered names belong to `training.tracking`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from custlens.settings import Settings
from training.evaluation import PRIMARY_METRIC, beats
from training.frames import CATEGORY_FEATURES, ModelFrame, feature_matrix
from training.packaging import BUNDLE_FILE, CustlensModel, ModelBundle, SegmentsBundle, SegmentsModel
from training.specs import ModelSpec
from training.tracking import connect, registered_name

CHAMPION = "champion"
CHALLENGER = "challenger"  # the latest version that did not pass the gate, so it can still be compared


def register(model: str, bundle: ModelBundle, test: pd.DataFrame) -> str:
    """Log the bundle as the active run's pyfunc model and register it; returns the new version."""
    # numbers as float64: an integer column in the signature would refuse a missing value later
    example = feature_matrix(test.head(5), bundle.categories)
    for name in CATEGORY_FEATURES:
        example[name] = example[name].astype("object")
    with tempfile.TemporaryDirectory() as folder:
        path = bundle.save(Path(folder))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CustlensModel(),
            artifacts={"bundle": str(path)},
            # named, not inferred: inference imports the model in a subprocess (10 s per model)
            pip_requirements=requirements(),
            signature=ModelSignature(input_schema(bundle), infer_signature(example, bundle.predict(example)).outputs),
            input_example=example,
            registered_model_name=registered_name(model),
        )
    return str(info.registered_model_version)


def register_segments(bundle: SegmentsBundle, example: pd.DataFrame) -> str:
    """The same for the segments: their inputs are plain numbers, so the signature is inferred."""
    with tempfile.TemporaryDirectory() as folder:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SegmentsModel(), artifacts={"segments": str(bundle.save(Path(folder)))},
            signature=infer_signature(example, bundle.predict(example)), input_example=example,
            pip_requirements=requirements(), registered_model_name=registered_name("segments"),
        )  # fmt: skip
    return str(info.registered_model_version)


def input_schema(bundle: ModelBundle) -> Schema:
    """Numbers as optional doubles, categories as optional strings: written out, not inferred from a
    few example rows (a category NULL in all of them would be inferred as a double)."""
    return Schema([ColSpec("string" if name in CATEGORY_FEATURES else "double", name, required=False)
                   for name in bundle.features])  # fmt: skip


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn")]


def champion_metrics(settings: Settings, spec: ModelSpec, frame: ModelFrame) -> tuple[str | None, dict[str, float]]:
    """The current champion re-scored on this run's test rows: a fair comparison on the same window.
    (None, {}) when the model has no champion yet."""
    client = connect(settings)
    name = registered_name(spec.name)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, {}
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=folder)
        bundle = ModelBundle.load(next(Path(local).rglob(BUNDLE_FILE)))
    test = frame.part("test")
    return str(version.version), spec.test_metrics(spec.labels(test), spec.scores(bundle.predict(test)))


def decide(
    model: str,
    metrics: dict[str, float],
    champion_version: str | None,
    champion: dict[str, float],
    baselines: dict[str, dict[str, float]],
    margin: float,
) -> tuple[bool, str]:
    """The gate: (promoted, the reason in words). A candidate must beat every baseline (ties pass)
    and, when there is one, the champion by at least `margin` on the model's primary metric."""
    key, _ = PRIMARY_METRIC[model]
    for name, baseline in baselines.items():
        if not beats(metrics, baseline, model, 0.0):
            return False, f"not promoted: {key} {metrics[key]:.4f} does not beat baseline {name} ({baseline[key]:.4f})"
    if champion_version is None:
        return True, f"promoted: first model, {key} {metrics[key]:.4f}, beats every baseline"
    if not beats(metrics, champion, model, margin):
        return False, (
            f"not promoted: {key} {metrics[key]:.4f} vs champion v{champion_version} {champion[key]:.4f} "
            f"on the same test rows (margin {margin})"
        )
    return (
        True,
        f"promoted: {key} {metrics[key]:.4f} beats champion v{champion_version} ({champion[key]:.4f}) by >= {margin}",
    )


def set_alias(settings: Settings, model: str, version: str, promoted: bool, decision: str) -> None:
    """@champion for a version that passed the gate, @challenger for one that did not; the reason as a tag."""
    client = connect(settings)
    client.set_registered_model_alias(registered_name(model), CHAMPION if promoted else CHALLENGER, version)
    client.set_model_version_tag(registered_name(model), version, "promotion", decision)
