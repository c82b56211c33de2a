"""What the simulated people do online and in their inboxes: browsing sessions (and the ones that
lead to an order), social shares, referrals, reviews, and the email and SMS campaigns sent to them,
collected as engagement rows (`Events`) in time order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.lake.contracts import EVENT_TYPES
from features.sample.activity import Orders
from features.sample.formats import format_dates
from features.sample.people import Accounts, People
from features.sample.world import (
    APP,
    CRM,
    EMAIL,
    EMAIL_OPEN_BASE,
    EMAIL_OPEN_DELAY_DAYS,
    EMAIL_OPEN_RESPONSIVE,
    ORDER_HOURS,
    ORDER_SESSION_LEAD_MINUTES,
    WEB,
    Window,
    fade,
    referral_rate,
    session_rate,
    share_rate,
    time_of_day,
)

_EVENT = {name: code for code, name in enumerate(EVENT_TYPES)}
EVENT_CHANNELS = ("web", "app", "email", "sms")  # the `channel` codes of Events.add


@dataclass
class Events:
    """Columns of engagement rows being collected; concatenated and sorted once at the end."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    sessions: int = 0

    def add(self, account: np.ndarray, t: np.ndarray, event: str | np.ndarray, channel: int | np.ndarray,
            campaign: np.ndarray | None = None, session: np.ndarray | None = None,
            duration: np.ndarray | None = None, pages: np.ndarray | None = None, rank: int = 0) -> None:  # fmt: skip
        size = len(account)

        def compact(values: int | np.ndarray | None, dtype: type = np.int32) -> np.ndarray:
            return np.broadcast_to(np.asarray(-1 if values is None else values, dtype=dtype), (size,))

        self.parts.append(
            {
                "account": compact(account), "t": np.asarray(t, dtype=np.float64),
                "event": compact(_EVENT[event] if isinstance(event, str) else event, np.int8),
                "channel": compact(channel, np.int8), "campaign": compact(campaign, np.int16),
                "session": compact(session), "duration": compact(duration), "pages": compact(pages, np.int16),
                "rank": compact(rank, np.int8),
            }
        )  # fmt: skip

    def new_sessions(self, count: int) -> np.ndarray:
        numbers = np.arange(self.sessions, self.sessions + count)
        self.sessions += count
        return numbers

    def collected(self, until: float) -> dict[str, np.ndarray]:
        """All rows before `until` in time order (ties: in the order they happen within a session
        or campaign)."""
        names = list(self.parts[0])
        t = np.concatenate([part["t"] for part in self.parts])
        order = np.lexsort((np.concatenate([part["rank"] for part in self.parts]), t))
        order = order[t[order] < until]
        merged = {"t": t[order]}
        del t
        for name in names:
            if name not in merged:
                merged[name] = np.concatenate([part[name] for part in self.parts])[order]
        return merged


def _web_or_app(rng: np.random.Generator, accounts: Accounts, person: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The account a person browses with at t: the app when they have both (60%), -1 if none yet."""
    web, app = accounts.of_person[person, WEB], accounts.of_person[person, APP]
    web_ok = (web >= 0) & (accounts.created[np.maximum(web, 0)] <= t)
    app_ok = (app >= 0) & (accounts.created[np.maximum(app, 0)] <= t)
    use_app = app_ok & (~web_ok | (rng.random(len(t)) < 0.6))
    return np.where(use_app, app, np.where(web_ok, web, -1))


def _thinned(rng: np.random.Generator, rate_per_year: np.ndarray, start: np.ndarray, stop: np.ndarray,
             dropout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Owner index and time of a Poisson process of `rate_per_year` x fade on (start, stop)."""
    span = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), rng.poisson(rate_per_year / 365 * span))
    t = start[owner] + rng.random(len(owner)) * span[owner]
    kept = rng.random(len(owner)) < fade(t, dropout[owner])
    return owner[kept], t[kept]


def _add_sessions(
    rng: np.random.Generator,
    events: Events,
    accounts: Accounts,
    account: np.ndarray,
    t: np.ndarray,
    ordered_at: np.ndarray | None = None,
) -> None:
    """session_start (with page views and duration) and what happens in it; app sessions open the
    app. A session that ends in an order (`ordered_at`) puts the cart and the checkout before it."""
    count = len(t)
    buying = np.full(count, ordered_at is not None)
    session = events.new_sessions(count)
    channel = np.where(accounts.source[account] == APP, 1, 0)
    bounce = ~buying & (rng.random(count) < 0.35)
    pages = np.where(bounce, 1, 2 + rng.poisson(6 if ordered_at is not None else 4, count))
    duration = np.where(bounce, rng.integers(3, 30, count), (pages * rng.gamma(2.0, 25, count)).astype(np.int64))
    until_checkout = duration / 86400
    if ordered_at is not None:
        until_checkout = ordered_at - t
        duration = (until_checkout * 86400).astype(np.int64) + rng.integers(30, 300, count)
    app = channel == 1
    events.add(account[app], t[app] - 2 / 86400, "app_open", 1, session=session[app], rank=0)
    events.add(account, t, "session_start", channel, session=session, duration=duration, pages=pages, rank=1)
    events.add(account[bounce], t[bounce] + duration[bounce] / 86400, "bounce", channel[bounce],
               session=session[bounce], rank=2)  # fmt: skip
    cart = buying | (~bounce & (rng.random(count) < 0.25))
    at_cart = t + rng.uniform(0.2, 0.6, count) * until_checkout
    events.add(account[cart], at_cart[cart], "add_to_cart", channel[cart], session=session[cart], rank=3)
    checkout = buying | (cart & (rng.random(count) < 0.3))
    at_checkout = t + rng.uniform(0.7, 0.95, count) * until_checkout
    events.add(account[checkout], at_checkout[checkout], "checkout_start", channel[checkout],
               session=session[checkout], rank=4)  # fmt: skip


@dataclass(frozen=True)
class Campaigns:
    """The email and SMS campaigns of the whole history, the same for every chunk."""

    names: tuple[str, ...]
    email_t: np.ndarray  # send times of email campaigns (days); their names come first
    sms_t: np.ndarray

    @classmethod
    def schedule(cls, rng: np.random.Generator, window: Window) -> Campaigns:
        def every(days: float, hour: float) -> np.ndarray:
            """Roughly every `days` days (give or take two), in the hour after `hour` local time."""
            count = int(window.days // days) + 1
            day = np.floor(rng.uniform(0, days) + days * np.arange(count) + rng.integers(-2, 3, count))
            day = day[(day >= 0) & (day < window.days)]
            return np.sort(day + (hour + rng.random(len(day))) / 24)

        email_t, sms_t = every(14, 9), every(30, 11)

        def named(prefix: str, times: np.ndarray) -> list[str]:
            stamps = format_dates(window.day_numbers[np.floor(times).astype(np.int64)]).to_pylist()
            return [f"{prefix}-{stamp}" for stamp in stamps]

        return cls(tuple(named("EMC", email_t) + named("SMS", sms_t)), email_t, sms_t)


def _add_campaign_sends(rng: np.random.Generator, events: Events, people: People, accounts: Accounts,
                        window: Window, campaigns: Campaigns) -> None:  # fmt: skip
    # email: opted-in email-platform accounts, 35% of them per campaign, until they opt out
    email_account = accounts.of_person[:, EMAIL]
    audience = np.flatnonzero((email_account >= 0) & people.opt_in)
    if len(audience) and len(campaigns.email_t):
        created = accounts.created[email_account[audience]]
        targeted = (rng.random((len(audience), len(campaigns.email_t))) < 0.35) & (created[:, None] < campaigns.email_t)
        member, campaign = np.nonzero(targeted)  # member-major, time order within a member
        person = audience[member]
        sent = campaigns.email_t[campaign] + rng.uniform(0, 30, len(person)) / 1440
        dead = sent >= people.dropout[person]
        leaves = rng.random(len(person))
        unsubscribe = leaves < np.where(dead, 0.015, 0.004)
        spam = ~unsubscribe & (leaves > 1 - 0.0007)
        # nothing is sent after a person's first unsubscribe or spam report
        left = (unsubscribe | spam).astype(np.int64)
        before = np.cumsum(left) - left
        starts = np.r_[0, np.flatnonzero(np.diff(member)) + 1] if len(member) else np.array([], int)
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(member)]))
        still = (before - before[group_start]) == 0
        person, sent, campaign, unsubscribe, spam = (x[still] for x in (person, sent, campaign, unsubscribe, spam))
        account = email_account[person]
        events.add(account, sent, "email_sent", 2, campaign=campaign, rank=0)
        responsive = 1 - np.exp(-people.engagement[person])
        open_probability = (EMAIL_OPEN_BASE + EMAIL_OPEN_RESPONSIVE * responsive) * fade(sent, people.dropout[person])
        opened = rng.random(len(person)) < open_probability
        open_t = sent + rng.exponential(EMAIL_OPEN_DELAY_DAYS, len(person))
        opened &= open_t < window.days
        events.add(account[opened], open_t[opened], "email_open", 2, campaign=campaign[opened], rank=1)
        clicked = opened & (rng.random(len(person)) < 0.03 + 0.25 * responsive)
        click_t = open_t + rng.uniform(10, 300, len(person)) / 86400
        clicked &= click_t < window.days
        events.add(account[clicked], click_t[clicked], "email_click", 2, campaign=campaign[clicked], rank=2)
        leave_t = open_t + rng.uniform(20, 600, len(person)) / 86400
        for flag, name in ((unsubscribe, "email_unsubscribe"), (spam, "email_spam_report")):
            mask = flag & (leave_t < window.days)
            events.add(account[mask], leave_t[mask], name, 2, campaign=campaign[mask], rank=3)

    # sms: opted-in crm records with a phone, 30% per campaign
    crm_account = accounts.of_person[:, CRM]
    with_phone = (crm_account >= 0) & accounts.has_phone[np.maximum(crm_account, 0)]
    audience = np.flatnonzero(with_phone & people.opt_in)
    if len(audience) and len(campaigns.sms_t):
        created = accounts.created[crm_account[audience]]
        targeted = (rng.random((len(audience), len(campaigns.sms_t))) < 0.3) & (created[:, None] < campaigns.sms_t)
        member, campaign = np.nonzero(targeted)
        account = crm_account[audience[member]]
        sent = campaigns.sms_t[campaign] + rng.uniform(0, 20, len(member)) / 1440
        code = len(campaigns.email_t) + campaign
        events.add(account, sent, "sms_sent", 3, campaign=code, rank=0)
        reply = sent + rng.uniform(2, 60, len(member)) / 86400
        delivered = rng.random(len(member)) < 0.94
        outcome = np.where(delivered, _EVENT["sms_delivered"], _EVENT["sms_failed"])
        events.add(account, reply, outcome, 3, campaign=code, rank=1)


def simulate_engagement(rng: np.random.Generator, people: People, accounts: Accounts, orders: Orders,
                        window: Window, campaigns: Campaigns) -> Events:  # fmt: skip
    events = Events()
    online = (accounts.of_person[:, WEB] >= 0) | (accounts.of_person[:, APP] >= 0)
    end = np.full(len(people), float(window.days))
    rate = np.where(online, session_rate(people.engagement, people.purchase_rate), 0)
    owner, t = _thinned(rng, rate, people.signup, end, people.dropout)
    t = np.clip(time_of_day(rng, t, ORDER_HOURS), people.signup[owner], window.days - 1e-4)
    account = _web_or_app(rng, accounts, owner, t)
    browsing = account >= 0
    _add_sessions(rng, events, accounts, account[browsing], t[browsing])

    online_order = np.isin(accounts.source[orders.account], (WEB, APP)) & (rng.random(len(orders.t)) < 0.85)
    lead = rng.uniform(*ORDER_SESSION_LEAD_MINUTES, len(orders.t)) / 1440
    session_t = np.maximum(orders.t - lead, people.signup[orders.person])
    _add_sessions(rng, events, accounts, orders.account[online_order], session_t[online_order], orders.t[online_order])

    _add_campaign_sends(rng, events, people, accounts, window, campaigns)

    shares = np.where(online, share_rate(people.engagement, people.satisfaction), 0)
    referrals = np.where(online, referral_rate(people.satisfaction), 0)
    for rate_per_year, name in ((shares, "social_share"), (referrals, "referral")):
        owner, t = _thinned(rng, rate_per_year, people.signup, end, people.dropout)
        account = _web_or_app(rng, accounts, owner, t)
        ok = account >= 0
        events.add(account[ok], t[ok], name, np.where(accounts.source[account[ok]] == APP, 1, 0), rank=5)

    completed_online = (orders.status == 0) & np.isin(accounts.source[orders.account], (WEB, APP))
    review_t = orders.t + rng.uniform(3, 14, len(orders.t))
    reviewed = completed_online & (rng.random(len(orders.t)) < 0.1) & (review_t < window.days)
    events.add(orders.account[reviewed], review_t[reviewed], "review",
               np.where(accounts.source[orders.account[reviewed]] == APP, 1, 0), rank=5)  # fmt: skip
    return events
