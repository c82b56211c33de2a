"""Reasons behind a churn score in the business's words: a feature and the customer's value of it
become "last order 142 days ago (typical: 60 days)" instead of "days_since_last_order=142.3".

A reason's words state the customer's value and the typical one (the median of the churn model's
test customers, recorded in its version) and never a judgement of their own, so they agree with
the direction the model gives ("raises risk", "lowers risk"): the old "no order for 52 days —
lowers risk" read as a contradiction when 52 days was more recent than most. A number is a reason
only when its story holds together (`coherent`): the customer differs from typical, and on the side
that moves churn the way the contribution says, by the direction the churn model itself learned for
the feature (the sign of the rank correlation between the feature and its contributions on the
test customers, recorded in the version; a feature without a clear direction gives no comparison
anyone can act on, so no reason). "78 orders ever (typical: 3) — raises risk" or "2 orders in the
last 12 months (typical: 2) — raises risk" are left out; a category or a missing value (a state,
"fewer than two orders") needs no comparison."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from custlens.words import counted
from features.catalog import RECENCY_FEATURES, family_features, feature

Phrase = Callable[[float], str]


def _days(value: float) -> str:
    return counted(round(value), "day")


def _count(value: float, one: str, many: str) -> str:
    return counted(round(value), one, many)


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _hours(value: float) -> str:
    return f"{value:.0f} h" if value < 48 else f"{value / 24:.1f} days"


# What a value of the feature says about the customer; a NaN value has its own words (`_MISSING`).
_PHRASES: dict[str, Phrase] = {
    "days_since_last_order": lambda v: f"last order {_days(v)} ago",
    "days_since_first_order": lambda v: f"first order {_days(v)} ago",
    "days_since_first_purchase_day": lambda v: f"first purchase day {_days(v)} ago",
    "days_since_last_engagement": lambda v: f"last visit, open or click {_days(v)} ago",
    "days_since_last_survey": lambda v: f"last survey answer {_days(v)} ago",
    "tenure_days": lambda v: f"customer for {_days(v)}",
    "orders_30d": lambda v: _count(v, "order", "orders") + " in the last 30 days",
    "orders_90d": lambda v: _count(v, "order", "orders") + " in the last 90 days",
    "orders_365d": lambda v: _count(v, "order", "orders") + " in the last 12 months",
    "orders_lifetime": lambda v: _count(v, "order", "orders") + " ever",
    "categories_365d": lambda v: _count(v, "product category", "product categories") + " bought in 12 months",
    "channels_365d": lambda v: _count(v, "sales channel", "sales channels") + " used in 12 months",
    "purchase_days_lifetime": lambda v: "bought on " + _count(v, "day", "days") + " ever",
    "revenue_30d": lambda v: f"spent {_money(v)} in the last 30 days",
    "revenue_90d": lambda v: f"spent {_money(v)} in the last 90 days",
    "revenue_365d": lambda v: f"spent {_money(v)} in the last 12 months",
    "revenue_lifetime": lambda v: f"spent {_money(v)} in all",
    "avg_order_value": lambda v: f"average order {_money(v)}",
    "mean_days_between_orders": lambda v: f"orders every {_days(v)} on average",
    "std_days_between_orders": lambda v: f"gaps between orders vary by {_days(v)}",
    "days_first_to_last_purchase_day": lambda v: f"bought over {_days(v)} from first to last purchase",
    "repeat_purchase_day_value": lambda v: f"spent {_money(v)} per repeat purchase day",
    "return_rate_365d": lambda v: f"returned {_percent(v)} of orders in 12 months",
    "cancellation_rate_365d": lambda v: f"cancelled {_percent(v)} of orders in 12 months",
    "discount_share_365d": lambda v: f"{_percent(v)} of spend was discount",
    "orders_trend_90d": lambda v: (
        f"{_count(abs(v), 'order', 'orders')} {'fewer' if v < 0 else 'more'} than the 90 days before"
        if round(v) != 0
        else "as many orders as the 90 days before"
    ),
    "revenue_trend_90d": lambda v: f"spend {'down' if v < 0 else 'up'} {_money(abs(v))} on the 90 days before",
    "sessions_30d": lambda v: _count(v, "visit", "visits") + " in the last 30 days",
    "sessions_90d": lambda v: _count(v, "visit", "visits") + " in the last 90 days",
    "page_views_30d": lambda v: _count(v, "page view", "page views") + " in the last 30 days",
    "page_views_90d": lambda v: _count(v, "page view", "page views") + " in the last 90 days",
    "add_to_cart_30d": lambda v: _count(v, "add-to-cart", "add-to-carts") + " in the last 30 days",
    "add_to_cart_90d": lambda v: _count(v, "add-to-cart", "add-to-carts") + " in the last 90 days",
    "app_opens_30d": lambda v: _count(v, "app open", "app opens") + " in the last 30 days",
    "app_opens_90d": lambda v: _count(v, "app open", "app opens") + " in the last 90 days",
    "email_unsubscribes_90d": lambda v: "unsubscribed from email lately" if v > 0 else "still subscribed to email",
    "email_spam_reports_90d": lambda v: "reported an email as spam lately" if v > 0 else "no spam reports",
    "social_shares_90d": lambda v: _count(v, "social share", "social shares") + " in 90 days",
    "referrals_90d": lambda v: _count(v, "referral", "referrals") + " in 90 days",
    "bounce_rate_90d": lambda v: f"{_percent(v)} of visits bounced",
    "cart_abandonment_rate_90d": lambda v: f"abandoned {_percent(v)} of carts",
    "email_open_rate_30d": lambda v: f"opened {_percent(v)} of emails in 30 days",
    "email_open_rate_90d": lambda v: f"opened {_percent(v)} of emails in 90 days",
    "email_click_rate_30d": lambda v: f"clicked {_percent(v)} of emails in 30 days",
    "email_click_rate_90d": lambda v: f"clicked {_percent(v)} of emails in 90 days",
    "sms_delivery_rate_90d": lambda v: f"{_percent(v)} of SMS delivered",
    "survey_responses": lambda v: _count(v, "survey answer", "survey answers"),
    "last_nps": lambda v: f"last NPS answer {round(v)}/10",
    "mean_csat_365d": lambda v: f"mean CSAT {v:.1f}/5",
    "tickets_90d": lambda v: _count(v, "support ticket", "support tickets") + " in 90 days",
    "tickets_365d": lambda v: _count(v, "support ticket", "support tickets") + " in 12 months",
    "open_tickets": lambda v: _count(v, "unresolved ticket", "unresolved tickets"),
    "mean_first_response_hours_365d": lambda v: f"waited {_hours(v)} for a first answer on average",
    "max_first_response_hours_365d": lambda v: f"waited up to {_hours(v)} for a first answer",
    "mean_resolution_hours_365d": lambda v: f"tickets took {_hours(v)} to resolve on average",
    "max_resolution_hours_365d": lambda v: f"a ticket took {_hours(v)} to resolve",
    "source_systems": lambda v: f"known to {_count(v, 'system', 'systems')}",
    "marketing_opt_in": lambda v: "accepts marketing" if v >= 0.5 else "does not accept marketing",
    # the btyd family: what BG/NBD and Gamma-Gamma expect of the customer, at the snapshot
    "btyd_prob_alive": lambda v: f"{_percent(v)} likely still a customer (BG/NBD)",
    "btyd_prob_no_purchase_churn_window": lambda v: f"{_percent(v)} chance of no purchase in the churn window (BG/NBD)",
    "btyd_expected_purchases_churn_window": lambda v: f"{v:.2g} purchase days expected in the churn window (BG/NBD)",
    "btyd_prob_no_purchase_repurchase_window":
        lambda v: f"{_percent(v)} chance of no purchase in the repurchase window (BG/NBD)",
    "btyd_expected_purchases_repurchase_window":
        lambda v: f"{v:.2g} purchase days expected in the repurchase window (BG/NBD)",
    "btyd_expected_purchases_clv_window": lambda v: f"{v:.2g} purchase days expected in the CLV window (BG/NBD)",
    "btyd_expected_order_value": lambda v: f"{_money(v)} expected per purchase day (Gamma-Gamma)",
    "btyd_expected_revenue_clv_window": lambda v: f"{_money(v)} expected in the CLV window (BG/NBD x Gamma-Gamma)",
}  # fmt: skip

_MISSING: dict[str, str] = {
    "days_since_last_order": "no completed order yet",
    "days_since_first_order": "no completed order yet",
    "days_since_first_purchase_day": "no completed order yet",
    "days_first_to_last_purchase_day": "no completed order yet",
    "days_since_last_engagement": "never visited, opened or clicked",
    "days_since_last_survey": "never answered a survey",
    "mean_days_between_orders": "fewer than two orders",
    "std_days_between_orders": "fewer than three orders",
    "avg_order_value": "no completed order yet",
    "last_nps": "never answered NPS",
    "mean_csat_365d": "no CSAT answer in 12 months",
    "email_open_rate_30d": "no email sent in 30 days",
    "email_open_rate_90d": "no email sent in 90 days",
    "email_click_rate_30d": "no email sent in 30 days",
    "email_click_rate_90d": "no email sent in 90 days",
    "bounce_rate_90d": "no visit in 90 days",
    "cart_abandonment_rate_90d": "no cart in 90 days",
    "sms_delivery_rate_90d": "no SMS sent in 90 days",
    "mean_first_response_hours_365d": "no ticket answered in 12 months",
    "mean_resolution_hours_365d": "no ticket resolved in 12 months",
    **{f.name: "too little purchase history to fit BG/NBD" for f in family_features("btyd")},
}

_CATEGORY_WORDS = {
    "acquisition_channel": "acquired through {}",
    "city": "lives in {}",
    "age_band": "aged {}",
    "last_nps_category": "last NPS: {}",
}


# Which way churn moves as the feature grows, where that holds for every customer (+1: more churn):
# what a version that records no directions of its own is read with.
CHURN_DIRECTION: dict[str, int] = {
    "days_since_last_order": 1,
    "days_since_last_engagement": 1,
    "orders_30d": -1,
    "orders_90d": -1,
    "orders_365d": -1,
    "purchase_days_lifetime": -1,
    "sessions_30d": -1,
    "sessions_90d": -1,
    "btyd_prob_alive": -1,
    "btyd_prob_no_purchase_churn_window": 1,
    "btyd_expected_purchases_churn_window": -1,
}


def _typical(name: str) -> Phrase:
    """How a typical value of the feature is written: in days, as a share, money, hours or a count."""
    if name in RECENCY_FEATURES or name.startswith(("mean_days", "std_days", "days_")):
        return _days
    if name.endswith(("rate_30d", "rate_90d", "rate_365d", "share_365d")) or name.startswith("btyd_prob_"):
        return _percent
    if name.startswith(("revenue_", "avg_order_value", "repeat_purchase_day_value", "btyd_expected_order_value",
                        "btyd_expected_revenue_clv_window")):
        return _money
    if "_hours_" in name:
        return _hours
    return lambda v: f"{v:,.0f}" if abs(v) >= 10 or v == round(v) else f"{v:.2g}"


def explain(name: str, value: object, typical: float | None) -> str:
    """`describe`, and the typical customer's value beside a number: "3 orders ever (typical: 1)"."""
    words = describe(name, value)
    if typical is None or name in _CATEGORY_WORDS or _missing(value) or name not in _PHRASES:
        return words
    return f"{words} (typical: {_typical(name)(typical)})"


def coherent(name: str, value: object, typical: float | None, impact: float,
             directions: Mapping[str, int] | None = None) -> bool:  # fmt: skip
    """Whether a contribution (`impact` on churn's log-odds) makes a reason that holds together
    (module docstring). `directions`: the churn version's learned direction per feature (+1: more
    of it, more churn); None for a version that records none, read with CHURN_DIRECTION, and then a
    feature of unknown direction is taken as it comes."""
    if name in _CATEGORY_WORDS or _missing(value) or typical is None:
        return True
    direction = (directions if directions is not None else CHURN_DIRECTION).get(name)
    if direction is None:
        return directions is None
    side = float(value) - typical  # type: ignore[arg-type]
    if side == 0 or impact == 0:
        return False  # a typical value explains nothing
    return (side > 0) == ((impact > 0) == (direction > 0))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float | int) and math.isnan(float(value)))


def has_words(name: str) -> bool:
    """Whether the feature has words of its own here; `describe` falls back to the catalog's
    description for one that has not, which reads like a data dictionary, not a reason."""
    return name in _PHRASES or name in _CATEGORY_WORDS


def describe(name: str, value: object) -> str:
    """The feature and the customer's value in a few plain words."""
    if name in _CATEGORY_WORDS:
        return _CATEGORY_WORDS[name].format(value) if value not in (None, "") else f"no {name.replace('_', ' ')}"
    number = float("nan") if value is None else float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        return _MISSING.get(name, f"{_meaning(name)}: unknown")
    phrase = _PHRASES.get(name)
    return phrase(number) if phrase else f"{_meaning(name)}: {number:,.4g}"


def _meaning(name: str) -> str:
    if name in RECENCY_FEATURES:
        return f"days since {RECENCY_FEATURES[name].removesuffix('_at').replace('_', ' ')}"
    return feature(name).description
