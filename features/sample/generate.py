"""`custlens generate`: a simulated Vietnamese shop exported the way its systems would export it
(all six input tables as text, with realistic mess on demand), plus the ground truth behind it.

Output in `out_dir`: `<table>.csv` (or `.parquet`, every column a string) for each table of
`features.lake.contracts.CONTRACTS`, columns in contract order; and in `out_dir/truth/`, which ingest
never reads: `persons.parquet` (the latent truth per person, see PERSONS_SCHEMA),
`identities.parquet` (source, source_customer_id -> person_id) and `dirty_rows.parquet` (table,
row_key, kind: every row made bad on purpose with the quarantine reason it must get, or
"exact_duplicate"). People are simulated in chunks of `chunk_customers`, chunk k from its own
streams (`SeedSequence(seed, spawn_key=(1, k))`, dirt from `(2, k)`), each chunk appended to
the files: memory is bounded by the chunk and the same arguments give the same bytes.

Generative process. Time t is in days since `start` 00:00 Asia/Ho_Chi_Minh (no DST: UTC = local
- 7 h); the window is [0, T), T = the days from `start` through `end`. Per person i, draws
independent unless said, constants as named in this module:

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
  Status completed/returned/cancelled 93/4/3%; items 1 + min(Poisson(0.7), 5).
- order value (Gamma-Gamma): nu_i ~ Gamma(shape GG_Q, rate GG_GAMMA), category preferences
  pi_i ~ Dirichlet(0.6); an order's category c ~ pi_i and its value ~ Gamma(shape GG_P,
  mean CATEGORY_VALUE[c] GG_P / nu_i), rounded to 1,000 VND (at least 10,000) = net_amount, also for
  returned and cancelled orders. expected_order_value = GG_P / nu_i * sum_c pi_ic CATEGORY_VALUE[c].
  Discounted with probability 0.95 (promo day) / 0.7 for deal seekers and 0.5 / 0.1 for others;
  the discount is U(0.15, 0.5) (deal seekers) or U(0.1, 0.4) of gross = net + discount.
- engagement fade f_i(t) = 1 - (1 - FADE_FLOOR) exp(-(tau_i - t) / FADE_DAYS) before tau_i, FADE_FLOOR
  after. Browsing sessions (people with a web or app account): Poisson, rate SESSION_RATE e_i
  sqrt(lambda_i / PURCHASE_RATE_MEAN) per year, thinned by f_i(t); 35% bounce, else 25% add to
  cart and 30% of those start a checkout; app sessions also log app_open. 85% of web/app orders
  get a session 3-40 min before (add_to_cart, checkout_start). social_share and referral: Poisson,
  0.4 e_i exp(0.4 z_i) and 0.2 exp(0.6 z_i) per year, thinned by f_i. review: 10% of completed
  web/app orders, 3-14 days later.
- email campaigns about every 14 days, each to 35% of opted-in email-platform accounts, alive or
  not; P(open) = (0.02 + 0.45 (1 - exp(-e_i))) f_i(send), P(click | open) = 0.03 + 0.25 (1 - exp(-e_i));
  per send 0.4% unsubscribe (1.5% after tau_i) and 0.07% spam report, after which nothing is sent.
  SMS campaigns about monthly to 30% of opted-in crm records with a phone; 94% delivered.
- support (people with a crm record): tickets at 0.3 exp(-0.6 z_i) per year while alive, plus 40%
  of returned orders; first response LogNormal(ln 4 + 0.8 w_i, 0.8) hours x TICKET_CHANNEL_DELAY
  after opening, resolved LogNormal(ln 18 + 0.5 w_i, 0.9) hours after that (empty and status open
  when beyond the window).
- surveys (crm): 15% of completed orders (half NPS, half CSAT), 35% of resolved tickets (CSAT).
  NPS = clip(round(7 + 1.8 z_i + 1.3 u), 0, 10); order CSAT = clip(round(3.9 + 0.7 z_i + 0.6 u), 1, 5);
  ticket CSAT = clip(round(3.6 + 0.6 z_i - 0.5 w_i + 0.6 u), 1, 5); u ~ N(0, 1).

Identities: each person has a crm record with SOURCE_PRESENCE[crm] and pos/web/app/email accounts
with the other shares (people without a crm record half as often), at least one pos/web/app
account (the one they signed up with; the others open Exp(120 days) later). Each record carries
the person's email / phone with EMAIL_PRESENCE / PHONE_PRESENCE, written each system's way (case,
spaces, +84 / 84 / 0 prefixes, spaces or dashes). HOUSEHOLD_SHARE of people share a phone in
pairs (false merges), UNLINKED_SHARE use a different address per account and no phone, and
WEB_OTHER_EMAIL_SHARE of web accounts use another address (misses).

Dirt (dirty_rate > 0): per chunk and table about dirty_rate of the rows get exactly one defect of
DEFECTS[table]; a duplicate_id_conflict is a later row with the same id and other valid content,
and about dirty_rate / 2 rows are re-exported unchanged (exact_duplicate); those copies follow the
chunk's rows. Customer rows are only corrupted in place when no activity refers to them and they
are not crm records, so a quarantined customer row never orphans other rows.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from custlens.errors import CustlensError
from features.lake.contracts import CONTRACTS, EVENT_TYPES, QUARANTINE_REASONS

DEFAULT_END: date = date(2026, 10, 31)  # fixed so the same seed gives the same bytes on any day
MAX_CUSTOMERS = 10_000_000  # the id spaces below are bijections on numbers below this
EXACT_DUPLICATE = "exact_duplicate"

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

SOURCES = ("crm", "pos", "web", "app", "email")
CRM, POS, WEB, APP, EMAIL = range(5)
ORDER_SOURCES = (POS, WEB, APP)
SOURCE_PRESENCE = (0.85, 0.50, 0.55, 0.40, 0.60)
EMAIL_PRESENCE = (0.97, 0.40, 0.99, 0.97, 1.0)  # share of a source's records that carry an email
PHONE_PRESENCE = (0.97, 0.97, 0.55, 0.95, 0.0)
UNLINKED_SHARE = 0.008  # people whose accounts share no contact at all (realistic misses)
HOUSEHOLD_SHARE = 0.005  # people using another person's phone (realistic false merges)
WEB_OTHER_EMAIL_SHARE = 0.03  # web accounts opened with another email address

ACQUISITION_CHANNELS = ("organic", "paid_search", "paid_social", "email", "referral", "offline")
ACQUISITION_WEIGHTS = (0.30, 0.20, 0.22, 0.06, 0.10, 0.12)
PAID_CHANNELS = ("paid_search", "paid_social", "email", "referral", "offline")
# per channel: cost per acquired customer, base daily spend, cost per 1,000 impressions, click rate
CHANNEL_ECONOMICS = {
    "paid_search": (180_000, 1_500_000, 40_000, 0.035),
    "paid_social": (150_000, 2_000_000, 25_000, 0.012),
    "email": (20_000, 300_000, 2_000, 0.03),
    "referral": (100_000, 200_000, None, None),
    "offline": (250_000, 1_000_000, None, None),
}
CATEGORIES = ("fashion", "electronics", "home", "beauty", "grocery", "sports")
CATEGORY_VALUE = np.array([0.9, 2.2, 1.2, 0.7, 0.45, 1.0])
CITIES = (
    "Hồ Chí Minh",
    "Hà Nội",
    "Đà Nẵng",
    "Hải Phòng",
    "Cần Thơ",
    "Nha Trang",
    "Huế",
    "Biên Hòa",
    "Vũng Tàu",
    "Đà Lạt",
)
CITY_WEIGHTS = (0.32, 0.28, 0.08, 0.07, 0.06, 0.05, 0.04, 0.05, 0.03, 0.02)
FAMILY_NAMES = (
    ("Nguyễn", 0.38), ("Trần", 0.11), ("Lê", 0.095), ("Phạm", 0.07), ("Hoàng", 0.05), ("Huỳnh", 0.04),
    ("Phan", 0.045), ("Vũ", 0.04), ("Võ", 0.03), ("Đặng", 0.02), ("Bùi", 0.02), ("Đỗ", 0.015), ("Hồ", 0.015),
    ("Ngô", 0.015), ("Dương", 0.01), ("Lý", 0.005),
)  # fmt: skip
MIDDLE_NAMES = (("Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Gia"),
                ("Thị", "Ngọc", "Thu", "Thanh", "Mai", "Bảo", "Phương", "Kim"))  # fmt: skip
GIVEN_NAMES = (
    ("Hùng", "Dũng", "Minh", "Tuấn", "Nam", "Long", "Hải", "Sơn", "Phong", "Quang", "Khoa", "Bảo", "Huy", "Thắng",
     "Tùng", "Đạt", "Khánh", "Trung"),
    ("Lan", "Hương", "Linh", "Trang", "Mai", "Hoa", "Thảo", "Ngọc", "Hà", "Anh", "Vy", "Nhung", "Yến", "Phương",
     "Thủy", "Hạnh", "My", "Chi"),
)  # fmt: skip
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com")
EMAIL_DOMAIN_WEIGHTS = (0.62, 0.14, 0.1, 0.08, 0.06)
# Vietnamese mobile prefixes (Viettel, Vinaphone, Mobifone)
PHONE_PREFIXES = tuple(
    f"0{prefix}"
    for prefix in (90, 91, 93, 94, 96, 97, 98, *range(32, 40), 70, *range(76, 80), 81, *range(83, 87), 88, 89)
)
# how each source writes a gender and a yes/no
GENDER_WORDS = {CRM: ("M", "F"), POS: ("Nam", "Nữ"), APP: ("male", "female")}
YES_NO_WORDS = {
    CRM: ("false", "true"),
    POS: ("0", "1"),
    WEB: ("no", "yes"),
    APP: ("false", "true"),
    EMAIL: ("no", "yes"),
}
TICKET_CHANNELS = ("phone", "email", "chat", "zalo")
TICKET_CHANNEL_WEIGHTS = (0.3, 0.2, 0.3, 0.2)
TICKET_CHANNEL_DELAY = np.array([0.2, 1.5, 0.5, 0.8])
TICKET_CATEGORIES = ("giao hàng", "đổi trả", "thanh toán", "sản phẩm lỗi", "tài khoản", "khuyến mãi")
SURVEY_CHANNELS = ("email", "sms", "app", "zalo")
SURVEY_CHANNEL_WEIGHTS = (0.5, 0.2, 0.15, 0.15)
COMMENTS = (
    ("Sản phẩm lỗi, thất vọng", "Giao hàng quá chậm", "Chăm sóc khách hàng phản hồi chậm",
     "Hàng không giống hình, muốn đổi trả", "Đóng gói sơ sài, sản phẩm bị móp"),
    ("Tạm ổn", "Giao hàng hơi chậm nhưng sản phẩm ổn", "Bình thường, không có gì đặc biệt",
     "Cần thêm nhiều mẫu mã hơn"),
    ("Giao hàng nhanh, rất hài lòng", "Sản phẩm đúng mô tả, sẽ ủng hộ tiếp", "Nhân viên tư vấn nhiệt tình",
     "Đóng gói cẩn thận, chất lượng tốt", "Giá hợp lý, hàng chính hãng"),
)  # fmt: skip
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
_EVENT = {name: code for code, name in enumerate(EVENT_TYPES)}
_EVENT_CHANNELS = ("web", "app", "email", "sms")
# every defect a table can get, each with exactly one reason code (conflicts are extra later rows)
DEFECTS: dict[str, tuple[str, ...]] = {
    "customers": ("unparseable_timestamp", "missing_value", "unparseable_date", "unparseable_boolean",
                  "duplicate_id_conflict"),
    "orders": ("unparseable_timestamp", "negative_amount", "unparseable_number", "unknown_status", "missing_value",
               "unknown_customer", "duplicate_id_conflict"),
    "engagement_events": ("unparseable_timestamp", "unknown_event_type", "missing_value", "unknown_customer",
                          "duplicate_id_conflict"),
    "surveys": ("score_out_of_range", "unparseable_timestamp", "missing_value", "unknown_customer",
                "duplicate_id_conflict"),
    "tickets": ("first_response_before_opened", "unparseable_timestamp", "missing_value", "unknown_customer",
                "duplicate_id_conflict"),
    "marketing_spend": ("negative_amount", "unparseable_number", "missing_value", "duplicate_id_conflict"),
}  # fmt: skip
assert all(kind in QUARANTINE_REASONS for kinds in DEFECTS.values() for kind in kinds)

FileFormat = Literal["csv", "parquet"]


# ---------------------------------------------------------------- the summary


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote and where."""

    out_dir: Path
    file_format: FileFormat
    persons: int
    rows: dict[str, int]  # rows written per table (bad rows and duplicates included)
    dirty_rows: dict[str, int]  # rows made bad or duplicated on purpose, per table
    table_paths: dict[str, Path]
    truth_paths: dict[str, Path]
    seconds: float

    def render(self) -> RenderableType:
        table = Table(title=f"sample data: {self.persons:,} people in {self.seconds:.1f} s", title_justify="left")
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("made bad / duplicated", justify="right")
        for name, count in self.rows.items():
            table.add_row(name, f"{count:,}", f"{self.dirty_rows.get(name, 0):,}")
        where = Text.assemble(
            ("exports: ", "bold"), f"{self.out_dir} ({self.file_format})\n",
            ("ground truth (ingest never reads it): ", "bold"), str(self.out_dir / "truth"),
        )  # fmt: skip
        return Group(table, where)


# ---------------------------------------------------------------- calendar and seasonality


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    first_year = int(_civil_from_days(days.min(keepdims=True))[0][0])
    last_year = int(_civil_from_days(days.max(keepdims=True))[0][0])
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
class _Window:
    """The simulated history: day 0 is `start` local midnight, day `days` is the day after `end`."""

    start: date
    days: int
    epoch0: int  # UTC seconds of day 0
    day_numbers: np.ndarray  # days since 1970-01-01 of each local day
    knots: np.ndarray  # 0..days
    cumulative: tuple[np.ndarray, np.ndarray]  # cumulative order intensity at each knot, (regular, deal seeker)
    promo: np.ndarray

    @classmethod
    def of(cls, start: date, end: date) -> _Window:
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


# ---------------------------------------------------------------- text building, vectorized


def _bytes_to_strings(matrix: np.ndarray) -> pa.Array:
    """Rows of a uint8 matrix as strings (trailing zero bytes dropped)."""
    width = matrix.shape[1]
    flat = np.ascontiguousarray(matrix).view(f"S{width}").ravel()
    return pa.array(flat, type=pa.binary()).cast(pa.string())


def _put_digits(out: np.ndarray, column: int, values: np.ndarray, width: int, base: int = 10) -> None:
    symbols = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    for k in range(width):
        out[:, column + width - 1 - k] = symbols[(values // base**k) % base]


def _fixed_ids(prefix: str, numbers: np.ndarray, width: int, base: int = 10) -> pa.Array:
    """prefix + `numbers` zero-padded to `width` digits (in `base`)."""
    head = prefix.encode()
    out = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    out[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    _put_digits(out, len(head), np.asarray(numbers, dtype=np.int64), width, base)
    return _bytes_to_strings(out)


def _format_timestamps(seconds: np.ndarray, source: np.ndarray) -> pa.Array:
    """Each source system's timestamp style: pos local naive 'YYYY-MM-DD HH:MM:SS', crm ISO with
    +07:00, web/app/email ISO UTC with Z."""
    source = np.broadcast_to(np.asarray(source), seconds.shape)
    local = (source == CRM) | (source == POS)
    shifted = seconds + np.where(local, LOCAL_OFFSET_S, 0)
    days = np.floor_divide(shifted, 86400)
    rest = shifted - days * 86400
    year, month, day = _civil_from_days(days)
    out = np.zeros((len(seconds), 25), dtype=np.uint8)
    _put_digits(out, 0, year, 4)
    out[:, 4] = out[:, 7] = ord("-")
    _put_digits(out, 5, month, 2)
    _put_digits(out, 8, day, 2)
    out[:, 10] = np.where(source == POS, ord(" "), ord("T"))
    _put_digits(out, 11, rest // 3600, 2)
    out[:, 13] = out[:, 16] = ord(":")
    _put_digits(out, 14, (rest // 60) % 60, 2)
    _put_digits(out, 17, rest % 60, 2)
    crm = source == CRM
    out[crm, 19:25] = np.frombuffer(b"+07:00", dtype=np.uint8)
    out[~local, 19] = ord("Z")
    return _bytes_to_strings(out)


def _format_dates(days: np.ndarray) -> pa.Array:
    year, month, day = _civil_from_days(np.asarray(days, dtype=np.int64))
    out = np.zeros((len(days), 10), dtype=np.uint8)
    _put_digits(out, 0, year, 4)
    out[:, 4] = out[:, 7] = ord("-")
    _put_digits(out, 5, month, 2)
    _put_digits(out, 8, day, 2)
    return _bytes_to_strings(out)


def _pick(values: tuple[str, ...] | list[str], index: np.ndarray) -> pa.Array:
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def _numbers(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.string())


def _blank(values: pa.Array, keep: np.ndarray) -> pa.Array:
    """The value where `keep`, else an empty string (how exports write 'no value')."""
    return pc.if_else(pa.array(np.asarray(keep, dtype=bool)), values, pa.scalar("", pa.string()))


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFD", name.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Mn").lower()


def _categorical(rng: np.random.Generator, weights: tuple[float, ...] | np.ndarray, size: int) -> np.ndarray:
    cumulative = np.cumsum(np.asarray(weights, dtype=float))
    return np.searchsorted(cumulative / cumulative[-1], rng.random(size), side="right").clip(0, len(cumulative) - 1)


def _row_choice(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of a non-negative weight matrix, proportional to the weights."""
    cumulative = np.cumsum(weights, axis=1)
    draw = rng.random(len(weights)) * cumulative[:, -1]
    return (cumulative <= draw[:, None]).sum(axis=1).clip(0, weights.shape[1] - 1)


def _time_of_day(rng: np.random.Generator, t: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Keep the local day of each time, redraw the time of day from an hourly profile."""
    hour = _categorical(rng, hours, len(t))
    return np.floor(t) + (hour + rng.random(len(t))) / 24


def _scramble(numbers: np.ndarray, multiplier: int, shift: int, modulus: int) -> np.ndarray:
    """A bijection of 0..modulus-1 (multiplier coprime to modulus) that hides the order of numbers."""
    assert math.gcd(multiplier, modulus) == 1, "not a bijection: ids could collide"
    return (np.asarray(numbers, dtype=np.int64) * multiplier + shift) % modulus


# source id formats: prefix, digits, base, and the scramble that keeps ids unlinkable across sources
_ID_FORMATS = {
    CRM: ("CRM", 8, 10, 48_271, 13_579_113),
    POS: ("POS-", 8, 10, 69_621, 24_680_247),
    WEB: ("W", 10, 16, 2_654_435_761, 0x5DEECE66D),
    APP: ("A-", 9, 10, 103_515_247, 987_654_321),
    EMAIL: ("EM", 9, 10, 16_807, 123_456_789),
}


def source_customer_ids(source: int, numbers: np.ndarray) -> pa.Array:
    """The id the system `source` gives to person number `numbers` (distinct numbers, distinct ids)."""
    prefix, width, base, multiplier, shift = _ID_FORMATS[source]
    return _fixed_ids(prefix, _scramble(numbers, multiplier, shift, base**width), width, base)


# ---------------------------------------------------------------- people


@dataclass
class _People:
    number: np.ndarray  # global person number (person_id)
    signup: np.ndarray  # days since window start
    channel: np.ndarray
    purchase_rate: np.ndarray
    hazard: np.ndarray
    dropout: np.ndarray  # days since window start; may lie beyond the window
    satisfaction: np.ndarray
    slowness: np.ndarray
    deal: np.ndarray
    engagement: np.ndarray
    expected_value: np.ndarray
    value_scale: np.ndarray  # GG_P / nu_i
    category_preference: np.ndarray  # (n, categories)
    opt_in: np.ndarray
    female: np.ndarray
    first_order: np.ndarray
    household: np.ndarray  # person number of the household whose phone they use
    unlinked: np.ndarray
    birth_days: np.ndarray  # days since 1970-01-01
    city: np.ndarray
    family: np.ndarray
    middle: np.ndarray
    given: np.ndarray

    def __len__(self) -> int:
        return len(self.number)


def _simulate_people(rng: np.random.Generator, first_number: int, n: int, window: _Window) -> _People:
    number = np.arange(first_number, first_number + n, dtype=np.int64)
    growth = math.log(SIGNUP_GROWTH_PER_YEAR) / 365
    total = math.expm1(growth * window.days)
    signup_day = np.floor(np.log1p(rng.random(n) * total) / growth)
    signup = _time_of_day(rng, np.minimum(signup_day, window.days - 1), SIGNUP_HOURS)
    satisfaction = rng.standard_normal(n)
    slowness = rng.standard_normal(n)
    deal = rng.random(n) < DEAL_SEEKER_SHARE
    purchase_rate = rng.gamma(PURCHASE_RATE_SHAPE, PURCHASE_RATE_MEAN / PURCHASE_RATE_SHAPE, n)
    base_hazard = rng.gamma(HAZARD_SHAPE, HAZARD_MEAN / HAZARD_SHAPE, n)
    hazard = base_hazard * np.exp(SATISFACTION_HAZARD * satisfaction + SLOWNESS_HAZARD * slowness)
    hazard *= np.where(deal, DEAL_SEEKER_HAZARD, 1.0)
    dropout = signup + 365 * rng.standard_exponential(n) / hazard
    nu = rng.gamma(GG_Q, 1 / GG_GAMMA, n)
    value_scale = GG_P / nu
    preference = rng.dirichlet(np.full(len(CATEGORIES), 0.6), n)
    expected_value = value_scale * (preference @ CATEGORY_VALUE)
    household = number.copy()
    shared = rng.choice(n, size=2 * round(n * HOUSEHOLD_SHARE / 2), replace=False) if n >= 4 else np.array([], int)
    hosts, joiners = np.array_split(shared, 2)
    household[joiners] = number[hosts]
    household[hosts] = number[hosts]
    female = rng.random(n) < 0.55
    end_day = window.day_numbers[0] + window.days
    age_days = (rng.normal(32, 9, n).clip(16, 75) * 365.25).astype(np.int64)
    return _People(
        number=number, signup=signup, channel=_categorical(rng, ACQUISITION_WEIGHTS, n),
        purchase_rate=purchase_rate, hazard=hazard, dropout=dropout, satisfaction=satisfaction, slowness=slowness,
        deal=deal, engagement=rng.gamma(2.0, 0.5, n), expected_value=expected_value, value_scale=value_scale,
        category_preference=preference, opt_in=rng.random(n) < MARKETING_OPT_IN, female=female,
        first_order=rng.random(n) < FIRST_ORDER_AT_SIGNUP, household=household,
        unlinked=rng.random(n) < UNLINKED_SHARE, birth_days=end_day - age_days,
        city=_categorical(rng, CITY_WEIGHTS, n),
        family=_categorical(rng, tuple(weight for _, weight in FAMILY_NAMES), n),
        middle=rng.integers(0, len(MIDDLE_NAMES[0]), n), given=rng.integers(0, len(GIVEN_NAMES[0]), n),
    )  # fmt: skip


def _fade(t: np.ndarray, dropout: np.ndarray) -> np.ndarray:
    """Engagement multiplier: 1 long before drop-out, fading to FADE_FLOOR at it, FADE_FLOOR after."""
    before = np.maximum(dropout - t, 0.0)
    return 1 - (1 - FADE_FLOOR) * np.exp(-before / FADE_DAYS)


# ---------------------------------------------------------------- accounts (the customers table)


@dataclass
class _Accounts:
    person: np.ndarray  # index into the chunk's people
    source: np.ndarray
    created: np.ndarray  # days since window start
    ids: pa.Array
    of_person: np.ndarray  # (people, sources): account index or -1
    entry: np.ndarray  # per person: the order source whose account they signed up with
    rows: pa.Table  # the customers export of these accounts, contract columns
    has_email: np.ndarray
    has_phone: np.ndarray


def _simulate_accounts(rng: np.random.Generator, people: _People, window: _Window) -> _Accounts:
    n = len(people)
    present = rng.random((n, len(SOURCES))) < np.array(SOURCE_PRESENCE)
    # people the CRM never registered use fewer of the other systems too
    present[~present[:, CRM], WEB:] &= rng.random((int((~present[:, CRM]).sum()), len(SOURCES) - WEB)) < 0.5
    offline = people.channel == ACQUISITION_CHANNELS.index("offline")
    present[offline, POS] = True
    order_weights = present[:, ORDER_SOURCES] * np.array([0.4, 0.35, 0.25])
    none = order_weights.sum(axis=1) == 0
    order_weights[none] = np.array([0.4, 0.35, 0.25])
    entry = np.array(ORDER_SOURCES)[_row_choice(rng, order_weights)]
    entry[offline] = POS
    present[np.arange(n), entry] = True
    created = np.column_stack(
        [
            people.signup + rng.random(n) * 0.02,  # crm copies the entry record within half an hour
            *(people.signup + rng.exponential(120, n) for _ in ORDER_SOURCES),
            people.signup + rng.exponential(10, n),
        ]
    )
    created[np.arange(n), entry] = people.signup
    present &= created < window.days
    person, source = np.nonzero(present)  # person-major: a person's accounts sit together
    count = len(person)
    of_person = np.full((n, len(SOURCES)), -1, dtype=np.int64)
    of_person[person, source] = np.arange(count)
    ids = pa.chunked_array(
        [source_customer_ids(code, people.number[person[source == code]]) for code in range(len(SOURCES))]
    ).combine_chunks()
    # ids were built source by source: put them back in account order
    order = np.argsort(source, kind="stable")
    ids = ids.take(pa.array(np.argsort(order, kind="stable")))
    account_created = created[person, source]

    has_email = rng.random(count) < np.array(EMAIL_PRESENCE)[source]
    has_phone = rng.random(count) < np.array(PHONE_PRESENCE)[source]
    has_phone |= (source == CRM) & ~has_email
    email = _emails(rng, people, person, source)
    phone = _phones(rng, people, person, source)
    unlinked = people.unlinked[person]
    has_phone &= ~unlinked
    has_email |= unlinked & (source != POS)

    female = people.female[person]
    full_name = _full_names(people, person)
    keep_name = rng.random(count) < np.array([1.0, 0.7, 0.5, 0.8, 0.4])[source]
    gender = np.full(count, "", dtype=object)
    for code, words in GENDER_WORDS.items():
        mine = (source == code) & (rng.random(count) < 0.8)
        gender[mine] = np.where(female[mine], words[1], words[0])
    opt_in = people.opt_in[person]
    yes_no = np.full(count, "", dtype=object)
    for code, (no, yes) in YES_NO_WORDS.items():
        mine = (source == code) & ((source != POS) | (rng.random(count) < 0.6))
        yes_no[mine] = np.where(opt_in[mine], yes, no)
    with_birth = ((source == CRM) & (rng.random(count) < 0.75)) | ((source == APP) & (rng.random(count) < 0.4))
    with_city = np.isin(source, (CRM, POS)) | ((source == APP) & (rng.random(count) < 0.5))
    with_channel = (source == CRM) | (source == entry[person])
    rows = pa.table(
        {
            "source": _pick(SOURCES, source),
            "source_customer_id": ids,
            "signup_at": _format_timestamps(window.seconds(account_created), source),
            "email": _blank(email, has_email),
            "phone": _blank(phone, has_phone),
            "full_name": _blank(full_name, keep_name),
            "birth_date": _blank(_format_dates(people.birth_days[person]), with_birth),
            "gender": pa.array(gender, type=pa.string()),
            "city": _blank(_pick(CITIES, people.city[person]), with_city),
            "acquisition_channel": _blank(_pick(ACQUISITION_CHANNELS, people.channel[person]), with_channel),
            "marketing_opt_in": pa.array(yes_no, type=pa.string()),
        }
    )
    return _Accounts(person, source, account_created, ids, of_person, entry, rows, has_email, has_phone)


def _full_names(people: _People, person: np.ndarray) -> pa.Array:
    female = people.female[person].astype(np.int64)
    family = _pick([name for name, _ in FAMILY_NAMES], people.family[person])
    middle = _pick(MIDDLE_NAMES[0] + MIDDLE_NAMES[1], people.middle[person] + female * len(MIDDLE_NAMES[0]))
    given = _pick(GIVEN_NAMES[0] + GIVEN_NAMES[1], people.given[person] + female * len(GIVEN_NAMES[0]))
    return pc.binary_join_element_wise(family, middle, given, " ")


def _emails(rng: np.random.Generator, people: _People, person: np.ndarray, source: np.ndarray) -> pa.Array:
    """The person's address as each system holds it: case and spaces vary; some accounts use
    another address (unlinked people everywhere, some web accounts)."""
    count = len(person)
    female = people.female[person].astype(np.int64)
    given = _pick([_ascii(name) for name in GIVEN_NAMES[0] + GIVEN_NAMES[1]],
                  people.given[person] + female * len(GIVEN_NAMES[0]))  # fmt: skip
    family = _pick([_ascii(name) for name, _ in FAMILY_NAMES], people.family[person])
    number = _numbers(_scramble(people.number[person], 7_654_321, 1_234_567, 10**7))
    domain = _pick(EMAIL_DOMAINS, _categorical(rng, EMAIL_DOMAIN_WEIGHTS, len(people))[person])
    primary = _join(given, ".", family, number, "@", domain)
    # another address: an underscore where the primary has a dot, and a letter per source, so never shared
    other = _join(given, "_", family, number, _pick(["c", "p", "w", "a", "e"], source), "@", domain)
    use_other = people.unlinked[person] | ((source == WEB) & (rng.random(count) < WEB_OTHER_EMAIL_SHARE))
    email = pc.if_else(pa.array(use_other), other, primary)
    style = rng.random(count)
    capitalized = pc.utf8_capitalize(email)
    upper = pc.utf8_upper(email)
    spaced = _join("  ", email, " ")
    email = pc.if_else(
        pa.array(((source == WEB) & (style < 0.3)) | ((source == APP) & (style < 0.1))), capitalized, email
    )
    email = pc.if_else(pa.array((source == EMAIL) & (style < 0.1)), upper, email)
    email = pc.if_else(pa.array(((source == APP) & (style > 0.85)) | ((source == CRM) & (style > 0.9))), spaced, email)
    return email


def _phones(rng: np.random.Generator, people: _People, person: np.ndarray, source: np.ndarray) -> pa.Array:
    """The household's phone, written the way each clerk or form writes it."""
    household = people.household[person]
    # prefix and subscriber number both come from the household number: one household, one phone
    subscriber = _fixed_ids("", _scramble(household, 3_141_593, 2_718_281, 10**7), 7)
    national = _join(_pick(PHONE_PREFIXES, household % len(PHONE_PREFIXES)), subscriber)
    head, middle, tail = (pc.utf8_slice_codeunits(national, a, b) for a, b in ((0, 4), (4, 7), (7, 10)))
    without_zero = pc.utf8_slice_codeunits(national, 1, 10)
    styles = [
        national,
        _join(head, " ", middle, " ", tail),
        _join("+84 ", without_zero),
        _join("84", without_zero),
        _join(head, "-", middle, "-", tail),
        _join("+84 ", pc.utf8_slice_codeunits(head, 1, 4), " ", middle, " ", tail),
    ]
    weights = np.array([[0.7, 0.1, 0.1, 0.05, 0.03, 0.02],  # crm
                        [0.3, 0.3, 0.05, 0.1, 0.25, 0.0],   # pos
                        [0.4, 0.1, 0.3, 0.1, 0.0, 0.1],     # web
                        [0.2, 0.0, 0.5, 0.1, 0.0, 0.2],     # app
                        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # email  # fmt: skip
    style = _row_choice(rng, weights[source])
    return pc.choose(pa.array(style.astype(np.int8)), *styles)


# ---------------------------------------------------------------- orders


@dataclass
class _Orders:
    person: np.ndarray
    account: np.ndarray
    t: np.ndarray
    status: np.ndarray  # index into ORDER_STATUSES
    net: np.ndarray
    discount: np.ndarray
    items: np.ndarray
    category: np.ndarray


def _simulate_orders(rng: np.random.Generator, people: _People, accounts: _Accounts, window: _Window) -> _Orders:
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
    t = np.clip(_time_of_day(rng, t, ORDER_HOURS), start[owner], stop[owner] - 1e-6)
    first = np.flatnonzero(people.first_order)
    first_t = people.signup[first] + rng.uniform(1, 20, len(first)) / 1440
    keep_first = first_t < window.days
    person = np.concatenate([first[keep_first], owner])
    t = np.concatenate([first_t[keep_first], t])
    count = len(person)

    # which of the person's pos/web/app accounts carries it: the entry account unless another existed
    order_accounts = accounts.of_person[person][:, ORDER_SOURCES]
    exists = order_accounts >= 0
    created = np.where(exists, accounts.created[np.maximum(order_accounts, 0)], np.inf)
    weights = (created <= t[:, None]) * np.where(np.array(ORDER_SOURCES) == accounts.entry[person][:, None], 3.0, 1.0)
    weights[: int(keep_first.sum())] *= (
        np.array(ORDER_SOURCES) == accounts.entry[person[: int(keep_first.sum())]][:, None]
    )
    account = order_accounts[np.arange(count), _row_choice(rng, weights)]

    status = _categorical(rng, (0.93, 0.04, 0.03), count)
    category = _row_choice(rng, people.category_preference[person])
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
    return _Orders(person[order], account[order], t[order], status[order], net[order], discount[order],
                   items[order], category[order])  # fmt: skip


# ---------------------------------------------------------------- engagement


@dataclass
class _Events:
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


def _web_or_app(rng: np.random.Generator, accounts: _Accounts, person: np.ndarray, t: np.ndarray) -> np.ndarray:
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
    kept = rng.random(len(owner)) < _fade(t, dropout[owner])
    return owner[kept], t[kept]


def _add_sessions(
    rng: np.random.Generator,
    events: _Events,
    accounts: _Accounts,
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
class _Campaigns:
    names: tuple[str, ...]
    email_t: np.ndarray  # send times of email campaigns (days); their names come first
    sms_t: np.ndarray

    @classmethod
    def schedule(cls, rng: np.random.Generator, window: _Window) -> _Campaigns:
        def every(days: float, hour: float) -> np.ndarray:
            """Roughly every `days` days (give or take two), in the hour after `hour` local time."""
            count = int(window.days // days) + 1
            day = np.floor(rng.uniform(0, days) + days * np.arange(count) + rng.integers(-2, 3, count))
            day = day[(day >= 0) & (day < window.days)]
            return np.sort(day + (hour + rng.random(len(day))) / 24)

        email_t, sms_t = every(14, 9), every(30, 11)

        def named(prefix: str, times: np.ndarray) -> list[str]:
            stamps = _format_dates(window.day_numbers[np.floor(times).astype(np.int64)]).to_pylist()
            return [f"{prefix}-{stamp}" for stamp in stamps]

        return cls(tuple(named("EMC", email_t) + named("SMS", sms_t)), email_t, sms_t)


def _add_campaign_sends(rng: np.random.Generator, events: _Events, people: _People, accounts: _Accounts,
                        window: _Window, campaigns: _Campaigns) -> None:  # fmt: skip
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
        opened = rng.random(len(person)) < (0.02 + 0.45 * responsive) * _fade(sent, people.dropout[person])
        open_t = sent + rng.exponential(0.25, len(person))
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


def _simulate_engagement(rng: np.random.Generator, people: _People, accounts: _Accounts, orders: _Orders,
                         window: _Window, campaigns: _Campaigns) -> _Events:  # fmt: skip
    events = _Events()
    online = (accounts.of_person[:, WEB] >= 0) | (accounts.of_person[:, APP] >= 0)
    end = np.full(len(people), float(window.days))
    rate = np.where(online, SESSION_RATE * people.engagement * np.sqrt(people.purchase_rate / PURCHASE_RATE_MEAN), 0)
    owner, t = _thinned(rng, rate, people.signup, end, people.dropout)
    t = np.clip(_time_of_day(rng, t, ORDER_HOURS), people.signup[owner], window.days - 1e-4)
    account = _web_or_app(rng, accounts, owner, t)
    browsing = account >= 0
    _add_sessions(rng, events, accounts, account[browsing], t[browsing])

    online_order = np.isin(accounts.source[orders.account], (WEB, APP)) & (rng.random(len(orders.t)) < 0.85)
    lead = rng.uniform(3, 40, len(orders.t)) / 1440
    session_t = np.maximum(orders.t - lead, people.signup[orders.person])
    _add_sessions(rng, events, accounts, orders.account[online_order], session_t[online_order], orders.t[online_order])

    _add_campaign_sends(rng, events, people, accounts, window, campaigns)

    share_rate = np.where(online, 0.4 * people.engagement * np.exp(0.4 * people.satisfaction), 0)
    referral_rate = np.where(online, 0.2 * np.exp(0.6 * people.satisfaction), 0)
    for rate_per_year, name in ((share_rate, "social_share"), (referral_rate, "referral")):
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


# ---------------------------------------------------------------- support and voice of customer


@dataclass
class _Tickets:
    person: np.ndarray
    opened: np.ndarray
    first_response: np.ndarray  # nan when after the end of the window
    resolved: np.ndarray
    channel: np.ndarray
    category: np.ndarray


def _simulate_tickets(rng: np.random.Generator, people: _People, accounts: _Accounts, orders: _Orders,
                      window: _Window) -> _Tickets:  # fmt: skip
    has_crm = accounts.of_person[:, CRM] >= 0
    stop = np.minimum(people.dropout, window.days)
    rate = np.where(has_crm, 0.3 * np.exp(-0.6 * people.satisfaction), 0)
    span = np.maximum(stop - people.signup, 0)
    owner = np.repeat(np.arange(len(people)), rng.poisson(rate / 365 * span))
    opened = _time_of_day(rng, people.signup[owner] + rng.random(len(owner)) * span[owner], SUPPORT_HOURS)
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
    channel = _categorical(rng, TICKET_CHANNEL_WEIGHTS, count)
    slowness = people.slowness[person]
    first_hours = rng.lognormal(math.log(4) + 0.8 * slowness, 0.8) * TICKET_CHANNEL_DELAY[channel]
    first_response = opened + np.maximum(first_hours, 1 / 60) / 24
    resolved = first_response + rng.lognormal(math.log(18) + 0.5 * slowness, 0.9) / 24
    first_response = np.where(first_response < window.days, first_response, np.nan)
    resolved = np.where(resolved < window.days, resolved, np.nan)
    order = np.argsort(opened, kind="stable")
    return _Tickets(person[order], opened[order], first_response[order], resolved[order], channel[order],
                    category[order])  # fmt: skip


@dataclass
class _Surveys:
    person: np.ndarray
    t: np.ndarray
    nps: np.ndarray  # bool: nps, else csat
    score: np.ndarray
    channel: np.ndarray
    comment: pa.Array


def _simulate_surveys(rng: np.random.Generator, people: _People, accounts: _Accounts, orders: _Orders,
                      tickets: _Tickets, window: _Window) -> _Surveys:  # fmt: skip
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
    comment = _blank(_pick(all_comments, comment_index), rng.random(count) < 0.35)
    order = np.argsort(t, kind="stable")
    return _Surveys(person[order], t[order], nps[order], score[order],
                    _categorical(rng, SURVEY_CHANNEL_WEIGHTS, count)[order], comment.take(pa.array(order)))  # fmt: skip


# ---------------------------------------------------------------- export tables of one chunk


@dataclass
class _Counters:
    """Running numbers, so ids are unique across chunks and the same for the same arguments."""

    orders: int = 0
    events: int = 0
    sessions: int = 0
    surveys: int = 0
    tickets: int = 0

    def take(self, name: str, count: int) -> np.ndarray:
        first = getattr(self, name)
        setattr(self, name, first + count)
        return np.arange(first, first + count, dtype=np.int64) + 1


def _orders_table(orders: _Orders, accounts: _Accounts, window: _Window, counters: _Counters) -> pa.Table:
    source = accounts.source[orders.account]
    seconds = window.seconds(orders.t)
    return pa.table(
        {
            "order_id": _fixed_ids("ORD", counters.take("orders", len(orders.t)), 10),
            "source": _pick(SOURCES, source),
            "source_customer_id": accounts.ids.take(pa.array(orders.account)),
            "ordered_at": _format_timestamps(seconds, source),
            "status": _pick(("completed", "returned", "cancelled"), orders.status),
            "net_amount": _numbers(orders.net),
            "channel": _pick(SOURCES, source),
            "gross_amount": _numbers(orders.net + orders.discount),
            "discount_amount": _numbers(orders.discount),
            "items": _numbers(orders.items),
            "category": _pick(CATEGORIES, orders.category),
            "currency": pa.array(np.full(len(orders.t), "VND")),
            "_seconds": seconds,
            "_source": source,
        }
    )


def _events_table(rows: dict[str, np.ndarray], accounts: _Accounts, window: _Window, campaigns: _Campaigns,
                  counters: _Counters) -> pa.Table:  # fmt: skip
    count = len(rows["t"])
    source = accounts.source[rows["account"]]
    seconds = window.seconds(rows["t"])
    # sessions numbered in order of first appearance in the file
    with_session = rows["session"] >= 0
    sessions, first_seen = np.unique(rows["session"][with_session], return_index=True)
    numbers = counters.take("sessions", len(sessions))
    rank = np.zeros(int(sessions.max()) + 1 if len(sessions) else 1, dtype=np.int64)
    rank[sessions[np.argsort(first_seen, kind="stable")]] = numbers
    session_ids = _blank(_fixed_ids("S", rank[np.maximum(rows["session"], 0)], 10), with_session)
    campaign_ids = pa.array([*campaigns.names, ""], type=pa.string()).take(
        pa.array(np.where(rows["campaign"] >= 0, rows["campaign"], len(campaigns.names)))
    )
    return pa.table(
        {
            "event_id": _fixed_ids("EV", counters.take("events", count), 11),
            "source": _pick(SOURCES, source),
            "source_customer_id": accounts.ids.take(pa.array(rows["account"])),
            "occurred_at": _format_timestamps(seconds, source),
            "event_type": _pick(EVENT_TYPES, rows["event"]),
            "channel": _pick(_EVENT_CHANNELS, rows["channel"]),
            "campaign_id": campaign_ids,
            "session_id": session_ids,
            "duration_s": _blank(_numbers(rows["duration"]), rows["duration"] >= 0),
            "page_views": _blank(_numbers(rows["pages"]), rows["pages"] >= 0),
            "_seconds": seconds,
            "_source": source,
        }
    )


def _surveys_table(surveys: _Surveys, accounts: _Accounts, window: _Window, counters: _Counters) -> pa.Table:
    empty = pa.array(np.full(len(surveys.t), ""), type=pa.string())
    return pa.table(
        {
            "response_id": _fixed_ids("R", counters.take("surveys", len(surveys.t)), 9),
            "source_customer_id": accounts.ids.take(pa.array(accounts.of_person[surveys.person, CRM])),
            "responded_at": _format_timestamps(window.seconds(surveys.t), np.full(len(surveys.t), CRM)),
            "survey_type": _pick(("csat", "nps"), surveys.nps.astype(np.int64)),
            "score": _numbers(surveys.score),
            "source": empty,
            "channel": _pick(SURVEY_CHANNELS, surveys.channel),
            "comment": surveys.comment,
        }
    )


def _tickets_table(tickets: _Tickets, accounts: _Accounts, window: _Window, counters: _Counters) -> pa.Table:
    count = len(tickets.opened)
    crm = np.full(count, CRM)
    opened_seconds = window.seconds(tickets.opened)

    def optional(t: np.ndarray) -> pa.Array:
        known = ~np.isnan(t)
        return _blank(_format_timestamps(window.seconds(np.nan_to_num(t)), crm), known)

    return pa.table(
        {
            "ticket_id": _fixed_ids("TK", counters.take("tickets", count), 8),
            "source_customer_id": accounts.ids.take(pa.array(accounts.of_person[tickets.person, CRM])),
            "opened_at": _format_timestamps(opened_seconds, crm),
            "source": pa.array(np.full(count, ""), type=pa.string()),
            "first_response_at": optional(tickets.first_response),
            "resolved_at": optional(tickets.resolved),
            "channel": _pick(TICKET_CHANNELS, tickets.channel),
            "category": _pick(TICKET_CATEGORIES, tickets.category),
            "status": _pick(("open", "resolved"), (~np.isnan(tickets.resolved)).astype(np.int64)),
            "_seconds": opened_seconds,
        }
    )


def _marketing_spend(rng: np.random.Generator, window: _Window, new_customers: np.ndarray) -> pa.Table:
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
    month = _format_dates(window.day_numbers[day])
    return pa.table(
        {
            "date": _format_dates(window.day_numbers[day]),
            "channel": _pick(PAID_CHANNELS, channel),
            "spend": _numbers(spend),
            "campaign_id": _join(_pick(PAID_CHANNELS, channel), "-", pc.utf8_slice_codeunits(month, 0, 7)),
            "impressions": _blank(_numbers(impressions), measured),
            "clicks": _blank(_numbers(clicks), measured),
            "new_customers": _numbers(acquired),
        }
    )


# ---------------------------------------------------------------- bad rows on purpose


def _row_keys(name: str, rows: pa.Table) -> pa.Array:
    if name == "customers":
        return _array(_join(rows.column("source"), "|", rows.column("source_customer_id")))
    if name == "marketing_spend":
        return _array(_join(rows.column("date"), "|", rows.column("channel")))
    row_id = CONTRACTS[name].row_id
    assert row_id is not None
    return rows.column(row_id).combine_chunks()


def _defect(
    rng: np.random.Generator, name: str, kind: str, rows: pa.Table, unknown_ids: Callable[[np.ndarray], pa.Array]
) -> dict[str, pa.Array]:
    """New values for some columns of `rows` that give each row exactly the reason `kind`."""
    count = rows.num_rows

    def text(*choices: str) -> pa.Array:
        return _pick(choices, rng.integers(0, len(choices), count))

    timestamp = {"customers": "signup_at", "orders": "ordered_at", "engagement_events": "occurred_at",
                 "surveys": "responded_at", "tickets": "opened_at"}.get(name, "")  # fmt: skip
    amount = {"orders": "net_amount", "marketing_spend": "spend"}.get(name, "")
    if kind == "unparseable_timestamp":
        return {timestamp: text("not a date", "2024-13-45 25:61:00", "31/02/2025 10:00", "hôm qua")}
    if kind == "missing_value":
        column = {"orders": "status", "engagement_events": "event_type", "surveys": "score",
                  "marketing_spend": "spend"}.get(name, timestamp)  # fmt: skip
        return {column: text("")}
    if kind == "negative_amount":
        return {amount: _join("-", rows.column(amount))}
    if kind == "unparseable_number":  # a letter O typed for a zero; every amount is a multiple of 1,000
        return {amount: pc.replace_substring(rows.column(amount), "0", "O", max_replacements=1)}
    if kind == "unparseable_date":
        return {"birth_date": text("1990-02-30", "31/12/1990", "1988-13-01")}
    if kind == "unparseable_boolean":
        return {"marketing_opt_in": text("maybe", "có", "N/A")}
    if kind == "unknown_status":
        return {"status": text("shipped", "delivered", "pending")}
    if kind == "unknown_event_type":
        return {"event_type": text("pageview", "click", "PageView")}
    if kind == "score_out_of_range":
        nps = np.asarray(pc.equal(rows.column("survey_type"), "nps").to_numpy(zero_copy_only=False), dtype=bool)
        low = rng.random(count) < 0.5
        return {"score": _pick(("0", "6", "-1", "11"), nps * 2 + (~low).astype(np.int64))}
    if kind == "first_response_before_opened":
        opened = rows.column("_seconds").to_numpy()
        early = opened - rng.integers(60, 7200, count)
        return {"first_response_at": _format_timestamps(early, np.full(count, CRM))}
    if kind == "unknown_customer":
        source = rows.column("_source").to_numpy() if "_source" in rows.column_names else np.full(count, CRM)
        return {"source_customer_id": unknown_ids(source)}
    raise AssertionError(f"no defect {kind} for {name}")


def _conflicting_version(rng: np.random.Generator, name: str, rows: pa.Table) -> dict[str, pa.Array]:
    """A later export of the same id whose content differs, every value still valid."""
    count = rows.num_rows
    if name == "customers":
        return {"city": pc.if_else(pc.equal(rows.column("city"), "Huế"), "Hà Nội", "Huế")}
    if name in ("orders", "marketing_spend"):
        amount = "net_amount" if name == "orders" else "spend"
        changed = pc.cast(rows.column(amount), pa.int64()).to_numpy() + 1000 * rng.integers(1, 50, count)
        return {amount: _numbers(changed)}
    if name == "engagement_events":
        seconds = rows.column("_seconds").to_numpy() + rng.integers(1, 600, count)
        return {"occurred_at": _format_timestamps(seconds, rows.column("_source").to_numpy())}
    if name == "surveys":
        score = pc.cast(rows.column("score"), pa.int64()).to_numpy()
        nps = np.asarray(pc.equal(rows.column("survey_type"), "nps").to_numpy(zero_copy_only=False), dtype=bool)
        return {"score": _numbers(np.where(nps, (score + 1) % 11, score % 5 + 1))}
    if name == "tickets":
        return {"channel": pc.if_else(pc.equal(rows.column("channel"), "phone"), "chat", "phone")}
    raise AssertionError(f"no conflicting version for {name}")


def _with_dirt(
    rng: np.random.Generator,
    name: str,
    rows: pa.Table,
    dirty_rate: float,
    unknown_ids: Callable[[np.ndarray], pa.Array],
    corruptible: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table]:
    """`rows` with about `dirty_rate` of them made bad (one defect each) and dirty_rate / 2 exact
    duplicates placed after their original; and the record of each (table, row_key, kind)."""
    count = rows.num_rows
    if dirty_rate <= 0 or count == 0:
        return rows, _dirty_record([], [], [])
    kinds = DEFECTS[name]
    bad = rng.binomial(count, dirty_rate)
    kind_of_bad = rng.integers(0, len(kinds), bad)
    conflicts = int((kind_of_bad == kinds.index("duplicate_id_conflict")).sum())
    in_place_kinds = kind_of_bad[kind_of_bad != kinds.index("duplicate_id_conflict")]
    duplicates = rng.binomial(count, dirty_rate / 2)
    allowed = np.arange(count) if corruptible is None else np.flatnonzero(corruptible)
    in_place = rng.choice(allowed, size=min(len(in_place_kinds), len(allowed)), replace=False)
    in_place_kinds = in_place_kinds[: len(in_place)]
    untouched = np.ones(count, dtype=bool)
    untouched[in_place] = False
    candidates = np.flatnonzero(untouched)
    copied = rng.choice(candidates, size=min(conflicts + duplicates, len(candidates)), replace=False)
    conflicts = min(conflicts, len(copied))
    duplicates = len(copied) - conflicts
    conflict_of, duplicate_of = copied[:conflicts], copied[conflicts:]

    changed = rows
    for code in np.unique(in_place_kinds):
        positions = np.sort(in_place[in_place_kinds == code])
        changes = _defect(rng, name, kinds[code], rows.take(pa.array(positions)), unknown_ids)
        changed = _replace_rows(changed, positions, changes)

    # the copies follow the chunk's rows, shuffled, as a re-export appended to the file would
    copied = rng.permutation(np.concatenate([conflict_of, duplicate_of]))
    is_conflict = np.isin(copied, conflict_of)
    copies = changed.take(pa.array(copied, type=pa.int64()))
    if conflicts:
        position = np.flatnonzero(is_conflict)
        copies = _replace_rows(copies, position, _conflicting_version(rng, name, copies.take(pa.array(position))))
    out = pa.concat_tables([changed, copies])
    in_place_order = np.argsort(in_place, kind="stable")
    keys = pa.concat_arrays(
        [_row_keys(name, changed.take(pa.array(in_place[in_place_order], type=pa.int64()))), _row_keys(name, copies)]
    )
    bad_kinds = [kinds[code] for code in in_place_kinds[in_place_order]]
    bad_kinds += np.where(is_conflict, "duplicate_id_conflict", EXACT_DUPLICATE).tolist()
    return out, _dirty_record([name] * len(bad_kinds), keys.to_pylist(), bad_kinds)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _replace_rows(rows: pa.Table, positions: np.ndarray, changes: dict[str, pa.Array]) -> pa.Table:
    """`rows` with the values of some columns at the (sorted) `positions` replaced."""
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[positions] = True
    for column, values in changes.items():
        replaced = pc.replace_with_mask(rows.column(column).combine_chunks(), pa.array(mask), _array(values))
        rows = rows.set_column(rows.column_names.index(column), column, replaced)
    return rows


def _dirty_record(tables: list[str], keys: list[str], kinds: list[str]) -> pa.Table:
    return pa.table({"table": pa.array(tables, pa.string()), "row_key": pa.array(keys, pa.string()),
                     "kind": pa.array(kinds, pa.string())})  # fmt: skip


# ---------------------------------------------------------------- writing


class _Writer:
    """Appends tables of strings to one CSV or Parquet file; opened at the first write."""

    def __init__(self, path: Path, schema: pa.Schema, file_format: FileFormat) -> None:
        self.path, self.schema, self.format = path, schema, file_format
        self.rows = 0
        self._writer: pv.CSVWriter | pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        if self._writer is None:
            self.path.unlink(missing_ok=True)
            if self.format == "csv":
                self._writer = pv.CSVWriter(str(self.path), self.schema)
            else:
                self._writer = pq.ParquetWriter(str(self.path), self.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is None:
            self.write(self.schema.empty_table())
        assert self._writer is not None
        self._writer.close()


def _export_schema(name: str) -> pa.Schema:
    return pa.schema([(column, pa.string()) for column in CONTRACTS[name].column_names])


PERSONS_SCHEMA = pa.schema(
    [
        ("person_id", pa.int64()),
        ("signup_at", pa.timestamp("s", tz="UTC")),
        ("acquisition_channel", pa.string()),
        ("purchase_rate", pa.float64()),
        ("dropout_hazard", pa.float64()),
        ("dropout_at", pa.timestamp("s", tz="UTC")),
        ("alive_at_end", pa.bool_()),
        ("expected_order_value", pa.float64()),
        ("latent_satisfaction", pa.float64()),
        ("support_slowness", pa.float64()),
        ("is_deal_seeker", pa.bool_()),
        ("engagement_rate", pa.float64()),
        ("first_order_at_signup", pa.bool_()),
        ("marketing_opt_in", pa.bool_()),
        ("household_id", pa.int64()),
    ]
)
IDENTITIES_SCHEMA = pa.schema([("source", pa.string()), ("source_customer_id", pa.string()), ("person_id", pa.int64())])
DIRTY_SCHEMA = pa.schema([("table", pa.string()), ("row_key", pa.string()), ("kind", pa.string())])


def _persons_table(people: _People, window: _Window) -> pa.Table:
    gone = people.dropout < window.days
    dropout_seconds = window.seconds(np.where(gone, people.dropout, 0))
    return pa.table(
        {
            "person_id": people.number,
            "signup_at": pa.array(window.seconds(people.signup), pa.timestamp("s", tz="UTC")),
            "acquisition_channel": _pick(ACQUISITION_CHANNELS, people.channel),
            "purchase_rate": people.purchase_rate,
            "dropout_hazard": people.hazard,
            "dropout_at": pa.array(dropout_seconds, pa.timestamp("s", tz="UTC"), mask=~gone),
            "alive_at_end": ~gone,
            "expected_order_value": people.expected_value,
            "latent_satisfaction": people.satisfaction,
            "support_slowness": people.slowness,
            "is_deal_seeker": people.deal,
            "engagement_rate": people.engagement,
            "first_order_at_signup": people.first_order,
            "marketing_opt_in": people.opt_in,
            "household_id": people.household,
        },
        schema=PERSONS_SCHEMA,
    )


# ---------------------------------------------------------------- the entry point


def _check_arguments(out_dir: Path, customers: int, seed: int, start: date, end: date, dirty_rate: float,
                     file_format: str, chunk_customers: int) -> None:  # fmt: skip
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise CustlensError(f"customers must be between 1 and {MAX_CUSTOMERS:,}, not {customers:,}")
    if seed < 0:
        raise CustlensError(f"seed must be a non-negative integer, not {seed}")
    if start >= end:
        raise CustlensError(f"start {start} must be before end {end}; give an earlier --start or a later --end")
    if (end - start).days < 27:
        raise CustlensError(f"the history from {start} to {end} is shorter than 4 weeks; give an earlier --start")
    if not 0.0 <= dirty_rate <= 0.5:
        raise CustlensError(f"dirty_rate must be between 0 and 0.5, not {dirty_rate}")
    if file_format not in ("csv", "parquet"):
        raise CustlensError(f"file format must be 'csv' or 'parquet', not {file_format!r}")
    if chunk_customers < 1:
        raise CustlensError(f"chunk_customers must be at least 1, not {chunk_customers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise CustlensError(f"output folder {out_dir} is a file; pass --out with a folder")


def _three_years_before(end: date) -> date:
    try:
        return end.replace(year=end.year - 3)
    except ValueError:  # 29 February
        return end.replace(year=end.year - 3, day=28)


def generate(
    out_dir: Path,
    customers: int,
    seed: int,
    start: date | None,
    end: date,
    dirty_rate: float,
    file_format: Literal["csv", "parquet"],
    console: Console | None = None,
    chunk_customers: int = 50_000,
) -> GenerateSummary:
    """Simulate `customers` people from `start` (default: 3 years before `end`) through `end` and
    write their exports and the ground truth to `out_dir`. Same arguments, same bytes."""
    began = time.perf_counter()
    start = start if start is not None else _three_years_before(end)
    _check_arguments(out_dir, customers, seed, start, end, dirty_rate, file_format, chunk_customers)
    window = _Window.of(start, end)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    other = "parquet" if file_format == "csv" else "csv"
    for name in CONTRACTS:  # a stale export in the other format would make ingest refuse the folder
        (out_dir / f"{name}.{other}").unlink(missing_ok=True)
    writers = {
        name: _Writer(out_dir / f"{name}.{file_format}", _export_schema(name), file_format) for name in CONTRACTS
    }
    truth = {
        "persons": _Writer(truth_dir / "persons.parquet", PERSONS_SCHEMA, "parquet"),
        "identities": _Writer(truth_dir / "identities.parquet", IDENTITIES_SCHEMA, "parquet"),
        "dirty_rows": _Writer(truth_dir / "dirty_rows.parquet", DIRTY_SCHEMA, "parquet"),
    }
    dirty_counts = dict.fromkeys(CONTRACTS, 0)
    campaigns = _Campaigns.schedule(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), window)
    new_customers = np.zeros((window.days, len(PAID_CHANNELS)), dtype=np.int64)
    counters = _Counters()

    def unknown_ids_from(rng: np.random.Generator) -> Callable[[np.ndarray], pa.Array]:
        def unknown_ids(source: np.ndarray) -> pa.Array:
            # numbers no person has: the id formats are bijections, so these ids exist nowhere
            numbers = customers + 1 + rng.integers(0, MAX_CUSTOMERS, len(source))
            out = np.empty(len(source), dtype=object)
            for code in np.unique(source):
                mine = source == code
                out[mine] = source_customer_ids(int(code), numbers[mine]).to_numpy(zero_copy_only=False)
            return pa.array(out, type=pa.string())

        return unknown_ids

    def put(name: str, rows: pa.Table, dirty: pa.Table) -> None:
        writers[name].write(rows)
        truth["dirty_rows"].write(dirty)
        dirty_counts[name] += dirty.num_rows

    progress = _progress(console)
    with progress:
        task = progress.add_task("simulating customers", total=customers)
        for chunk, first in enumerate(range(0, customers, chunk_customers)):
            size = min(chunk_customers, customers - first)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk)))
            dirt_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, chunk)))
            unknown_ids = unknown_ids_from(dirt_rng)
            chunk_tables = _simulate_chunk(rng, first, size, window, campaigns, counters, new_customers)
            for name, rows, corruptible in chunk_tables:
                if name in truth:
                    truth[name].write(rows)
                else:
                    put(name, *_with_dirt(dirt_rng, name, rows, dirty_rate, unknown_ids, corruptible))
            progress.advance(task, size)
        spend_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
        spend = _marketing_spend(spend_rng, window, new_customers)
        spend, dirt = _with_dirt(spend_rng, "marketing_spend", spend, dirty_rate, unknown_ids_from(spend_rng))
        put("marketing_spend", spend, dirt)
        for writer in (*writers.values(), *truth.values()):
            writer.close()

    return GenerateSummary(
        out_dir=out_dir,
        file_format=file_format,
        persons=customers,
        rows={name: writer.rows for name, writer in writers.items()},
        dirty_rows=dirty_counts,
        table_paths={name: writer.path for name, writer in writers.items()},
        truth_paths={name: writer.path for name, writer in truth.items()},
        seconds=time.perf_counter() - began,
    )


def _simulate_chunk(
    rng: np.random.Generator,
    first: int,
    size: int,
    window: _Window,
    campaigns: _Campaigns,
    counters: _Counters,
    new_customers: np.ndarray,
) -> Iterator[tuple[str, pa.Table, np.ndarray | None]]:
    """Simulate people `first`.. `first + size - 1`; yield each export table (with the rows that may
    be corrupted, when that is restricted) and each truth table, one at a time to bound memory."""
    people = _simulate_people(rng, first, size, window)
    accounts = _simulate_accounts(rng, people, window)
    orders = _simulate_orders(rng, people, accounts, window)
    events = _simulate_engagement(rng, people, accounts, orders, window, campaigns)
    tickets = _simulate_tickets(rng, people, accounts, orders, window)
    surveys = _simulate_surveys(rng, people, accounts, orders, tickets, window)
    np.add.at(new_customers, _paid_acquisitions(people), 1)
    event_rows = events.collected(until=window.days)
    del events

    active = np.zeros(len(accounts.person), dtype=bool)
    active[orders.account] = True
    active[event_rows["account"]] = True
    active[accounts.of_person[np.concatenate([surveys.person, tickets.person]), CRM]] = True
    # a quarantined customer row orphans its activity: only idle, non-crm rows are made bad
    yield "customers", accounts.rows, ~active & (accounts.source != CRM)
    yield "orders", _orders_table(orders, accounts, window, counters), None
    yield "engagement_events", _events_table(event_rows, accounts, window, campaigns, counters), None
    del event_rows
    yield "surveys", _surveys_table(surveys, accounts, window, counters), None
    yield "tickets", _tickets_table(tickets, accounts, window, counters), None
    yield "persons", _persons_table(people, window), None
    identities = {
        "source": accounts.rows.column("source"),
        "source_customer_id": accounts.ids,
        "person_id": people.number[accounts.person],
    }
    yield "identities", pa.table(identities), None


def _paid_acquisitions(people: _People) -> tuple[np.ndarray, np.ndarray]:
    names = np.array(ACQUISITION_CHANNELS)[people.channel]
    paid = np.isin(names, PAID_CHANNELS)
    day = np.floor(people.signup[paid]).astype(np.int64)
    channel = np.array([PAID_CHANNELS.index(name) for name in names[paid].tolist()], dtype=np.int64)
    return day, channel


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=console is None,
    )


# ---------------------------------------------------------------- checking identity resolution


def pairwise_merge_quality(predicted: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """Pairwise precision and recall of an identity merge, over the source ids both frames know.

    `predicted` has source, source_customer_id, customer_id; `truth` has source,
    source_customer_id, person_id. A pair is two source ids put together: precision = pairs both
    agree on / pairs predicted, recall = pairs both agree on / true pairs. Pairs are counted as
    n (n - 1) / 2 per group, never enumerated. No pairs at all counts as 1.0.
    """
    key = ["source", "source_customer_id"]
    both = (
        predicted[[*key, "customer_id"]]
        .drop_duplicates(key)
        .merge(truth[[*key, "person_id"]].drop_duplicates(key), on=key, how="inner")
    )

    def pairs(by: list[str]) -> int:
        sizes = both.groupby(by, sort=False).size().to_numpy(dtype=np.int64)
        return int((sizes * (sizes - 1) // 2).sum())

    predicted_pairs, true_pairs = pairs(["customer_id"]), pairs(["person_id"])
    agreed = pairs(["customer_id", "person_id"])
    precision = agreed / predicted_pairs if predicted_pairs else 1.0
    recall = agreed / true_pairs if true_pairs else 1.0
    return precision, recall
