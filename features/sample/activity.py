"""What the simulated people buy and say, and what the shop spends to find them: orders (when, on
which account, what and for how much), support tickets, surveys, and the daily marketing spend
per paid channel that follows the customers each channel brought in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.sample.formats import blank, format_dates, join, number_strings, pick
from features.sample.people import Accounts, People
from features.sample.world import (
    ACQUISITION_CHANNELS,
    CATEGORY_VALUE,
    CRM,
    GG_P,
    ORDER_HOURS,
    ORDER_SOURCES,
    ORDER_STATUS_WEIGHTS,
    SUPPORT_HOURS,
    Window,
    categorical,
    row_choice,
    time_of_day,
)

PAID_CHANNELS = ("paid_search", "paid_social", "email", "referral", "offline")
# per channel: cost per acquired customer, base daily spend, cost per 1,000 impressions, click rate
CHANNEL_ECONOMICS = {
    "paid_search": (180_000, 1_500_000, 40_000, 0.035),
    "paid_social": (150_000, 2_000_000, 25_000, 0.012),
    "email": (20_000, 300_000, 2_000, 0.03),
    "referral": (100_000, 200_000, None, None),
    "offline": (250_000, 1_000_000, None, None),
}

TICKET_CHANNELS = ("phone", "email", "chat", "zalo")
TICKET_CHANNEL_WEIGHTS = (0.3, 0.2, 0.3, 0.2)
TICKET_CHANNEL_DELAY = np.array([0.2, 1.5, 0.5, 0.8])
TICKET_CATEGORIES = ("giao hàng", "đổi trả", "thanh toán", "sản phẩm lỗi", "tài khoản", "khuyến mãi")
SURVEY_CHANNELS = ("email", "sms", "app", "zalo")
SURVEY_CHANNEL_WEIGHTS = (0.5, 0.2, 0.15, 0.15)
# survey comments by mood: unhappy, neutral, happy
COMMENTS = (
    ("Sản phẩm lỗi, thất vọng", "Giao hàng quá chậm", "Chăm sóc khách hàng phản hồi chậm",
     "Hàng không giống hình, muốn đổi trả", "Đóng gói sơ sài, sản phẩm bị móp"),
    ("Tạm ổn", "Giao hàng hơi chậm nhưng sản phẩm ổn", "Bình thường, không có gì đặc biệt",
     "Cần thêm nhiều mẫu mã hơn"),
    ("Giao hàng nhanh, rất hài lòng", "Sản phẩm đúng mô tả, sẽ ủng hộ tiếp", "Nhân viên tư vấn nhiệt tình",
     "Đóng gói cẩn thận, chất lượng tốt", "Giá hợp lý, hàng chính hãng"),
)  # fmt: skip

# ---------------------------------------------------------------- orders


@dataclass
class Orders:
    person: np.ndarray
    account: np.ndarray
    t: np.ndarray
    status: np.ndarray  # index into ORDER_STATUSES
    net: np.ndarray
    discount: np.ndarray
    items: np.ndarray
    category: np.ndarray


def simulate_orders(rng: np.random.Generator, people: People, accounts: Accounts, window: Window) -> Orders:
    n = len(people)
    start = people.signup + 20 / 1440
    stop = np.minimum(people.dropout, window.days)
    alive = stop > start
    level_start = window.cumulative_at(start, people.deal)
    level_stop = np.where(alive, window.cumulative_at(np.maximum(stop, start), people.deal), level_start)
    expected = people.purchase_rate / 365 * (level_stop - level_start)
    later = rng.poisson(expected)
    owner = np.repeat(np.arange(n), later)
    level = level_start[owner] + rng.random(len(owner)) * (level_stop - level_start)[owner]
    t = window.time_at(level, people.deal[owner])
    t = np.clip(time_of_day(rng, t, ORDER_HOURS), start[owner], stop[owner] - 1e-6)
    first = np.flatnonzero(people.first_order)
    first_t = people.signup[first] + rng.uniform(1, 20, len(first)) / 1440
    keep_first = first_t < window.days
    person = np.concatenate([first[keep_first], owner])
    t = np.concatenate([first_t[keep_first], t])
    count = len(person)

    # which of the person's pos/web/app accounts open by then carries it, by their order weights;
    # the signup order is on the entry account
    order_accounts = accounts.of_person[person][:, ORDER_SOURCES]
    exists = order_accounts >= 0
    created = np.where(exists, accounts.created[np.maximum(order_accounts, 0)], np.inf)
    weights = (created <= t[:, None]) * accounts.order_weight[np.maximum(order_accounts, 0)]
    weights[: int(keep_first.sum())] *= (
        np.array(ORDER_SOURCES) == accounts.entry[person[: int(keep_first.sum())]][:, None]
    )
    account = order_accounts[np.arange(count), row_choice(rng, weights)]

    status = categorical(rng, ORDER_STATUS_WEIGHTS, count)
    category = row_choice(rng, people.category_preference[person])
    mean_value = people.value_scale[person] * CATEGORY_VALUE[category]
    value = rng.gamma(GG_P, mean_value / GG_P)
    net = np.maximum(np.round(value / 1000) * 1000, 10_000).astype(np.int64)
    promo = window.promo[np.clip(np.floor(t).astype(np.int64), 0, window.days - 1)]
    deal = people.deal[person]
    discount_probability = np.where(deal, np.where(promo, 0.95, 0.7), np.where(promo, 0.5, 0.1))
    share = np.where(deal, rng.uniform(0.15, 0.5, count), rng.uniform(0.1, 0.4, count))
    gross = np.round(net / (1 - share) / 1000) * 1000
    discount = np.where(rng.random(count) < discount_probability, gross - net, 0).astype(np.int64)
    items = 1 + np.minimum(rng.poisson(0.7, count), 5)
    order = np.argsort(t, kind="stable")
    return Orders(person[order], account[order], t[order], status[order], net[order], discount[order],
                  items[order], category[order])  # fmt: skip


# ---------------------------------------------------------------- support and voice of customer


@dataclass
class Tickets:
    person: np.ndarray
    opened: np.ndarray
    first_response: np.ndarray  # nan when after the end of the window
    resolved: np.ndarray
    channel: np.ndarray
    category: np.ndarray


def simulate_tickets(rng: np.random.Generator, people: People, accounts: Accounts, orders: Orders,
                     window: Window) -> Tickets:  # fmt: skip
    has_crm = accounts.of_person[:, CRM] >= 0
    stop = np.minimum(people.dropout, window.days)
    rate = np.where(has_crm, 0.3 * np.exp(-0.6 * people.satisfaction), 0)
    span = np.maximum(stop - people.signup, 0)
    owner = np.repeat(np.arange(len(people)), rng.poisson(rate / 365 * span))
    opened = time_of_day(rng, people.signup[owner] + rng.random(len(owner)) * span[owner], SUPPORT_HOURS)
    category = rng.choice([0, 2, 3, 4, 5], len(owner))
    returned = np.flatnonzero((orders.status == 1) & has_crm[orders.person] & (rng.random(len(orders.t)) < 0.4))
    return_opened = orders.t[returned] + rng.uniform(1, 5, len(returned))
    person = np.concatenate([owner, orders.person[returned]])
    opened = np.concatenate([opened, return_opened])
    category = np.concatenate([category, np.full(len(returned), 1)])
    opened = np.maximum(opened, people.signup[person] + 0.05)
    inside = opened < window.days
    person, opened, category = person[inside], opened[inside], category[inside]
    count = len(person)
    channel = categorical(rng, TICKET_CHANNEL_WEIGHTS, count)
    slowness = people.slowness[person]
    first_hours = rng.lognormal(math.log(4) + 0.8 * slowness, 0.8) * TICKET_CHANNEL_DELAY[channel]
    first_response = opened + np.maximum(first_hours, 1 / 60) / 24
    resolved = first_response + rng.lognormal(math.log(18) + 0.5 * slowness, 0.9) / 24
    first_response = np.where(first_response < window.days, first_response, np.nan)
    resolved = np.where(resolved < window.days, resolved, np.nan)
    order = np.argsort(opened, kind="stable")
    return Tickets(person[order], opened[order], first_response[order], resolved[order], channel[order],
                   category[order])  # fmt: skip


@dataclass
class Surveys:
    person: np.ndarray
    t: np.ndarray
    nps: np.ndarray  # bool: nps, else csat
    score: np.ndarray
    channel: np.ndarray
    comment: pa.Array


def simulate_surveys(rng: np.random.Generator, people: People, accounts: Accounts, orders: Orders,
                     tickets: Tickets, window: Window) -> Surveys:  # fmt: skip
    has_crm = accounts.of_person[:, CRM] >= 0
    after_order = (orders.status == 0) & has_crm[orders.person] & (rng.random(len(orders.t)) < 0.15)
    order_person = orders.person[after_order]
    order_t = orders.t[after_order] + rng.uniform(1, 4, len(order_person))
    order_nps = rng.random(len(order_person)) < 0.5
    after_ticket = ~np.isnan(tickets.resolved) & (rng.random(len(tickets.person)) < 0.35)
    ticket_person = tickets.person[after_ticket]
    ticket_t = tickets.resolved[after_ticket] + rng.uniform(0.05, 2, len(ticket_person))
    person = np.concatenate([order_person, ticket_person])
    t = np.concatenate([order_t, ticket_t])
    nps = np.concatenate([order_nps, np.zeros(len(ticket_person), dtype=bool)])
    from_ticket = np.concatenate([np.zeros(len(order_person), dtype=bool), np.ones(len(ticket_person), dtype=bool)])
    z, w = people.satisfaction[person], people.slowness[person]
    noise = rng.standard_normal(len(person))
    nps_score = np.clip(np.round(7 + 1.8 * z + 1.3 * noise), 0, 10)
    csat_score = np.where(from_ticket, 3.6 + 0.6 * z - 0.5 * w, 3.9 + 0.7 * z) + 0.6 * noise
    score = np.where(nps, nps_score, np.clip(np.round(csat_score), 1, 5)).astype(np.int64)
    inside = t < window.days
    person, t, nps, score = person[inside], t[inside], nps[inside], score[inside]
    count = len(person)
    mood = np.where(nps, np.digitize(score, [7, 9]), np.digitize(score, [3, 4]))  # 0 unhappy, 1 neutral, 2 happy
    all_comments = COMMENTS[0] + COMMENTS[1] + COMMENTS[2]
    offsets = np.array([0, len(COMMENTS[0]), len(COMMENTS[0]) + len(COMMENTS[1])])
    sizes = np.array([len(group) for group in COMMENTS])
    comment_index = offsets[mood] + (rng.random(count) * sizes[mood]).astype(np.int64)
    comment = blank(pick(all_comments, comment_index), rng.random(count) < 0.35)
    order = np.argsort(t, kind="stable")
    return Surveys(person[order], t[order], nps[order], score[order],
                   categorical(rng, SURVEY_CHANNEL_WEIGHTS, count)[order], comment.take(pa.array(order)))  # fmt: skip


# ---------------------------------------------------------------- marketing spend


def simulate_marketing_spend(rng: np.random.Generator, window: Window, new_customers: np.ndarray) -> pa.Table:
    """One row per day and paid channel; spend follows the customers each channel brought in."""
    days, channels = window.days, len(PAID_CHANNELS)
    day = np.repeat(np.arange(days), channels)
    channel = np.tile(np.arange(channels), days)
    acquired = new_customers[day, channel]
    cac, base, cpm, ctr = (np.array([CHANNEL_ECONOMICS[name][k] or 0 for name in PAID_CHANNELS], dtype=float)[channel]
                           for k in range(4))  # fmt: skip
    spend = acquired * cac * rng.lognormal(0, 0.25, len(day)) + base * rng.lognormal(0, 0.2, len(day))
    spend = np.maximum(np.round(spend / 1000) * 1000, 1000).astype(np.int64)
    impressions = np.round(spend / np.maximum(cpm, 1) * 1000 * rng.lognormal(0, 0.1, len(day))).astype(np.int64)
    clicks = rng.binomial(impressions, np.clip(ctr, 0, 1))
    measured = cpm > 0
    month = format_dates(window.day_numbers[day])
    return pa.table(
        {
            "date": format_dates(window.day_numbers[day]),
            "channel": pick(PAID_CHANNELS, channel),
            "spend": number_strings(spend),
            "campaign_id": join(pick(PAID_CHANNELS, channel), "-", pc.utf8_slice_codeunits(month, 0, 7)),
            "impressions": blank(number_strings(impressions), measured),
            "clicks": blank(number_strings(clicks), measured),
            "new_customers": number_strings(acquired),
        }
    )


def paid_acquisitions(people: People) -> tuple[np.ndarray, np.ndarray]:
    """Signup day and paid channel (index into PAID_CHANNELS) of each person a paid channel brought in."""
    names = np.array(ACQUISITION_CHANNELS)[people.channel]
    paid = np.isin(names, PAID_CHANNELS)
    day = np.floor(people.signup[paid]).astype(np.int64)
    channel = np.array([PAID_CHANNELS.index(name) for name in names[paid].tolist()], dtype=np.int64)
    return day, channel
