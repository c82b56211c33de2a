"""The model registry: a trained bundle logged and registered as a new version, the current
@champion re-scored on a run's test rows, the promotion gate, the aliases, and the versions as
`custlens models` lists them and `custlens promote` sets them by hand. A version becomes @champion
because, on the same test rows, the 95% paired-bootstrap interval of its gain over the champion
and over every baseline lies above the configured margin and no guard metric is materially worse;
a version that did not becomes @challenger, so it can still be compared. The MLflow connection and
the registered names belong to `training.tracking`."""

from __future__ import annotations

import getpass
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from custlens.errors import CustlensError
from custlens.settings import Settings, TrainingSettings
from features.model_inputs import spec_of_service
from training import bootstrap
from training.baselines.servable import BASELINE_KIND, BaselineBundle, BaselineModel
from training.evaluation import PRIMARY_METRIC
from training.frames import CATEGORY_FEATURES, ModelFrame, feature_matrix
from training.packaging import BUNDLE_FILE, CustlensModel, ModelBundle, SegmentsBundle, SegmentsModel
from training.specs import ModelSpec
from training.tracking import connect, registered_name

CHAMPION = "champion"
CHALLENGER = "challenger"  # the latest version that did not pass the gate, so it can still be compared


def register(model: str, bundle: ModelBundle, test: pd.DataFrame) -> str:
    """Log the bundle as the active run's pyfunc model and register it; returns the new version."""
    # numbers as float64: an integer column in the signature would refuse a missing value later
    example = feature_matrix(test.head(5), bundle.categories, spec_of_service(bundle.feature_service).inputs)
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


def register_baseline(bundle: BaselineBundle, example: pd.DataFrame) -> str:
    """Log a fitted baseline as the active run's pyfunc model and register it as a version of its
    model's registered model (tags kind=baseline, flavour), so it can be the @champion served."""
    # the test frame of a model need not hold what its baseline reads (the BTYD summary): zeros then
    example = pd.DataFrame({name: pd.to_numeric(example[name], errors="coerce") if name in example else 0.0
                            for name in bundle.features}, index=example.index[:5]).astype("float64")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = bundle.save(Path(folder), BUNDLE_FILE)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=BaselineModel(), artifacts={"bundle": str(path)},
            signature=ModelSignature(Schema([ColSpec("double", name, required=False) for name in bundle.features]),
                                     infer_signature(example, bundle.predict(example)).outputs),
            input_example=example, pip_requirements=requirements(), registered_model_name=registered_name(bundle.model),
        )  # fmt: skip
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()  # the tracking and registry URIs `connect` set
    for key, value in {"kind": BASELINE_KIND, "flavour": bundle.flavour, "fit": bundle.fit_digest()}.items():
        client.set_model_version_tag(registered_name(bundle.model), version, key, value)
    return version


def input_schema(bundle: ModelBundle) -> Schema:
    """Numbers as optional doubles, categories as optional strings: written out, not inferred from a
    few example rows (a category NULL in all of them would be inferred as a double)."""
    return Schema([ColSpec("string" if name in CATEGORY_FEATURES else "double", name, required=False)
                   for name in bundle.features])  # fmt: skip


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn")]


def champion_predictions(
    settings: Settings, spec: ModelSpec, frame: ModelFrame, baselines: dict[str, np.ndarray] | None = None
) -> tuple[str | None, np.ndarray | None]:
    """The current champion re-scored on this run's test rows, one score per row: a fair, paired
    comparison on the same window. A baseline champion is its flavour refitted on this run's data
    (`baselines`: each baseline's scores of the test rows), the baseline the run itself measured.
    (None, None) when the model has no champion yet."""
    client = connect(settings)
    name = registered_name(spec.name)
    version = _champion(client, name)
    if version is None:
        return None, None
    if version.tags.get("kind") == BASELINE_KIND:
        flavour = version.tags.get("flavour", "")
        return (str(version.version), baselines[flavour]) if baselines and flavour in baselines else (None, None)
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}", dst_path=folder)
        bundle = ModelBundle.load(next(Path(local).rglob(BUNDLE_FILE)))
    window = spec.label_window(settings)
    if int(bundle.meta.get("window_days", window)) != window:
        return None, None  # it predicts another window: no comparison on these labels means anything
    return str(version.version), spec.scores(bundle.predict(frame.part("test")))


def serve_best_baseline(
    settings: Settings,
    spec: ModelSpec,
    servables: dict[str, BaselineBundle],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    test: pd.DataFrame,
    runs: dict[str, str],
) -> str:
    """After a candidate lost the gate: the best baseline (primary metric on the test rows) becomes
    @champion, registered as a version of the same model in the run that fitted and measured it
    (`runs`: each baseline's run), unless the current champion is a learned version at least as good
    on these rows (it keeps serving). Returns what serves, in words."""
    key, _ = PRIMARY_METRIC[spec.name]
    measured = {name: metrics[key] for name, metrics in baselines.items() if np.isfinite(metrics.get(key, np.nan))}
    if not measured:
        return ""
    best = max(measured, key=lambda name: measured[name])
    client = connect(settings)
    name = registered_name(spec.name)
    current = _champion(client, name)
    learned = current is not None and current.tags.get("kind") != BASELINE_KIND
    if learned and champion is not None and champion.get(key, -np.inf) >= measured[best]:
        assert current is not None
        return (f"the champion v{current.version} keeps serving ({key} {champion[key]:.4f} >= best baseline "
                    f"{best} {measured[best]:.4f} on these test rows)")  # fmt: skip
    bundle = servables[best]
    if current is not None and current.tags.get("fit") == bundle.fit_digest():
        return f"v{current.version} keeps serving: the same baseline fit"
    decision = (f"champion: baseline {best} ({key} {measured[best]:.4f}), the best on the test rows; no learned "
                "version passed the gate")  # fmt: skip
    version = _crown_baseline(client, bundle, test, decision, run_id=runs[best])
    return f"v{version} serves: baseline {best} ({key} {measured[best]:.4f}) is @champion"


def serve_history_baseline(settings: Settings, spec: ModelSpec, reason: str) -> str:
    """For a model the data cannot train, with no champion: its BTYD baseline fitted on the whole
    history becomes @champion (registered as a version), so the model still serves. Returns what
    serves, in words ("" when nothing can)."""
    from training.baselines import fit_on_history

    client = connect(settings)
    current = _champion(client, registered_name(spec.name))
    if current is not None:
        return f"the champion v{current.version} keeps serving"
    bundle = fit_on_history(settings, spec)
    if bundle is None:
        return ""
    decision = (f"champion: baseline {bundle.flavour} fitted on the whole history ({bundle.window_days}-day window, "
                f"not evaluated on a test window): the learned model cannot train ({reason})")  # fmt: skip
    version = _crown_baseline(client, bundle, pd.DataFrame(index=range(3)), decision, params=bundle.fitted_params())
    return f"v{version} serves: baseline {bundle.flavour}, fitted on the whole history, is @champion"


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The registered model's @champion version, None when it has none."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _crown_baseline(
    client: MlflowClient,
    bundle: BaselineBundle,
    example: pd.DataFrame,
    decision: str,
    run_id: str | None = None,
    params: dict[str, float] | None = None,
) -> str:
    """Register `bundle` and make it @champion with `decision` as its promotion tag; returns the
    version. Registered in the baseline's own run when it has one (`run_id`: its fitted parameters,
    test metrics, figures and predictions are what the version's run shows a reviewer), else in a
    nested run of its own with the fitted parameters it was chosen on; either is tagged served_baseline."""
    own = f"{bundle.model} baseline: {bundle.flavour} (served)"
    with mlflow.start_run(run_id=run_id, nested=True) if run_id else mlflow.start_run(run_name=own, nested=True):
        mlflow.set_tags({"model": bundle.model, "served_baseline": bundle.flavour})
        mlflow.log_params(params or {})
        version = register_baseline(bundle, example)
    name = registered_name(bundle.model)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", decision)
    return version


# What a candidate must not be materially worse on than any incumbent, by the kind of score.
GUARDS: dict[str, tuple[str, ...]] = {
    "probability": ("test_log_loss", "test_calibration_error"),
    "predicted_value": ("test_mae",),
}
_BOOTSTRAPPED: dict[str, bootstrap.WeightedMetric] = {
    **{key: metric for key, (metric, _) in (bootstrap.CLASSIFIER_METRICS | bootstrap.VALUE_METRICS).items()},
    "test_calibration_error": bootstrap.calibration_error,
}
TOTAL_RATIO = "test_total_ratio"


@dataclass(frozen=True)
class Check:
    """One comparison of the gate. `primary`: (candidate - incumbent) on the primary metric, passed
    when its interval's low is above the margin; `guard`: (candidate - incumbent) / incumbent on a
    guard metric (lower is better), failed when its low is above the tolerance; `band`: the
    candidate's total ratio (its interval alone), passed when the value is within the band."""

    kind: Literal["primary", "guard", "band"]
    metric: str  # test_auc, test_log_loss, test_total_ratio
    against: str  # the incumbent: a baseline's name or `champion v3`; empty for the band
    value: float
    low: float
    high: float
    passed: bool
    bound: str  # the margin `0.002`, the tolerance `+10%`, the band `[0.80, 1.25]`

    @property
    def rule(self) -> str:
        """What passing takes: `> 0.002` (the interval's low), `<= +10%` (its low), `in [0.80, 1.25]`."""
        return {"primary": ">", "guard": "<=", "band": "in"}[self.kind] + f" {self.bound}"

    @property
    def name(self) -> str:
        return self.metric.removeprefix("test_").replace("_", " ")

    @property
    def key(self) -> str:
        """MLflow key: gate_diff_vs_bgnbd, gate_log_loss_diff_vs_champion, gate_total_ratio."""
        against = "champion" if self.against.startswith("champion") else self.against
        if self.kind == "primary":
            return f"gate_diff_vs_{against}"
        if self.kind == "guard":
            return f"gate_{self.metric.removeprefix('test_')}_diff_vs_{against}"
        return f"gate_{self.metric.removeprefix('test_')}"

    def shown(self) -> str:
        """`+0.0123 [+0.0050, +0.0190]`, `+12% [+8%, +16%]`, `1.29 [1.20, 1.38]`."""
        if self.kind == "guard":
            return f"{self.value:+.0%} [{self.low:+.0%}, {self.high:+.0%}]"
        if self.kind == "band":
            return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.value:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

    def sentence(self) -> str:
        """What the check found, in words, with its 95% interval."""
        versus = self.against if self.against.startswith("champion") else f"baseline {self.against}"
        if self.kind == "primary":
            found = "above" if self.passed else "not above"
            lower = f"the 95% interval's lower bound is {found} the margin {self.bound}"
            return f"{self.name} {self.shown()} vs {versus}: {lower}"
        if self.kind == "guard":
            found = "within" if self.passed else "materially worse, the 95% interval's lower bound beyond"
            return f"{self.name} {self.shown()} vs {versus}: {found} the tolerance {self.bound}"
        found = "within" if self.passed else "outside"
        return f"total predicted / actual revenue {self.shown()}: {found} training.clv_total_band {self.bound}"


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    decision: str  # `promoted: ...` or `not promoted: ...`, the reason in words
    checks: list[Check] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Each check's value and interval: gate_diff_vs_bgnbd, gate_diff_vs_bgnbd_ci_low, ..."""
        logged: dict[str, float] = {}
        for check in self.checks:
            logged |= {check.key: check.value, f"{check.key}_ci_low": check.low, f"{check.key}_ci_high": check.high}
        return {key: value for key, value in logged.items() if np.isfinite(value)}

    def tags(self) -> dict[str, str]:
        """`promotion` (the decision) and one tag per check: `pass: +0.0123 [+0.0050, +0.0190] > 0.002`."""
        checks = {
            check.key: f"{'pass' if check.passed else 'fail'}: {check.shown()} {check.rule}" for check in self.checks
        }
        return {"promotion": self.decision, **checks}


def decide(
    spec: ModelSpec,
    actual: np.ndarray,
    candidate: np.ndarray,
    incumbents: dict[str, np.ndarray],
    training: TrainingSettings,
) -> GateDecision:
    """The gate, on the same test rows for everyone: promoted only if, against every incumbent (each
    baseline in the spec's order, then `champion vN` when there is one), the lower bound of the 95%
    paired-bootstrap interval of (candidate - incumbent) on the primary metric exceeds
    `training.promotion_margin`, no guard metric is materially worse (`training.guard_tolerance`),
    and a CLV model's total is within `training.clv_total_band`. Every predictor is measured on the
    same resamples of the customers (one row each in a test window), seeded by `training.seed`."""
    checks: list[Check] = []
    primary, larger_is_better = PRIMARY_METRIC[spec.name]
    sign = 1.0 if larger_is_better else -1.0
    margin, tolerance = training.promotion_margin, training.guard_tolerance
    measured = (primary, *GUARDS[spec.output]) + ((TOTAL_RATIO,) if spec.output == "predicted_value" else ())
    # the candidate under a key no incumbent has (they are baseline names and `champion vN`)
    draws = bootstrap.bootstrap({metric: _BOOTSTRAPPED[metric] for metric in measured}, actual,
                                {"": candidate, **incumbents}, training.bootstrap_resamples, training.seed)  # fmt: skip
    ours = draws[""]
    point = spec.test_metrics(actual, candidate)
    for against, predicted in incumbents.items():
        theirs = spec.test_metrics(actual, predicted)
        gain = sign * (ours[primary] - draws[against][primary])
        low, high = bootstrap.interval(gain)
        checks.append(Check("primary", primary, against, sign * (point[primary] - theirs[primary]), low, high,
                            low > margin, f"{margin:g}"))  # fmt: skip
        for metric in GUARDS[spec.output]:
            with np.errstate(divide="ignore", invalid="ignore"):
                base = theirs[metric]
                low, high = (bound / base for bound in bootstrap.interval(ours[metric] - draws[against][metric]))
                # a guard that cannot be measured (an incumbent of 0 error) does not block: NaN is not above
                checks.append(Check("guard", metric, against, (point[metric] - base) / base, low, high,
                                    not low > tolerance, f"{tolerance:+.0%}"))  # fmt: skip
    if spec.output == "predicted_value":
        low_band, high_band = training.clv_total_band
        ratio = point[TOTAL_RATIO]
        low, high = bootstrap.interval(ours[TOTAL_RATIO])
        checks.append(Check("band", TOTAL_RATIO, "", ratio, low, high, bool(low_band <= ratio <= high_band),
                            f"[{low_band:.2f}, {high_band:.2f}]"))  # fmt: skip
    return GateDecision(all(check.passed for check in checks), _decision(checks, primary, margin), checks)


def _decision(checks: list[Check], primary: str, margin: float) -> str:
    failed = [check for check in checks if not check.passed]
    if failed:
        also = [f"{check.name} vs {check.against}" if check.against else check.name for check in failed[1:]]
        return f"not promoted: {failed[0].sentence()}" + (f"; also failed: {', '.join(also)}" if also else "")
    gains = [check for check in checks if check.kind == "primary"]
    name = primary.removeprefix("test_").replace("_", " ")
    if not gains:
        return f"promoted: no baseline or champion to beat on {name}"
    closest = min(gains, key=lambda check: check.low)
    guards = sorted({check.name for check in checks if check.kind != "primary"})
    held = f"; {', '.join(guards)} within bounds" if guards else ""
    return (
        f"promoted: {name} beats every incumbent by more than {margin:g} with 95% confidence "
        f"(closest: {closest.against} {closest.shown()}){held}"
    )


def set_alias(settings: Settings, model: str, version: str, promoted: bool, decision: str,
              gate: dict[str, str] | None = None) -> None:  # fmt: skip
    """@champion for a version that passed the gate, @challenger for one that did not; the reason as a
    tag, and the gate's checks (GateDecision.tags) beside it."""
    client = connect(settings)
    client.set_registered_model_alias(registered_name(model), CHAMPION if promoted else CHALLENGER, version)
    for key, value in {**(gate or {}), "promotion": decision}.items():
        client.set_model_version_tag(registered_name(model), version, key, value)


# Who set @champion by hand, when and why: version tags beside the gate's `promotion`.
PROMOTED_BY, PROMOTED_AT, PROMOTION_REASON = "promoted_by", "promoted_at", "promotion_reason"
KIND_TAG = "kind"  # learned or baseline; a version without it is a learned model


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as `custlens models` lists it."""

    model: str
    version: str
    kind: str
    aliases: tuple[str, ...]
    metric: str  # the primary test metric's key
    value: float  # its value on the version's run (NaN when the run did not measure it)
    decision: str  # the gate's `promotion` tag, and who promoted it by hand, when and why

    def metric_shown(self) -> str:
        """`auc 0.7812`, `normalized_gini -` when the run did not measure it."""
        return f"{self.metric.removeprefix('test_')} {'-' if np.isnan(self.value) else f'{self.value:.4f}'}"

    @classmethod
    def of(cls, client: MlflowClient, model: str, version: ModelVersion) -> VersionSummary:
        key, _ = PRIMARY_METRIC[model]
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        tags = version.tags
        decision = tags.get("promotion", "-")
        if PROMOTED_BY in tags:
            decision += (f"; @{CHAMPION} by hand by {tags[PROMOTED_BY]} at {tags.get(PROMOTED_AT, '?')}: "
                         f"{tags.get(PROMOTION_REASON, '')}")  # fmt: skip
        return cls(model, str(version.version), tags.get(KIND_TAG, "learned"), tuple(sorted(version.aliases)), key,
                   metrics.get(key, float("nan")), decision)  # fmt: skip


def model_versions(settings: Settings, models: Sequence[str]) -> list[VersionSummary]:
    """Every registered version of these models, newest first within each model."""
    client = connect(settings)
    listed = []
    for model in models:
        name = registered_name(model)
        found = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")), reverse=True)
        for version in found:  # asked one by one: search_model_versions leaves out the aliases
            listed.append(VersionSummary.of(client, model, client.get_model_version(name, str(version))))
    return listed


def promote(settings: Settings, model: str, version: str, reason: str, models: Sequence[str]) -> VersionSummary:
    """Set @champion on a version by hand, with the reason, who and when as version tags: the audit
    trail of a promotion the gate did not make. An unknown model or version is a CustlensError."""
    if model not in models:
        raise CustlensError(f"unknown model {model!r}; choose from {', '.join(models)}")
    if not reason.strip():
        raise CustlensError("--reason is empty; say why this version should be served")
    client = connect(settings)
    name = registered_name(model)
    existing = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
    if version not in existing:
        listed = ", ".join(existing) if existing else "none yet; run custlens train first"
        raise CustlensError(f"{name} has no version {version!r}; its versions: {listed} (see custlens models)")
    client.set_registered_model_alias(name, CHAMPION, version)
    if CHALLENGER in client.get_model_version(name, version).aliases:  # the one it is, not both
        client.delete_registered_model_alias(name, CHALLENGER)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {PROMOTED_BY: getpass.getuser(), PROMOTED_AT: stamp, PROMOTION_REASON: reason}.items():
        client.set_model_version_tag(name, version, key, value)
    return VersionSummary.of(client, model, client.get_model_version(name, version))
