"""Which catalog features each model version reads: the one declaration that the FeatureServices
(features/repo/feature_services.py), the training frames (training/frames.py) and the segments
(training/segments.py) are built from.

This says what the next training reads. A trained model carries the list it was trained on
(its bundle) and is checked at load against the service it names: a version whose service no
longer serves one of its features is refused, never scored from something else. So changing what
a registered version reads means a new version (`churn_v2`), not an edit of `churn_v1`.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.catalog import BTYD_SUMMARY_FEATURES, RECENCY_FEATURES, STORED_FEATURES, family_features, feature


def feature_family(name: str) -> str:
    """The family of a stored feature; `recency` for a request-time day count."""
    return "recency" if name in RECENCY_FEATURES else feature(name).family


@dataclass(frozen=True)
class ModelInputs:
    """Features a model reads, in the order it reads them: numbers (stored counts, amounts and
    rates, and request-time day counts) first, then categories (labels)."""

    numbers: tuple[str, ...]
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"a model input is listed twice: {names}")
        for name in self.numbers:
            if name not in RECENCY_FEATURES and feature(name).kind not in ("count", "number"):
                # Raw instants mean something else on every day: models read the day counts instead.
                raise ValueError(f"{name} is a {feature(name).kind}, not a number a model can read")
        for name in self.categories:
            if feature(name).kind != "category":
                raise ValueError(f"{name} is a {feature(name).kind}, not a category")

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numbers, *self.categories)


# The LightGBM models (churn, repurchase, CLV) read every stored count and number, the
# request-time day counts, and the categories. Raw instants are left out: the day counts carry
# them in a form that means the same at any date (they are inputs of the `recency` view only).
# The BTYD summary came after version 1 of these services: reading it is a new version's change.
TREE_INPUTS = ModelInputs(
    numbers=tuple(
        name
        for name in (*(f.name for f in STORED_FEATURES if f.kind in ("count", "number")), *RECENCY_FEATURES)
        if name not in BTYD_SUMMARY_FEATURES and feature_family(name) != "btyd"
    ),
    categories=tuple(f.name for f in STORED_FEATURES if f.kind == "category"),
)

# Version 2 adds what the probabilistic models know: the BTYD summary they read and the btyd
# family, their per-customer quantities at the cutoff (features/btyd.py). Trees start from
# BG/NBD's own P(alive) and expected purchases instead of relearning them from counts.
TREE_INPUTS_V2 = ModelInputs(
    numbers=(*TREE_INPUTS.numbers, *BTYD_SUMMARY_FEATURES, *(f.name for f in family_features("btyd"))),
    categories=TREE_INPUTS.categories,
)

# The segments. RFM: recency, frequency and monetary value. Lifetime, not 365-day, orders: the
# bottom recency quintile is typically more than a year without an order, so a 365-day count is 0
# for all of it and "At risk" / "Can't lose" (frequent buyers gone quiet, the customers worth a
# win-back) would be empty or filed as "Hibernating".
RECENCY_FEATURE = "days_since_last_order"
FREQUENCY_FEATURE = "orders_lifetime"
MONETARY_FEATURE = "revenue_365d"
# What the behavioural clusters are built on: how much, how often and how big a basket a customer
# buys, how recently, since when, how much on discount, and how much they browse and read email.
# These are defined for nearly everyone. Support and satisfaction are described, not clustered:
# tickets are 0 for most customers, so one ticket would split the population on "had a ticket"
# before any buying behaviour, and CSAT/NPS are answered by too few to place everyone else.
CLUSTER_FEATURES: tuple[str, ...] = (
    "revenue_365d",
    "orders_365d",
    "avg_order_value",
    "days_since_last_order",
    "tenure_days",
    "discount_share_365d",
    "sessions_90d",
    "email_open_rate_90d",
)
DESCRIBED_FEATURES: tuple[str, ...] = ("tickets_365d", "mean_csat_365d", "last_nps")

SEGMENT_INPUTS = ModelInputs(
    numbers=tuple(
        dict.fromkeys((RECENCY_FEATURE, FREQUENCY_FEATURE, MONETARY_FEATURE, *CLUSTER_FEATURES, *DESCRIBED_FEATURES))
    ),
)


@dataclass(frozen=True)
class ServiceSpec:
    """One model version's FeatureService: its name, what it says it is, and what it serves."""

    model: str  # churn | repurchase | clv | segments
    service: str  # `<model>_v<version>`
    description: str
    inputs: ModelInputs


# What the servable baselines read (training/baselines/servable.py): BG/NBD and Gamma-Gamma the
# BTYD summary, logistic RFM its four RFM features.
BASELINE_RFM_FEATURES: tuple[str, ...] = ("days_since_last_order", "orders_365d", "revenue_365d", "tenure_days")
BASELINE_INPUTS = ModelInputs(numbers=tuple(dict.fromkeys((*BTYD_SUMMARY_FEATURES, *BASELINE_RFM_FEATURES))))
BASELINE_SERVICE = "baselines_v1"

SERVICE_SPECS: tuple[ServiceSpec, ...] = (
    ServiceSpec("churn", "churn_v1", "Features of the churn model, version 1.", TREE_INPUTS),
    ServiceSpec("repurchase", "repurchase_v1", "Features of the repurchase model, version 1.", TREE_INPUTS),
    ServiceSpec("clv", "clv_v1", "Features of the customer value (CLV) model, version 1.", TREE_INPUTS),
    ServiceSpec(
        "segments",
        "segments_v1",
        # Support and satisfaction name clusters ("Support-heavy") even though they are not clustered on.
        "Features the RFM segments and behavioural clusters are computed from, version 1.",
        SEGMENT_INPUTS,
    ),
    ServiceSpec(
        "baselines", BASELINE_SERVICE, "Features the servable BTYD and RFM baselines read, version 1.", BASELINE_INPUTS
    ),
    ServiceSpec("churn", "churn_v2", "Features of the churn model, version 2: v1 and the BTYD quantities.",
                TREE_INPUTS_V2),
    ServiceSpec("repurchase", "repurchase_v2", "Features of the repurchase model, version 2: v1 and the BTYD "
                "quantities.", TREE_INPUTS_V2),
    ServiceSpec("clv", "clv_v2", "Features of the customer value (CLV) model, version 2: v1 and the BTYD quantities.",
                TREE_INPUTS_V2),
)  # fmt: skip

# The version each model's next training reads. Every version stays declared (a registered model
# loads with the service it names); which one trains is chosen by measurement (docs/model-quality.md).
TRAINED_SERVICES: dict[str, str] = {
    "churn": "churn_v2",
    "repurchase": "repurchase_v2",
    "clv": "clv_v2",
    "segments": "segments_v1",
    "baselines": BASELINE_SERVICE,
}


def service_spec(model: str) -> ServiceSpec:
    """The FeatureService the next training of `model` reads (TRAINED_SERVICES)."""
    return spec_of_service(TRAINED_SERVICES[model])


def spec_of_service(service: str) -> ServiceSpec:
    for spec in SERVICE_SPECS:
        if spec.service == service:
            return spec
    raise KeyError(service)
