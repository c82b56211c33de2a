"""The Scorer: one object that turns a frame of customer features into every score.

It holds the registry versions of the churn, repurchase and CLV models and the segments (by
default the `@champion` of each), and the feature services they were trained with. The online
service and the batch job both call `Scorer.score`, so one customer with the same features gets
the same scores in both.

Scoring goes through the models' own bundles (training/packaging.py: the features each reads,
its encoder, its predictions), the same path as their MLflow pyfunc wrappers, without the
wrappers' per-call frames: the features are read once per call as numpy columns, each distinct
encoding is built once as one float matrix, and every model that encodes the same way predicts
on it. What the Scorer asks for (`inputs`) is what its models read, and each model is checked at
load against its trees and against the FeatureService it names.

Money is answered in the lake's business currency (features.lake.tables.lake_business): every row
carries `currency` next to `predicted_clv` and its P10-P90 range (`predicted_clv_p10`,
`predicted_clv_p90`: training.value_range), rounded to that currency's minor units (VND 0
decimals, USD 2), the same in the service's answers and the batch write-back.

The outputs are named without a window (`repurchase_probability`, `predicted_clv`): windows are
configurable, and each is stated beside the scores (`windows`: churn_days, repurchase_days,
clv_days) as the served version was trained with it, read from the version, never from today's
config; only a version that records none anywhere falls back to the config, and says so.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from custlens.errors import CustlensError
from custlens.settings import ServingSettings, Settings
from features.lake.money import minor_units
from features.lake.tables import cutoff_instant, lake_business
from features.model_inputs import RECENCY_FEATURE
from features.store import registered_services
from serving.reasons import coherent, explain
from training.baselines.servable import BaselineBundle, load_bundle
from training.frames import WINDOW_KEYS, ModelName, label_window
from training.next_order import beyond_horizon
from training.packaging import (
    BUNDLE_FILE,
    FEATURE_DIRECTIONS,
    FEATURE_MEDIANS,
    SCORE_PERCENTILES,
    SEGMENTS_FILE,
    ModelBundle,
    SegmentsBundle,
)
from training.tracking import connect, registered_name
from training.value_range import P10, P90, VARIANCE

MODELS = ("churn", "repurchase", "clv", "segments")
Served = ModelBundle | BaselineBundle  # what scores churn, repurchase or CLV: learned or a baseline
# The churn population: customers with a purchase in the activity window before the as-of.
CHURN_RECENCY = RECENCY_FEATURE
NO_PURCHASE_YET, INACTIVE_BEYOND_WINDOW = "no_purchase_yet", "inactive_beyond_window"
# The models whose output is over a window of days after the as-of date (the segments' is not).
WINDOWED_MODELS = ("churn", "repurchase", "clv")
# Where a version's window was read: its bundle (recorded since the outputs lost their window in
# the name), the `label_window_days` parameter of its training run, or today's config (neither).
WINDOW_FROM_MODEL, WINDOW_FROM_RUN, WINDOW_FROM_CONFIG = "model", "training run", "config"
RISK_BANDS = ("low", "medium", "high")

# What `score` returns per customer, in this order (plus `churn_reasons` when asked for).
SCORE_COLUMNS = (
    "churn_probability",
    "churn_risk",
    "churn_not_scored_reason",  # why churn_probability is NULL: no_purchase_yet, inactive_beyond_window
    "repurchase_probability",
    "expected_days_to_next_order",
    "expected_next_order_date",
    "predicted_clv",
    "predicted_clv_p10",  # its P10-P90 range (training.value_range); NULL for a version without one
    "predicted_clv_p90",
    "currency",  # of predicted_clv and its range: ISO 4217, or None when the lake never said
    "rfm_segment",
    "behavioural_segment",
)


@dataclass(frozen=True)
class ModelRef:
    """Which registered version a score comes from."""

    model: str
    registered_model: str
    version: str
    alias: str
    run_id: str | None
    feature_service: str
    window_days: int | None = None  # the days after the as-of its output is over, as trained (segments: None)
    window_from: str | None = None  # WINDOW_FROM_*: where window_days was read

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "registered_model": self.registered_model,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "feature_service": self.feature_service,
            "window_days": self.window_days,
            "window_from": self.window_from,
        }


class Scorer:
    """Every score for a frame of features; build once (`from_registry`), call per request or chunk."""

    def __init__(
        self,
        churn: Served | None,
        repurchase: Served | None,
        clv: Served | None,
        segments: SegmentsBundle | None,
        refs: Mapping[str, ModelRef],
        serving: ServingSettings,
        currency: str | None = None,
        unserved: Mapping[str, str] | None = None,
        activity_window_days: float = 365,
    ) -> None:
        """A model given as None has no version to serve: its outputs are NULL, and `unserved`
        says why (the other models still score)."""
        self.churn, self.repurchase, self.clv, self.segments = churn, repurchase, clv, segments
        self.refs = dict(refs)
        self.serving = serving
        self.currency = currency  # what predicted_clv is in: the lake's business currency
        self.activity_window_days = activity_window_days  # for versions that do not record theirs
        self.unserved = {model: (unserved or {}).get(model, "no version") for model in MODELS
                         if getattr(self, model) is None}  # fmt: skip
        # One encoding serves every model that reads the same features with the same categories:
        # each model is scored on the matrix of the first bundle that encodes as it does.
        models = [bundle for bundle in (churn, repurchase, clv) if bundle is not None]
        self._encodes_as = {id(b): next(first for first in models if first.encoder.same_as(b.encoder)) for b in models}

    # -----------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_registry(
        cls, settings: Settings, alias: str | None = None, services: Mapping[str, Collection[str]] | None = None
    ) -> Scorer:
        """The versions behind `alias` (default: the configured one, `champion`) of all four models,
        each checked against the FeatureService it names: `services` says what each serves
        (default: as registered in the feature store of `settings`; nothing is checked where the
        definitions were never applied, as for a batch run on snapshot files alone)."""
        alias = alias or settings.serving.model_alias
        client = connect(settings)
        refs: dict[str, ModelRef] = {}
        unserved: dict[str, str] = {}
        for model in MODELS:
            name = registered_name(model)
            try:
                version = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                unserved[model] = f"no {name}@{alias} version (none trained, or none beat its baselines)"
                continue
            refs[model] = ModelRef(model, name, str(version.version), alias, version.run_id, "")
        if not refs:
            raise CustlensError(
                f"no registered version for any model at @{alias} in {mlflow.get_tracking_uri()}; "
                "run `custlens train all` first"
            )
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in service logs
        with tempfile.TemporaryDirectory(prefix="custlens-scorer-") as folder:
            bundles = {model: _download_bundle(ref, Path(folder) / model) for model, ref in refs.items()}
        services = registered_services(settings) if services is None else services
        for model, bundle in bundles.items():
            if services:
                bundle.require_served(services)
            window, window_from = _trained_window(client, settings, refs[model], bundle)
            refs[model] = ModelRef(**{**refs[model].as_dict(), "feature_service": bundle.feature_service,
                                      "window_days": window, "window_from": window_from})  # fmt: skip
        churn, repurchase, clv, segments = (bundles.get(model) for model in MODELS)
        assert all(isinstance(b, ModelBundle | BaselineBundle) for b in (churn, repurchase, clv) if b is not None)
        assert segments is None or isinstance(segments, SegmentsBundle)
        return cls(churn, repurchase, clv, segments, refs, settings.serving,  # type: ignore[arg-type]
                   lake_business(settings).currency, unserved, settings.training.activity_window_days)  # fmt: skip

    @staticmethod
    def registry_versions(settings: Settings, alias: str | None = None) -> dict[str, str | None]:
        """The version each model's alias points at now (None where unset): cheap, for reload polling."""
        alias = alias or settings.serving.model_alias
        client = connect(settings)
        versions: dict[str, str | None] = {}
        for model in MODELS:
            try:
                versions[model] = str(client.get_model_version_by_alias(registered_name(model), alias).version)
            except MlflowException:
                versions[model] = None
        return versions

    # -----------------------------------------------------------------------------------------
    # What it needs and what it is

    @property
    def versions(self) -> dict[str, str | None]:
        """The served version of each model; None for one with none to serve."""
        return {model: self.refs[model].version if model in self.refs else None for model in MODELS}

    @property
    def alias(self) -> str:
        return next(iter(self.refs.values())).alias

    @property
    def feature_services(self) -> dict[str, str]:
        return {model: ref.feature_service for model, ref in self.refs.items()}

    @property
    def windows(self) -> dict[str, int | None]:
        """{"churn_days", "repurchase_days", "clv_days"}: the days after the as-of date that churn,
        the repurchase probability and the predicted value are over, as the served versions were
        trained (None where a version was never given one)."""
        return {f"{model}_days": self.refs[model].window_days if model in self.refs else None
                for model in WINDOWED_MODELS}  # fmt: skip

    def window_notes(self) -> list[str]:
        """A sentence for each served version whose window is today's config's, not its own."""
        return [
            f"{ref.registered_model} version {ref.version} does not record its window: "
            f"{ref.window_days} days is today's training.{WINDOW_KEYS[cast(ModelName, ref.model)]}; retrain it to "
            "state its own"
            for ref in self.refs.values()
            if ref.window_from == WINDOW_FROM_CONFIG
        ]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every feature some model or segment rule reads, in a fixed order: each model's own list
        (its bundle's), then the segments'."""
        names = [name for bundle in (self.churn, self.repurchase, self.clv) if bundle is not None
                 for name in bundle.features]  # fmt: skip
        if self.churn is not None:
            names.append(CHURN_RECENCY)  # who is in the churn population
        if self.segments is not None:
            names.extend(self.segments.inputs)
        return tuple(dict.fromkeys(names))

    # -----------------------------------------------------------------------------------------
    # Scoring

    def score(
        self,
        features: pd.DataFrame | Mapping[str, np.ndarray],
        as_of: datetime | date,
        reasons: bool = False,
        clv_variance: bool = False,
    ) -> pd.DataFrame:
        """Every score per row of `features` (the columns of `inputs`, as a frame or a dict of numpy
        columns; a `known` column, where present, marks rows with no features, which get no scores:
        None/NaN, never made-up values).

        `as_of` is the moment the features describe: the request time online, the as-of date in
        batch; the expected next order date counts from it. `clv_variance` adds
        `predicted_clv_variance` (the batch job's KPI totals by segment read it).
        """
        # Every column read once into numpy: per-column DataFrame access costs more than the trees.
        # A missing one is left out here and named by the model that reads it.
        if isinstance(features, pd.DataFrame):
            wanted = ("customer_id", "known", *self.inputs)
            columns = {name: features[name].to_numpy() for name in wanted if name in features.columns}
        else:
            columns = dict(features)
        count = len(next(iter(columns.values()))) if columns else 0
        known = np.asarray(columns["known"], dtype=bool) if "known" in columns else np.ones(count, bool)
        rows = columns if known.all() else {name: values[known] for name, values in columns.items()}
        matrices: dict[int, np.ndarray] = {}

        def matrix(bundle: Served) -> np.ndarray:  # of a bundle that is served
            first = self._encodes_as[id(bundle)]
            if id(first) not in matrices:
                matrices[id(first)] = first.encode(rows)
            return matrices[id(first)]

        scored_rows = int(known.sum())
        nothing = np.full(scored_rows, np.nan)
        churn_x = matrix(self.churn) if self.churn is not None else None
        churn = self.churn.scores(churn_x)["probability"] if self.churn is not None and churn_x is not None else nothing
        not_scored = self._churn_population(rows, scored_rows)
        in_population = pd.isna(not_scored)
        churn = np.where(in_population, churn, np.nan)
        repurchase_scores = self.repurchase.scores(matrix(self.repurchase)) if self.repurchase is not None else {}
        repurchase = repurchase_scores.get("probability", nothing)
        # the date by which an order is as likely as not; none beyond the horizon (training.next_order)
        days = beyond_horizon(repurchase_scores.get("expected_days_to_next_order", nothing),
                              self.serving.next_order_horizon_days)  # fmt: skip
        clv_scores = self.clv.scores(matrix(self.clv)) if self.clv is not None else {}
        clv = clv_scores.get("predicted_value", nothing)
        no_label = np.full(scored_rows, None, dtype=object)
        rfm = self.segments.rfm.segment_array(rows) if self.segments is not None else no_label
        behaviour = self.segments.behaviour.predict_array(rows) if self.segments is not None else no_label

        scored: dict[str, Any] = {
            "churn_probability": churn,
            "churn_risk": self.risk_band(churn),
            "churn_not_scored_reason": not_scored,
            "repurchase_probability": repurchase,
            "expected_days_to_next_order": days,
            "expected_next_order_date": _dates_after(as_of, days),
            "predicted_clv": np.round(clv, minor_units(self.currency)),
            "predicted_clv_p10": np.round(clv_scores.get(P10, nothing), minor_units(self.currency)),
            "predicted_clv_p90": np.round(clv_scores.get(P90, nothing), minor_units(self.currency)),
            "currency": np.full(len(clv), self.currency if self.clv is not None else None, dtype=object),
            "rfm_segment": rfm,
            "behavioural_segment": behaviour,
        }
        if reasons:
            found = self._reasons(rows, churn_x, scored["churn_risk"]) if churn_x is not None else []
            # no probability, no reasons for one
            scored["churn_reasons"] = [found[i] if found and in_population[i] else [] for i in range(scored_rows)]
        if clv_variance:  # what a total of customers' predicted values needs for its range
            scored["predicted_clv_variance"] = clv_scores.get(VARIANCE, nothing)
        out = pd.DataFrame(scored, copy=False)
        if not known.all():
            out = _spread(out, known)
        if "customer_id" in columns:
            out.insert(0, "customer_id", np.asarray(columns["customer_id"], dtype=object))
        return out

    def _churn_population(self, rows: Mapping[str, np.ndarray], count: int) -> np.ndarray:
        """Why each row has no churn probability (None: it has one). Churn is defined for customers
        with a purchase in the activity window before the as-of, as the churn model was trained
        (its bundle's `activity_window_days`): `no_purchase_yet` for one who never bought,
        `inactive_beyond_window` for one whose last purchase is older."""
        reasons = np.full(count, None, dtype=object)
        if self.churn is None or CHURN_RECENCY not in rows:
            return reasons
        window = float(self.churn.meta.get("activity_window_days", self.activity_window_days))
        days = np.asarray(rows[CHURN_RECENCY], dtype="float64")
        reasons[np.isnan(days)] = NO_PURCHASE_YET
        reasons[days > window] = INACTIVE_BEYOND_WINDOW
        return reasons

    def risk_band(self, churn: np.ndarray) -> np.ndarray:
        medium, high = self.risk_thresholds["medium"], self.risk_thresholds["high"]
        return risk_band(churn, float(medium), float(high))

    @cached_property
    def risk_thresholds(self) -> dict[str, Any]:
        """The churn probabilities from which risk is medium and high, and what they are (`basis`).

        With `serving.churn_risk_bands: quantiles` (the default) they are the configured quantiles
        of the served churn model's scores on its test customers (the churn population at its test
        cutoff, recorded in the version at training), so the bands rank customers the same way
        online and in batch, whatever a request holds: with 0.5/0.8 the riskiest fifth is high. A
        version that records no scores, or `probability`, takes the fixed thresholds."""
        serving = self.serving
        fixed = {"medium": serving.churn_medium_risk, "high": serving.churn_high_risk, "basis": "probability"}
        recorded = self.churn.meta.get(SCORE_PERCENTILES) if self.churn is not None else None
        if serving.churn_risk_bands == "probability" or not recorded:
            if serving.churn_risk_bands == "quantiles" and self.churn is not None:
                fixed["basis"] = "probability (the served churn version records no test scores to take quantiles of)"
            return fixed
        medium, high = (float(np.interp(q * 100, np.arange(len(recorded)), recorded))
                        for q in serving.churn_risk_quantiles)  # fmt: skip
        if not medium < high:  # scores with many ties: the quantiles cannot part the bands
            return {**fixed, "basis": "probability (the churn scores' quantiles coincide)"}
        low_q, high_q = serving.churn_risk_quantiles
        return {"medium": round(medium, 6), "high": round(high, 6),
                "basis": f"quantiles {low_q:g} and {high_q:g} of the churn model's test scores"}  # fmt: skip

    def _reasons(
        self, rows: Mapping[str, np.ndarray], churn_x: np.ndarray, risk: np.ndarray
    ) -> list[list[dict[str, Any]]]:
        """Why a customer got their churn risk: the features that push the score most in the
        direction of the band (LightGBM's per-row contributions, in log-odds), each with the
        customer's value and the typical one in plain words. A customer at medium or high risk gets
        what raises the risk first, one at low risk what keeps it low; the other direction only
        fills up. A contribution whose story does not hold together is left out
        (serving.reasons.coherent)."""
        if not len(churn_x) or self.churn is None:
            return []
        if not self.churn.explains:  # a baseline: no per-feature contributions to give
            return [[] for _ in range(len(churn_x))]
        per_feature = self.churn.contributions(churn_x)
        wanted = np.where(risk == "low", -1.0, 1.0)[:, None]
        rank = np.abs(per_feature) + np.where(per_feature * wanted > 0, _PRIMARY, 0.0)
        order = np.argsort(-rank, axis=1, kind="stable")
        names = self.churn.features
        typical: dict[str, float] = self.churn.meta.get(FEATURE_MEDIANS, {})
        directions: dict[str, int] | None = self.churn.meta.get(FEATURE_DIRECTIONS)
        columns: dict[str, np.ndarray] = {}
        out = []
        for row, picks in enumerate(order):
            reasons: list[dict[str, Any]] = []
            for column in picks:
                name, impact = names[column], float(per_feature[row, column])
                if impact == 0.0 or len(reasons) == self.serving.reasons:
                    break
                if name not in columns:
                    columns[name] = np.asarray(rows[name])
                value = columns[name][row]
                if not coherent(name, value, typical.get(name), impact, directions):
                    continue  # e.g. a recent last order that "raises risk": no story to tell
                reasons.append({
                    "feature": name,
                    "value": _plain(value),
                    "typical": typical.get(name),
                    "text": explain(name, value, typical.get(name)),
                    "direction": "raises risk" if impact > 0 else "lowers risk",
                    "impact": round(impact, 4),
                })  # fmt: skip
            out.append(reasons)
        return out


# Added to the rank of a contribution that pushes the way of the customer's band: those come first.
_PRIMARY = 1e6


def risk_band(churn: np.ndarray, medium: float, high: float) -> np.ndarray:
    """low / medium / high per churn probability; a probability equal to a threshold takes the
    higher band; NaN (no score) gets None."""
    bands = np.asarray(RISK_BANDS, dtype=object)[np.searchsorted([medium, high], churn, side="right")]
    bands[np.isnan(churn)] = None
    return bands


def _download_bundle(ref: ModelRef, folder: Path) -> Served | SegmentsBundle:
    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{ref.registered_model}/{ref.version}", dst_path=str(folder)))  # fmt: skip
    except MlflowException as exc:
        raise CustlensError(f"cannot read {ref.registered_model} version {ref.version}: {exc.message}") from exc
    file_name = SEGMENTS_FILE if ref.model == "segments" else BUNDLE_FILE
    found = sorted(local.rglob(file_name))
    if not found:
        raise CustlensError(f"{ref.registered_model} version {ref.version} holds no {file_name}; retrain it")
    origin = f"{ref.registered_model} version {ref.version}"
    if ref.model == "segments":
        return SegmentsBundle.load(found[0], origin)
    return load_bundle(found[0], origin)


def _trained_window(
    client: MlflowClient, settings: Settings, ref: ModelRef, bundle: Served | SegmentsBundle
) -> tuple[int | None, str | None]:
    """The label window a version was trained with, and where it was read (WINDOW_FROM_*): its
    bundle's; for a bundle saved before it recorded one, its training run's `label_window_days`;
    for a version with neither, today's config."""
    if isinstance(bundle, SegmentsBundle):
        return None, None
    if isinstance(bundle, BaselineBundle):
        return bundle.window_days, WINDOW_FROM_MODEL
    if "window_days" in bundle.meta:
        return int(bundle.meta["window_days"]), WINDOW_FROM_MODEL
    logged = None
    if ref.run_id:
        try:
            logged = client.get_run(ref.run_id).data.params.get("label_window_days")
        except MlflowException:
            logged = None  # the run was deleted
    if logged:
        return int(logged), WINDOW_FROM_RUN
    return label_window(settings, cast(ModelName, bundle.model)), WINDOW_FROM_CONFIG


def _dates_after(as_of: datetime | date, days: np.ndarray) -> np.ndarray:
    """The UTC day on which `as_of` + days falls, per row (None where days is NaN); a date as-of
    is its 00:00 UTC. The day the instant falls on, not a rounded count: 29.6 days after a
    midnight is the 30th day, still inside a 30-day window, as its probability of >= 1/2 says."""
    start = as_of.astimezone(UTC) if isinstance(as_of, datetime) else cutoff_instant(as_of)
    out = np.empty(len(days), dtype=object)
    for i, value in enumerate(days):
        out[i] = None if np.isnan(value) else (start + timedelta(days=float(value))).date()
    return out


def _spread(scored: pd.DataFrame, known: np.ndarray) -> pd.DataFrame:
    """Scores of the known rows put back among all rows; unknown rows hold None/NaN."""
    full = pd.DataFrame(index=pd.RangeIndex(len(known)), columns=scored.columns)
    for name in scored.columns:
        column = np.full(len(known), np.nan) if scored[name].dtype.kind == "f" else np.full(len(known), None, object)
        column[known] = scored[name].to_numpy()
        full[name] = column
    return full


def _plain(value: Any) -> Any:
    """A JSON-able scalar: numpy numbers as Python numbers, NaN as None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and np.isnan(value) else value
    return value
