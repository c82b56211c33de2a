"""The simulated shop's world: every parameter of its customers' behaviour, the calendar that drives
sales (Tết, double days, Black Friday, weekdays), the engagement fade before drop-out, the rates of
browsing, sharing and email opening, and the small draw helpers the simulation is built from.
`training.oracle` reads its laws here rather than copying them.

Generative process. Time t is in days since `start` 00:00 Asia/Ho_Chi_Minh (no DST: UTC = local
- 7 h); the window is [0, T), T = the days from `start` through `end`. Per person i, draws
independent unless said, constants as named in this module (channel and vocabulary tables in the
modules that draw them):

- signup s_i: density on [0, T) proportional to SIGNUP_GROWTH_PER_YEAR ** (t / 365), hour of day
  from SIGNUP_HOURS. Acquisition channel from ACQUISITION_WEIGHTS.
- latent_satisfaction z_i ~ N(0, 1); support_slowness w_i ~ N(0, 1);
  is_deal_seeker d_i ~ Bernoulli(DEAL_SEEKER_SHARE); engagement_rate e_i ~ Gamma(shape 2, mean 1).
- purchase_rate lambda_i ~ Gamma(shape PURCHASE_RATE_SHAPE, mean PURCHASE_RATE_MEAN), orders/year.
- dropout_hazard mu_i = mu0_i exp(SATISFACTION_HAZARD z_i + SLOWNESS_HAZARD w_i) (x DEAL_SEEKER_HAZARD
  if d_i), mu0_i ~ Gamma(shape HAZARD_SHAPE, mean HAZARD_MEAN), per year, constant in time.
  Drop-out tau_i = s_i + 365 Exp(1) / mu_i: `dropout_at` when tau_i < T, else null (`alive_at_end`).
- orders: with probability FIRST_ORDER_AT_SIGNUP (`first_order_at_signup`) one order 1-20 min after
  s_i; then a Poisson process on (s_i + 20 min, min(tau_i, T)) of intensity lambda_i / 365 * m(day)
  per day, m = `order_intensity(day, d_i)`: WEEKDAY_FACTOR x holiday factor h (14 days before Tết
  1.6, its first 5 days 0.45; 9.9 and 10.10 1.6; 11.11 2.5; 12.12 2.2; Black Friday 2.0, the
  weekend after 1.4, Cyber Monday 1.5; else 1). Deal seekers use 1 + 3 (h - 1) where h > 1 and 0.8
  where h = 1. Both are normalized to mean 1 over 2020-2029, so lambda_i is orders per year.
  Sampled by inverse CDF of the cumulative daily intensity; hour of day then from ORDER_HOURS.
  Status completed/returned/cancelled by ORDER_STATUS_WEIGHTS; items 1 + min(Poisson(0.7), 5). The
  account that carries an order is one of the person's pos/web/app accounts open by then, the one
  they signed up with weighing ENTRY_ACCOUNT_WEIGHT and each other OTHER_ACCOUNT_WEIGHT.
- order value (Gamma-Gamma): nu_i ~ Gamma(shape GG_Q, rate GG_GAMMA), category preferences
  pi_i ~ Dirichlet(0.6); an order's category c ~ pi_i and its value ~ Gamma(shape GG_P,
  mean CATEGORY_VALUE[c] GG_P / nu_i), rounded to 1,000 VND (at least 10,000) = net_amount, also for
  returned and cancelled orders. expected_order_value = GG_P / nu_i * sum_c pi_ic CATEGORY_VALUE[c].
  Discounted with probability 0.95 (promo day) / 0.7 for deal seekers and 0.5 / 0.1 for others;
  the discount is U(0.15, 0.5) (deal seekers) or U(0.1, 0.4) of gross = net + discount.
- engagement fade f_i(t) = 1 - (1 - FADE_FLOOR) exp(-(tau_i - t) / FADE_DAYS) before tau_i, FADE_FLOOR
  after (`fade`). Browsing sessions (people with a web or app account): Poisson, `session_rate` =
  SESSION_RATE e_i sqrt(lambda_i / PURCHASE_RATE_MEAN) per year, thinned by f_i(t); 35% bounce, else
  25% add to cart and 30% of those start a checkout; app sessions also log app_open. 85% of web/app
  orders get a session ORDER_SESSION_LEAD_MINUTES before (add_to_cart, checkout_start).
  social_share and referral: Poisson, `share_rate` = SHARE_RATE e_i exp(SHARE_SATISFACTION z_i) and
  `referral_rate` = REFERRAL_RATE exp(REFERRAL_SATISFACTION z_i) per year, thinned by f_i. review:
  10% of completed web/app orders, 3-14 days later.
- email campaigns about every 14 days, each to 35% of opted-in email-platform accounts, alive or
  not; P(open) = (EMAIL_OPEN_BASE + EMAIL_OPEN_RESPONSIVE (1 - exp(-e_i))) f_i(send), opened
  Exp(EMAIL_OPEN_DELAY_DAYS) after the send; P(click | open) = 0.03 + 0.25 (1 - exp(-e_i));
  per send 0.4% unsubscribe (1.5% after tau_i) and 0.07% spam report, after which nothing is sent.
  SMS campaigns about monthly to 30% of opted-in crm records with a phone; 94% delivered.
- support (people with a crm record): tickets at 0.3 exp(-0.6 z_i) per year while alive, plus 40%
  of returned orders; first response LogNormal(ln 4 + 0.8 w_i, 0.8) hours x TICKET_CHANNEL_DELAY
  after opening, resolved LogNormal(ln 18 + 0.5 w_i, 0.9) hours after that (empty and status open
  when beyond the window).
- surveys (crm): 15% of completed orders (half NPS, half CSAT), 35% of resolved tickets (CSAT).
  NPS = clip(round(7 + 1.8 z_i + 1.3 u), 0, 10); order CSAT = clip(round(3.9 + 0.7 z_i + 0.6 u), 1, 5);
  ticket CSAT = clip(round(3.6 + 0.6 z_i - 0.5 w_i + 0.6 u), 1, 5); u ~ N(0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np

from features.lake.contracts import ORDER_STATUSES

# ---------------------------------------------------------------- parameters of the world

SIGNUP_GROWTH_PER_YEAR = 1.6
DEAL_SEEKER_SHARE = 0.15
PURCHASE_RATE_SHAPE = 0.9
PURCHASE_RATE_MEAN = 5.0
HAZARD_SHAPE = 2.0
HAZARD_MEAN = 0.35
SATISFACTION_HAZARD = -0.6
SLOWNESS_HAZARD = 0.5
DEAL_SEEKER_HAZARD = 1.3
FIRST_ORDER_AT_SIGNUP = 0.75
GG_P, GG_Q, GG_MEAN = 6.0, 4.0, 600_000.0
GG_GAMMA = GG_MEAN * (GG_Q - 1) / GG_P  # rate of nu_i's Gamma: E[GG_P / nu_i] = GG_MEAN
FADE_DAYS = 25.0
FADE_FLOOR = 0.03
SESSION_RATE = 8.0
MARKETING_OPT_IN = 0.7
SHARE_RATE, SHARE_SATISFACTION = 0.4, 0.4  # social shares per year, and how satisfaction raises them
REFERRAL_RATE, REFERRAL_SATISFACTION = 0.2, 0.6
EMAIL_OPEN_BASE, EMAIL_OPEN_RESPONSIVE = 0.02, 0.45
EMAIL_OPEN_DELAY_DAYS = 0.25  # mean of the Exp delay from a send to its open
ORDER_SESSION_LEAD_MINUTES = (3, 40)  # a web/app order's session starts this long before it
ORDER_STATUS_WEIGHTS = (0.93, 0.04, 0.03)  # in ORDER_STATUSES order
COMPLETED_SHARE = ORDER_STATUS_WEIGHTS[ORDER_STATUSES.index("completed")]
ENTRY_ACCOUNT_WEIGHT = 3.0  # the account a person signed up with carries their orders this much more often
OTHER_ACCOUNT_WEIGHT = 1.0

SOURCES = ("crm", "pos", "web", "app", "email")
CRM, POS, WEB, APP, EMAIL = range(5)
ORDER_SOURCES = (POS, WEB, APP)

ACQUISITION_CHANNELS = ("organic", "paid_search", "paid_social", "email", "referral", "offline")
ACQUISITION_WEIGHTS = (0.30, 0.20, 0.22, 0.06, 0.10, 0.12)

CATEGORIES = ("fashion", "electronics", "home", "beauty", "grocery", "sports")
CATEGORY_VALUE = np.array([0.9, 2.2, 1.2, 0.7, 0.45, 1.0])

# local hour-of-day profiles (Asia/Ho_Chi_Minh)
ORDER_HOURS = np.array([1, 0.6, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 5, 6, 6.5, 5, 4, 4, 4, 4.5, 5, 6.5, 7.5, 7.5, 5, 2.5])
SIGNUP_HOURS = ORDER_HOURS
SUPPORT_HOURS = np.array([0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 5, 7, 7, 6, 4, 6, 7, 7, 6, 5, 3, 2, 1.5, 1, 0.6, 0.3])
LUNAR_NEW_YEAR = {
    2016: (2, 8), 2017: (1, 28), 2018: (2, 16), 2019: (2, 5), 2020: (1, 25), 2021: (2, 12), 2022: (2, 1),
    2023: (1, 22), 2024: (2, 10), 2025: (1, 29), 2026: (2, 17), 2027: (2, 6), 2028: (1, 26), 2029: (2, 13),
    2030: (2, 3), 2031: (1, 23), 2032: (2, 11), 2033: (1, 31), 2034: (2, 19), 2035: (2, 8),
}  # fmt: skip
WEEKDAY_FACTOR = np.array([0.92, 0.92, 0.95, 1.0, 1.06, 1.12, 1.03])  # Monday first

LOCAL_OFFSET_S = 7 * 3600

# ---------------------------------------------------------------- calendar and seasonality


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of days since 1970-01-01 (H. Hinnant's algorithm, vectorized)."""
    z = days + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _holiday_factor(days: np.ndarray) -> np.ndarray:
    """h(day) of the module docstring for local dates given as days since 1970-01-01."""
    factor = np.ones(len(days))
    if len(days) == 0:
        return factor
    special: dict[int, float] = {}
    first_year = int(civil_from_days(days.min(keepdims=True))[0][0])
    last_year = int(civil_from_days(days.max(keepdims=True))[0][0])
    for year in range(first_year - 1, last_year + 2):

        def ordinal(month: int, day: int, year: int = year) -> int:
            return (date(year, month, day) - date(1970, 1, 1)).days

        month, day = LUNAR_NEW_YEAR.get(year, (2, 5))
        tet = ordinal(month, day)
        special.update({tet - k: 1.6 for k in range(1, 15)})
        special.update({tet + k: 0.45 for k in range(5)})
        special.update({ordinal(9, 9): 1.6, ordinal(10, 10): 1.6, ordinal(11, 11): 2.5, ordinal(12, 12): 2.2})
        november_first = date(year, 11, 1)
        black_friday = ordinal(11, 1 + (3 - november_first.weekday()) % 7 + 22)
        special.update({black_friday: 2.0, black_friday + 1: 1.4, black_friday + 2: 1.4, black_friday + 3: 1.5})
    keys = np.array(sorted(special), dtype=np.int64)
    values = np.array([special[key] for key in keys.tolist()])
    position = np.clip(np.searchsorted(keys, days), 0, len(keys) - 1)
    hit = keys[position] == days
    factor[hit] = values[position[hit]]
    return factor


def _raw_intensity(days: np.ndarray, deal_seeker: bool) -> np.ndarray:
    weekday = WEEKDAY_FACTOR[(days + 3) % 7]
    holiday = _holiday_factor(days)
    if deal_seeker:
        holiday = np.where(holiday > 1, 1 + 3 * (holiday - 1), np.where(holiday < 1, holiday, 0.8))
    return weekday * holiday


@cache
def _reference_mean(deal_seeker: bool) -> float:
    start, end = ((date(year, 1, 1) - date(1970, 1, 1)).days for year in (2020, 2030))
    return float(_raw_intensity(np.arange(start, end, dtype=np.int64), deal_seeker).mean())


def order_intensity(days: np.ndarray, deal_seeker: bool) -> np.ndarray:
    """m(day): the order-rate multiplier of each local date (datetime64[D] or days since 1970-01-01),
    mean 1 over 2020-2029. Expected orders of an alive person on a day = purchase_rate / 365 * m(day)."""
    as_days = np.asarray(days).astype("datetime64[D]").astype(np.int64)
    return _raw_intensity(as_days, deal_seeker) / _reference_mean(deal_seeker)


def is_promo_day(days: np.ndarray) -> np.ndarray:
    """Days whose holiday factor raises sales (Tết run-up, double days, Black Friday weekend)."""
    return _holiday_factor(np.asarray(days).astype("datetime64[D]").astype(np.int64)) > 1


@dataclass(frozen=True)
class Window:
    """The simulated history: day 0 is `start` local midnight, day `days` is the day after `end`."""

    start: date
    days: int
    epoch0: int  # UTC seconds of day 0
    day_numbers: np.ndarray  # days since 1970-01-01 of each local day
    knots: np.ndarray  # 0..days
    cumulative: tuple[np.ndarray, np.ndarray]  # cumulative order intensity at each knot, (regular, deal seeker)
    promo: np.ndarray

    @classmethod
    def of(cls, start: date, end: date) -> Window:
        first = (start - date(1970, 1, 1)).days
        days = (end - start).days + 1
        numbers = np.arange(first, first + days, dtype=np.int64)
        cumulative = tuple(
            np.concatenate([[0.0], np.cumsum(order_intensity(numbers.astype("datetime64[D]"), deal))])
            for deal in (False, True)
        )
        return cls(start, days, first * 86400 - LOCAL_OFFSET_S, numbers, np.arange(days + 1, dtype=float),
                   (cumulative[0], cumulative[1]), is_promo_day(numbers.astype("datetime64[D]")))  # fmt: skip

    def seconds(self, t: np.ndarray) -> np.ndarray:
        """UTC epoch seconds of simulation times (days)."""
        return self.epoch0 + np.floor(t * 86400).astype(np.int64)

    def cumulative_at(self, t: np.ndarray, deal: np.ndarray) -> np.ndarray:
        return np.where(
            deal, np.interp(t, self.knots, self.cumulative[1]), np.interp(t, self.knots, self.cumulative[0])
        )

    def time_at(self, level: np.ndarray, deal: np.ndarray) -> np.ndarray:
        return np.where(
            deal, np.interp(level, self.cumulative[1], self.knots), np.interp(level, self.cumulative[0], self.knots)
        )


def fade(t: np.ndarray, dropout: np.ndarray) -> np.ndarray:
    """Engagement multiplier: 1 long before drop-out, fading to FADE_FLOOR at it, FADE_FLOOR after."""
    before = np.maximum(dropout - t, 0.0)
    return 1 - (1 - FADE_FLOOR) * np.exp(-before / FADE_DAYS)


# ---------------------------------------------------------------- rates of activity per year


def session_rate(engagement: np.ndarray | float, purchase_rate: np.ndarray | float) -> np.ndarray:
    """Browsing sessions per year of someone with a web or app account, before the fade."""
    return SESSION_RATE * engagement * np.sqrt(purchase_rate / PURCHASE_RATE_MEAN)


def share_rate(engagement: np.ndarray | float, satisfaction: np.ndarray | float) -> np.ndarray:
    """Social shares per year, before the fade."""
    return SHARE_RATE * engagement * np.exp(SHARE_SATISFACTION * satisfaction)


def referral_rate(satisfaction: np.ndarray | float) -> np.ndarray:
    """Referrals per year, before the fade."""
    return REFERRAL_RATE * np.exp(REFERRAL_SATISFACTION * satisfaction)


# ---------------------------------------------------------------- draws


def categorical(rng: np.random.Generator, weights: tuple[float, ...] | np.ndarray, size: int) -> np.ndarray:
    cumulative = np.cumsum(np.asarray(weights, dtype=float))
    return np.searchsorted(cumulative / cumulative[-1], rng.random(size), side="right").clip(0, len(cumulative) - 1)


def row_choice(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of a non-negative weight matrix, proportional to the weights."""
    cumulative = np.cumsum(weights, axis=1)
    draw = rng.random(len(weights)) * cumulative[:, -1]
    return (cumulative <= draw[:, None]).sum(axis=1).clip(0, weights.shape[1] - 1)


def time_of_day(rng: np.random.Generator, t: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Keep the local day of each time, redraw the time of day from an hourly profile."""
    hour = categorical(rng, hours, len(t))
    return np.floor(t) + (hour + rng.random(len(t))) / 24
