"""The per-customer feature catalog: every feature's name, family, kind and meaning, once.

The snapshot SQL writes exactly these columns, the Feast feature views take their schemas
from here, and the online reader and the Scorer read names and order from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# count: a whole number of things (0 when the input table exists and nothing happened);
# number: a ratio, amount or duration (NULL when its denominator is zero or it is undefined);
# timestamp: an instant, turned into a day count at request time; category: a readable label.
FeatureKind = Literal["count", "number", "timestamp", "category"]
Family = Literal["purchases", "engagement", "voice", "support", "profile", "btyd"]

# In build order: `btyd` is fitted on the purchases family of the same cutoff (features/btyd.py).
FAMILIES: tuple[Family, ...] = ("purchases", "engagement", "voice", "support", "profile", "btyd")

# The lake table each family is computed from; a family whose table is absent is all NULL.
FAMILY_SOURCE_TABLE: dict[Family, str] = {
    "purchases": "orders",
    "engagement": "engagement_events",
    "voice": "surveys",
    "support": "tickets",
    "profile": "customers",
    "btyd": "orders",
}


@dataclass(frozen=True)
class Feature:
    name: str
    family: Family
    kind: FeatureKind
    description: str


def _f(family: Family, kind: FeatureKind, *names_and_descriptions: tuple[str, str]) -> list[Feature]:
    return [Feature(name, family, kind, description) for name, description in names_and_descriptions]


# Windows are (cutoff - N days, cutoff): data strictly before the cutoff only.
STORED_FEATURES: tuple[Feature, ...] = tuple(
    _f("purchases", "timestamp",
       ("first_order_at", "when the first completed order was placed"),
       ("last_order_at", "when the last completed order was placed"),
       ("first_purchase_day_at", "00:00 UTC of the first purchase day (a UTC calendar day with a completed order)"),
       ("last_purchase_day_at", "00:00 UTC of the last purchase day (a UTC calendar day with a completed order)"))
    + _f("purchases", "count",
         ("orders_30d", "completed orders in the last 30 days"),
         ("orders_90d", "completed orders in the last 90 days"),
         ("orders_365d", "completed orders in the last 365 days"),
         ("orders_lifetime", "completed orders ever"),
         ("categories_365d", "distinct product categories bought in the last 365 days"),
         ("channels_365d", "distinct sales channels used in the last 365 days"),
         ("purchase_days_lifetime", "purchase days ever: UTC calendar days with at least one completed order"))
    + _f("purchases", "number",
         ("revenue_30d", "net revenue (completed orders minus refunds) in the last 30 days"),
         ("revenue_90d", "net revenue (completed orders minus refunds) in the last 90 days"),
         ("revenue_365d", "net revenue (completed orders minus refunds) in the last 365 days"),
         ("revenue_lifetime", "net revenue (completed orders minus refunds) ever"),
         ("avg_order_value", "net revenue ever (completed orders minus refunds) / completed orders ever"),
         ("mean_days_between_orders", "mean gap in days between consecutive completed orders"),
         ("std_days_between_orders", "spread (standard deviation) of the gaps between completed orders"),
         ("return_rate_365d", "returned orders / (completed + returned) orders, last 365 days"),
         ("cancellation_rate_365d", "cancelled orders / all orders (refunds are not orders), last 365 days"),
         ("discount_share_365d", "discount amount / gross amount of completed orders, last 365 days"),
         ("orders_trend_90d", "completed orders in the last 90 days minus the 90 days before"),
         ("revenue_trend_90d", "net revenue (completed minus refunds) in the last 90 days minus the 90 days before"),
         ("days_first_to_last_purchase_day", "days from the first to the last purchase day (BG/NBD's recency)"),
         ("repeat_purchase_day_value",
          "mean net revenue of the purchase days after the first, each refund netted into the latest purchase "
          "day on or before it and a day worth 0 at least (Gamma-Gamma's monetary value); 0 without a repeat day"))
    + _f("engagement", "timestamp",
         ("last_engagement_at", "when the customer last did anything (session, open, click, app open, ...)"))
    + _f("engagement", "count",
         ("sessions_30d", "web/app sessions in the last 30 days"),
         ("sessions_90d", "web/app sessions in the last 90 days"),
         ("page_views_30d", "page views in the last 30 days"),
         ("page_views_90d", "page views in the last 90 days"),
         ("add_to_cart_30d", "add-to-cart events in the last 30 days"),
         ("add_to_cart_90d", "add-to-cart events in the last 90 days"),
         ("email_unsubscribes_90d", "email unsubscribes in the last 90 days"),
         ("email_spam_reports_90d", "emails reported as spam in the last 90 days"),
         ("app_opens_30d", "app opens in the last 30 days"),
         ("app_opens_90d", "app opens in the last 90 days"),
         ("social_shares_90d", "social shares in the last 90 days"),
         ("referrals_90d", "referrals made in the last 90 days"))
    + _f("engagement", "number",
         ("bounce_rate_90d", "bounced sessions / sessions, last 90 days"),
         ("cart_abandonment_rate_90d",
          "sessions with an add-to-cart but no checkout start / sessions with an add-to-cart, last 90 days"),
         ("email_open_rate_30d", "emails opened / emails sent, last 30 days"),
         ("email_open_rate_90d", "emails opened / emails sent, last 90 days"),
         ("email_click_rate_30d", "emails clicked / emails sent (click-through rate), last 30 days"),
         ("email_click_rate_90d", "emails clicked / emails sent (click-through rate), last 90 days"),
         ("sms_delivery_rate_90d", "SMS delivered / SMS sent, last 90 days"))
    + _f("voice", "timestamp",
         ("last_survey_at", "when the customer last answered a survey"))
    + _f("voice", "count",
         ("survey_responses", "survey answers ever (NPS and CSAT)"),
         ("last_nps", "the most recent NPS answer, 0-10"))
    + _f("voice", "number",
         ("mean_csat_365d", "mean CSAT answer (1-5) in the last 365 days"))
    + _f("voice", "category",
         ("last_nps_category", "promoter (9-10), passive (7-8) or detractor (0-6), from the last NPS answer"))
    + _f("support", "count",
         ("tickets_90d", "support tickets opened in the last 90 days"),
         ("tickets_365d", "support tickets opened in the last 365 days"),
         ("open_tickets", "tickets opened before the cutoff and not resolved by it"))
    + _f("support", "number",
         ("mean_first_response_hours_365d", "mean hours to first response, tickets of the last 365 days"),
         ("max_first_response_hours_365d", "longest first response in hours, tickets of the last 365 days"),
         ("mean_resolution_hours_365d", "mean hours to resolution, tickets resolved in the last 365 days"),
         ("max_resolution_hours_365d", "longest resolution in hours, tickets resolved in the last 365 days"))
    + _f("profile", "timestamp",
         ("signup_at", "when the customer first signed up with any source system"))
    + _f("profile", "count",
         ("source_systems", "how many source-system accounts were merged into this customer"),
         ("marketing_opt_in", "1 if the customer accepts marketing, 0 if not"))
    + _f("profile", "category",
         ("acquisition_channel", "channel the customer was acquired through"),
         ("city", "city of the customer"),
         ("age_band", "age band at the cutoff: <25, 25-34, 35-44, 45-54, 55+"))
    # BG/NBD and Gamma-Gamma fitted on the customers of each cutoff (features/btyd.py), evaluated at
    # the cutoff. The windows are the configured label windows (training.*_window_days), named by
    # the model they serve, not by their days: a model reads the quantity of its own window whatever
    # a deployment sets it to; the days of each snapshot are in its fit file (btyd/<cutoff>.json).
    # NULL where the cutoff's history cannot fit the model (too few repeat buyers).
    + _f("btyd", "number",
         ("btyd_prob_alive", "BG/NBD probability that the customer is still alive (has not dropped out) at the cutoff"),
         ("btyd_prob_no_purchase_churn_window", "BG/NBD probability of no purchase day in the churn window"),
         ("btyd_expected_purchases_churn_window", "BG/NBD expected purchase days in the churn window"),
         ("btyd_prob_no_purchase_repurchase_window", "BG/NBD probability of no purchase day in the repurchase window"),
         ("btyd_expected_purchases_repurchase_window", "BG/NBD expected purchase days in the repurchase window"),
         ("btyd_expected_purchases_clv_window", "BG/NBD expected purchase days in the CLV window"),
         ("btyd_expected_order_value", "Gamma-Gamma expected net revenue of a purchase day, given the customer's own"),
         ("btyd_expected_revenue_clv_window",
          "BG/NBD x Gamma-Gamma expected net revenue in the CLV window (expected purchase days x expected value)"))
)

# Day counts computed at request time from the stored timestamps, so they are right on the
# day of the request and not frozen at the day of the snapshot: name -> stored timestamp.
RECENCY_FEATURES: dict[str, str] = {
    "days_since_first_order": "first_order_at",
    "days_since_first_purchase_day": "first_purchase_day_at",  # BG/NBD's T
    "days_since_last_order": "last_order_at",
    "days_since_last_engagement": "last_engagement_at",
    "days_since_last_survey": "last_survey_at",
    "tenure_days": "signup_at",
}


# What the BTYD baselines read (training.baselines.btyd.rfm_summary_from_features): purchase days
# (BG/NBD's frequency + 1), recency, T and the monetary value. Later than the v1 FeatureServices,
# which do not read them (features/model_inputs.py).
BTYD_SUMMARY_FEATURES: tuple[str, ...] = (
    "purchase_days_lifetime",
    "days_first_to_last_purchase_day",
    "days_since_first_purchase_day",
    "repeat_purchase_day_value",
)


def family_features(family: Family) -> tuple[Feature, ...]:
    return tuple(feature for feature in STORED_FEATURES if feature.family == family)


def feature(name: str) -> Feature:
    for candidate in STORED_FEATURES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


# The packed online vector: numbers (counts, amounts, rates; timestamps as epoch seconds) in
# catalog order, and labels (categories) in catalog order. A NaN number or an empty label is NULL.
PACKED_NUMBERS: tuple[str, ...] = tuple(f.name for f in STORED_FEATURES if f.kind != "category")
PACKED_LABELS: tuple[str, ...] = tuple(f.name for f in STORED_FEATURES if f.kind == "category")
