"""Reasons behind a churn score in the business's words: a feature and the customer's value of it
become "no order for 142 days" instead of "days_since_last_order=142.3"."""

from __future__ import annotations

import math
from collections.abc import Callable

from custlens.words import counted
from features.catalog import RECENCY_FEATURES, feature

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
    "days_since_last_order": lambda v: f"no order for {_days(v)}",
    "days_since_first_order": lambda v: f"first order {_days(v)} ago",
    "days_since_first_purchase_day": lambda v: f"first purchase day {_days(v)} ago",
    "days_since_last_engagement": lambda v: f"no visit, open or click for {_days(v)}",
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
    "std_days_between_orders": lambda v: f"irregular buyer (gaps vary by {_days(v)})",
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
}

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
}

_CATEGORY_WORDS = {
    "acquisition_channel": "acquired through {}",
    "city": "lives in {}",
    "age_band": "aged {}",
    "last_nps_category": "last NPS: {}",
}


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
