"""Customer segments: RFM named segments from learned quintile edges, and behavioural clusters
(KMeans, k tuned by silhouette) named from their profiles so that names survive a retrain.

Both work on a frame of catalog features (one row per customer, day counts included, NaN where
missing) and keep plain JSON-able state, so the Scorer scores one customer online without pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from custlens.errors import CustlensError
from features.model_inputs import (  # what the segments read, declared with the other models' inputs
    CLUSTER_FEATURES,
    DESCRIBED_FEATURES,
    FREQUENCY_FEATURE,
    MONETARY_FEATURE,
    RECENCY_FEATURE,
)

# ---------------------------------------------------------------------------------------------
# RFM

RFM_SEGMENTS: tuple[str, ...] = (
    "Champions",
    "Loyal",
    "Potential loyalists",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose",
    "Hibernating",
)
# Not an RFM segment: a customer without a completed order has no recency to score.
NO_PURCHASE = "No purchase yet"

QUINTILES = (0.2, 0.4, 0.6, 0.8)

# The usual R/F grid, once: segment, (lowest, highest) R score, (lowest, highest) F score.
# Scores run 1..5, 5 best (most recent, most orders). Every one of the 25 cells is in exactly one row.
RFM_GRID: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("Champions", (5, 5), (4, 5)),
    ("Loyal", (3, 4), (4, 5)),
    ("Potential loyalists", (4, 5), (2, 3)),
    ("New", (5, 5), (1, 1)),
    ("Promising", (4, 4), (1, 1)),
    ("Need attention", (3, 3), (3, 3)),
    ("About to sleep", (3, 3), (1, 2)),
    ("At risk", (1, 2), (3, 4)),
    ("Can't lose", (1, 2), (5, 5)),
    ("Hibernating", (1, 2), (1, 2)),
)


def rfm_segment_of(r_score: int, f_score: int) -> str:
    """The RFM segment of one (R, F) cell of the grid."""
    for name, (r_low, r_high), (f_low, f_high) in RFM_GRID:
        if r_low <= r_score <= r_high and f_low <= f_score <= f_high:
            return name
    raise ValueError(f"no RFM segment for R={r_score}, F={f_score}: scores run 1..5")


def _column(frame: pd.DataFrame | Mapping[str, Any], name: str) -> np.ndarray:
    """One feature as float64 (NaN where missing), from a frame or a dict of numpy columns."""
    if name not in frame:
        raise CustlensError(
            f"the feature frame has no column {name!r}: pass the catalog features (features/catalog.py)"
        )
    column = frame[name]
    if column.dtype == "float64":
        return np.asarray(column)
    return pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _edges(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(edge) for edge in np.quantile(values[~np.isnan(values)], QUINTILES))


def _quintile_score(values: np.ndarray, edges: tuple[float, ...], higher_is_better: bool) -> pd.Series:
    # A value equal to an edge belongs to the lower quintile, so ties never split one value in two.
    above = np.searchsorted(np.asarray(edges), values, side="left")
    score = (1 + above) if higher_is_better else (5 - above)
    return pd.Series(score, dtype="Int8").mask(np.isnan(values))


@dataclass(frozen=True)
class RfmScorer:
    """Quintile edges learned on a training frame: scoring one customer online needs no population."""

    recency_edges: tuple[float, ...]
    frequency_edges: tuple[float, ...]
    monetary_edges: tuple[float, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> RfmScorer:
        """Edges at the 20/40/60/80% quantiles over customers with at least one completed order."""
        buyers = ~np.isnan(_column(frame, RECENCY_FEATURE))
        if not buyers.any():
            raise CustlensError(
                f"RFM needs customers with a completed order, and none of the {len(frame)} rows has a "
                f"{RECENCY_FEATURE}; check the orders table of the lake"
            )
        return cls(
            recency_edges=_edges(_column(frame, RECENCY_FEATURE)[buyers]),
            frequency_edges=_edges(_column(frame, FREQUENCY_FEATURE)[buyers]),
            monetary_edges=_edges(_column(frame, MONETARY_FEATURE)[buyers]),
        )

    def scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """r_score, f_score, m_score in 1..5 (5 best); <NA> for customers without a completed order."""
        recency = _column(frame, RECENCY_FEATURE)
        no_order = np.isnan(recency)
        scores = pd.DataFrame(
            {
                "r_score": _quintile_score(recency, self.recency_edges, higher_is_better=False),
                "f_score": _quintile_score(
                    _column(frame, FREQUENCY_FEATURE), self.frequency_edges, higher_is_better=True
                ),
                "m_score": _quintile_score(
                    _column(frame, MONETARY_FEATURE), self.monetary_edges, higher_is_better=True
                ),
            }
        )
        scores = scores.mask(np.repeat(no_order[:, None], 3, axis=1))
        scores.index = frame.index
        return scores

    def segment(self, frame: pd.DataFrame) -> pd.Series:
        """The RFM segment name per row (RFM_GRID); NO_PURCHASE where there is no order to score."""
        return pd.Series(self.segment_array(frame), index=frame.index, name="rfm_segment", dtype="object")

    def segment_array(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """`segment` as an object array, without the per-call frames of `scores` (the online path)."""
        recency = _column(frame, RECENCY_FEATURE)
        frequency = _column(frame, FREQUENCY_FEATURE)
        r = 5 - np.searchsorted(np.asarray(self.recency_edges), recency, side="left")
        f = 1 + np.searchsorted(np.asarray(self.frequency_edges), frequency, side="left")
        no_order = np.isnan(recency)
        r = np.where(no_order, 0, r)
        f = np.where(no_order | np.isnan(frequency), 0, f)
        return _RFM_LOOKUP[r, f]

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "recency_edges": list(self.recency_edges),
            "frequency_edges": list(self.frequency_edges),
            "monetary_edges": list(self.monetary_edges),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> RfmScorer:
        return cls(**{name: tuple(float(v) for v in state[name]) for name in cls.__dataclass_fields__})


def _rfm_lookup() -> np.ndarray:
    # Index [r, f]; row or column 0 is "no score", i.e. no completed order.
    lookup = np.full((6, 6), NO_PURCHASE, dtype=object)
    for r in range(1, 6):
        for f in range(1, 6):
            lookup[r, f] = rfm_segment_of(r, f)
    return lookup


_RFM_LOOKUP = _rfm_lookup()


# ---------------------------------------------------------------------------------------------
# Behavioural clusters

# Counts, amounts and day counts are heavy-tailed: log1p keeps a few whales from owning the distances.
LOG_FEATURES = frozenset(
    {"revenue_365d", "orders_365d", "avg_order_value", "days_since_last_order", "tenure_days", "sessions_90d",
     "tickets_365d"}
)  # fmt: skip
CLIP_QUANTILES = (0.01, 0.99)

SILHOUETTE_SAMPLE = 10_000
# The silhouette sample does not move with the training seed, so neither does the choice of k.
SILHOUETTE_SAMPLE_SEED = 0
# Silhouettes this close are a tie and the smaller k wins: fewer, broader clusters are the ones
# a retrain finds again.
SILHOUETTE_TIE = 0.005
# Many restarts, keep the lowest inertia: the seed then rarely decides which local optimum wins.
KMEANS_RESTARTS = 30

# A cluster's profile: per feature, the mean z-score of its customers who have a value (against
# the training population); NaN where fewer than MIN_OBSERVED of them have one.
MIN_OBSERVED = 20
# A rule fits a profile by its weakest condition; a condition lists features of which any will do.
# It can name a cluster when that fit reaches MIN_RULE_Z (a quarter of a population spread).
MIN_RULE_Z = 0.25
# Rules are listed from the most telling trait to the least, and the order is worth up to this
# much fit: where two rules describe a cluster about equally well (a lapsed cluster is low-value
# too), the more telling name wins at every retrain instead of whichever is ahead by a hair.
RULE_PRIORITY_Z = 0.25
FALLBACK_NAME = "Mainstream"


@dataclass(frozen=True)
class Condition:
    features: tuple[str, ...]
    direction: int  # +1: a high z-score, -1: a low one


def high(*features: str) -> Condition:
    return Condition(features, +1)


def low(*features: str) -> Condition:
    return Condition(features, -1)


@dataclass(frozen=True)
class NamingRule:
    name: str
    conditions: tuple[Condition, ...]

    def fit(self, profile: Mapping[str, float]) -> float:
        """The weakest condition's best signed z-score; -inf when a condition has no usable feature."""
        strengths = []
        for condition in self.conditions:
            usable = [condition.direction * profile[name] for name in condition.features
                      if not np.isnan(profile.get(name, np.nan))]  # fmt: skip
            strengths.append(max(usable) if usable else -np.inf)
        return float(min(strengths))


# Most telling first (see RULE_PRIORITY_Z).
NAMING_RULES: tuple[NamingRule, ...] = (
    NamingRule("High-value loyal", (high("revenue_365d"), high("orders_365d"))),
    NamingRule("Deal seekers", (high("discount_share_365d"),)),
    NamingRule("Lapsing", (high("days_since_last_order"),)),
    NamingRule("Engaged browsers", (high("sessions_90d", "email_open_rate_90d"), low("orders_365d"))),
    NamingRule("Support-heavy", (high("tickets_365d"),)),
    NamingRule("Unhappy", (low("mean_csat_365d", "last_nps"),)),
    NamingRule("New customers", (low("tenure_days"),)),
    NamingRule("Big-basket occasional", (high("avg_order_value"), low("orders_365d"))),
    NamingRule("Frequent small-basket", (high("orders_365d"), low("avg_order_value"))),
    NamingRule("Low-value occasional", (low("revenue_365d"), low("orders_365d"))),
)

# Words that tell two clusters with the same base name apart: (this one is higher, ... lower).
QUALIFIERS: dict[str, tuple[str, str]] = {
    "revenue_365d": ("higher spend", "lower spend"),
    "orders_365d": ("more orders", "fewer orders"),
    "avg_order_value": ("bigger baskets", "smaller baskets"),
    "days_since_last_order": ("longer gone", "more recent"),
    "tenure_days": ("longer tenure", "newer"),
    "discount_share_365d": ("more discounts", "fewer discounts"),
    "sessions_90d": ("more browsing", "less browsing"),
    "email_open_rate_90d": ("reads email", "ignores email"),
    "tickets_365d": ("more tickets", "fewer tickets"),
    "mean_csat_365d": ("happier", "less happy"),
    "last_nps": ("promoters", "detractors"),
}


@dataclass(frozen=True)
class FeatureScaler:
    """log1p, clip, standardize, impute: the numbers of each step learned on observed values.

    Centre and scale come from the customers who have a value, so a sparse feature keeps its
    natural spread and the imputed median sits near 0 instead of squeezing the rest into
    extreme z-scores.
    """

    features: tuple[str, ...]
    log1p: tuple[bool, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    fill: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: Iterable[str]) -> FeatureScaler:
        """Features without a single value (a family whose table is absent) are left out."""
        columns: list[tuple[str, bool, float, float, float, float, float]] = []
        for name in features:
            log = name in LOG_FEATURES
            values = _shaped(frame, name, log)
            observed = values[~np.isnan(values)]
            if observed.size == 0:
                continue
            lo, hi = (float(q) for q in np.quantile(observed, CLIP_QUANTILES))
            observed = observed.clip(lo, hi)
            spread = float(observed.std())
            columns.append(
                (name, log, lo, hi, float(np.median(observed)), float(observed.mean()), spread if spread > 0 else 1.0)
            )
        names, logs, lows, highs, fills, means, scales = zip(*columns, strict=True) if columns else ((),) * 7
        return cls(names, logs, lows, highs, fills, means, scales)

    def z_scores(
        self, frame: pd.DataFrame | Mapping[str, Any], features: Iterable[str] | None = None, impute: bool = True
    ) -> np.ndarray:
        """(rows, features) z-scores of `features` (default: all); missing values imputed, or NaN."""
        names = tuple(features) if features is not None else self.features
        out = np.empty((_rows(frame), len(names)), dtype="float64")
        for j, name in enumerate(names):
            i = self.features.index(name)
            values = _shaped(frame, name, self.log1p[i]).clip(self.low[i], self.high[i])
            if impute:
                values = np.where(np.isnan(values), self.fill[i], values)
            out[:, j] = (values - self.mean[i]) / self.scale[i]
        return out

    def to_dict(self) -> dict[str, list[Any]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FeatureScaler:
        return cls(**{name: tuple(state[name]) for name in cls.__dataclass_fields__})


def _rows(frame: pd.DataFrame | Mapping[str, Any]) -> int:
    return len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values())))


def _shaped(frame: pd.DataFrame | Mapping[str, Any], name: str, log: bool) -> np.ndarray:
    values = _column(frame, name)
    if name == "days_since_last_order":
        # No order yet: the customer has gone without one since signup, not for a median while.
        values = np.where(np.isnan(values), _column(frame, "tenure_days"), values)
    return np.log1p(np.clip(values, 0, None)) if log else values


def _group_means(values: np.ndarray, labels: np.ndarray, k: int, min_count: int = 1) -> np.ndarray:
    """(k, columns) means of the non-NaN values per label; NaN where fewer than `min_count`."""
    present = ~np.isnan(values)
    sums = np.zeros((k, values.shape[1]))
    counts = np.zeros((k, values.shape[1]))
    np.add.at(sums, labels, np.where(present, values, 0.0))
    np.add.at(counts, labels, present)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= min_count, sums / counts, np.nan)


@dataclass
class BehaviouralSegmenter:
    """KMeans clusters on standardized behavioural features, each named from its profile.

    Clusters are kept in name order; `profile_z` and `feature_means` cover every feature of the
    scaler (clustered ones first), `centers` only the clustered ones.
    """

    scaler: FeatureScaler
    cluster_features: tuple[str, ...]
    names: tuple[str, ...]
    centers: np.ndarray  # (clusters, cluster features): imputed z-scores, for predict
    profile_z: np.ndarray  # (clusters, features): observed z-scores, what the names were read from
    feature_means: np.ndarray  # (clusters, features): in the features' own units
    shares: tuple[float, ...]  # training customers per cluster / all
    silhouette: float
    silhouette_by_k: dict[int, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, seed: int, k_range: Iterable[int] = range(3, 9)) -> BehaviouralSegmenter:
        """Cluster for each k, keep the k of the best silhouette (near-ties to the smaller k), name."""
        candidates = list(k_range)
        ks = sorted({k for k in candidates if 2 <= k < len(frame)})
        if not ks:
            raise CustlensError(f"cannot cluster {len(frame)} customers into any number of clusters in {candidates}")
        scaler = FeatureScaler.fit(frame, (*CLUSTER_FEATURES, *DESCRIBED_FEATURES))
        clustered = tuple(name for name in CLUSTER_FEATURES if name in scaler.features)
        if not clustered:
            raise CustlensError(
                f"none of the behavioural features ({', '.join(CLUSTER_FEATURES)}) has a value in the training "
                "frame; build feature snapshots first (`custlens features build`)"
            )
        matrix = scaler.z_scores(frame, clustered)
        sample = np.random.default_rng(SILHOUETTE_SAMPLE_SEED).permutation(len(matrix))[:SILHOUETTE_SAMPLE]
        # One thread: OpenMP workers spin while they wait, and on two shared cores that makes
        # KMeans many times slower instead of faster.
        with threadpool_limits(limits=1):
            fits = {k: KMeans(k, n_init=KMEANS_RESTARTS, random_state=seed).fit(matrix) for k in ks}
            by_k = {k: _silhouette(matrix[sample], fits[k].labels_[sample]) for k in ks}
        best = max(by_k.values())
        k = min(k for k, score in by_k.items() if score >= best - SILHOUETTE_TIE)
        labels = fits[k].labels_
        profile_z = _group_means(scaler.z_scores(frame, impute=False), labels, k, MIN_OBSERVED)
        names = name_clusters(profile_z, scaler.features)
        order = np.argsort(names, kind="stable")
        raw = np.column_stack([_column(frame, name) for name in scaler.features])
        counts = np.bincount(labels, minlength=k)
        return cls(
            scaler=scaler,
            cluster_features=clustered,
            names=tuple(names[i] for i in order),
            centers=_group_means(matrix, labels, k)[order],
            profile_z=profile_z[order],
            feature_means=_group_means(raw, labels, k)[order],
            shares=tuple(float(counts[i] / len(labels)) for i in order),
            silhouette=by_k[k],
            silhouette_by_k=by_k,
        )

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        """The segment name per row: the nearest cluster centre in z-score space."""
        return pd.Series(self.predict_array(frame), index=frame.index, name="segment", dtype="object")

    def predict_array(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """`predict` as an object array, also from a dict of numpy columns (the online path)."""
        matrix = self.scaler.z_scores(frame, self.cluster_features)
        # One centre at a time: a (rows, clusters, features) block would not fit a million customers.
        distances = np.column_stack([((matrix - center) ** 2).sum(axis=1) for center in self.centers])
        return np.asarray(self.names, dtype=object)[distances.argmin(axis=1)]

    def profile(self) -> pd.DataFrame:
        """Per segment: its share of the training customers and the mean of each feature used."""
        table = pd.DataFrame(self.feature_means, columns=list(self.scaler.features), index=list(self.names))
        table.insert(0, "share", self.shares)
        table.index.name = "segment"
        return table

    def metrics(self) -> dict[str, float]:
        return {
            "silhouette": self.silhouette,
            "k": float(len(self.names)),
            "largest_segment_share": max(self.shares),
            "smallest_segment_share": min(self.shares),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (NaN written as null)."""
        return {
            "scaler": self.scaler.to_dict(),
            "cluster_features": list(self.cluster_features),
            "names": list(self.names),
            "centers": _plain(self.centers),
            "profile_z": _plain(self.profile_z),
            "feature_means": _plain(self.feature_means),
            "shares": list(self.shares),
            "silhouette": self.silhouette,
            "silhouette_by_k": {str(k): score for k, score in self.silhouette_by_k.items()},
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> BehaviouralSegmenter:
        return cls(
            scaler=FeatureScaler.from_dict(state["scaler"]),
            cluster_features=tuple(state["cluster_features"]),
            names=tuple(state["names"]),
            centers=_array(state["centers"]),
            profile_z=_array(state["profile_z"]),
            feature_means=_array(state["feature_means"]),
            shares=tuple(float(share) for share in state["shares"]),
            silhouette=float(state["silhouette"]),
            silhouette_by_k={int(k): float(score) for k, score in state["silhouette_by_k"].items()},
        )


def _plain(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(value) else float(value) for value in row] for row in matrix.tolist()]


def _array(rows: list[list[float | None]]) -> np.ndarray:
    return np.asarray([[np.nan if value is None else value for value in row] for row in rows], dtype="float64")


def _silhouette(matrix: np.ndarray, labels: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        return -1.0
    return float(silhouette_score(matrix, labels))


def name_clusters(profile_z: np.ndarray, features: tuple[str, ...]) -> list[str]:
    """A readable, unique name per cluster profile (rows of z-scores over `features`).

    The strongest (cluster, rule) fits, plus the rule's priority, are taken first, each rule
    naming one cluster. A cluster left over takes the name of its best rule (FALLBACK_NAME if none
    reaches MIN_RULE_Z) plus a qualifier saying how it differs from the cluster that has that name.
    """
    profiles = [dict(zip(features, row, strict=True)) for row in profile_z.tolist()]
    fits = np.array([[rule.fit(profile) for rule in NAMING_RULES] for profile in profiles])
    eligible = fits >= MIN_RULE_Z
    ranks = np.where(eligible, fits + np.linspace(RULE_PRIORITY_Z, 0.0, len(NAMING_RULES)), -np.inf)
    names: list[str | None] = [None] * len(profiles)
    taken: set[int] = set()
    for cluster, rule in sorted(np.ndindex(ranks.shape), key=lambda cr: (-ranks[cr], cr[1], cr[0])):
        if eligible[cluster, rule] and names[cluster] is None and rule not in taken:
            names[cluster] = NAMING_RULES[rule].name
            taken.add(rule)
    holders = {name: cluster for cluster, name in enumerate(names) if name is not None}
    for cluster in sorted(range(len(profiles)), key=lambda c: (-ranks[c].max(), c)):
        if names[cluster] is not None:
            continue
        best = int(ranks[cluster].argmax())
        base = NAMING_RULES[best].name if eligible[cluster, best] else FALLBACK_NAME
        if base in holders:
            name = _qualified(base, profile_z[cluster], profile_z[holders[base]], features, set(holders))
        else:
            name = base
        names[cluster] = name
        holders[name] = cluster
    return [str(name) for name in names]


def _qualified(base: str, profile: np.ndarray, holder: np.ndarray, features: tuple[str, ...], used: set[str]) -> str:
    """`base` plus the words for the feature on which `profile` differs most from `holder`."""
    gaps = np.nan_to_num(np.abs(profile - holder), nan=-1.0)
    for j in np.argsort(-gaps, kind="stable"):
        higher, lower = QUALIFIERS.get(features[j], (f"higher {features[j]}", f"lower {features[j]}"))
        candidate = f"{base}, {higher if profile[j] > holder[j] else lower}"
        if gaps[j] >= 0 and candidate not in used:
            return candidate
    number = 2
    while f"{base} {number}" in used:
        number += 1
    return f"{base} {number}"


def stability(a: pd.Series, b: pd.Series) -> float:
    """Share of customers (matched by index) with the same segment name in both labelings."""
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise CustlensError("the two labelings share no customer; label the same customers twice")
    return float((a.loc[common].to_numpy() == b.loc[common].to_numpy()).mean())
