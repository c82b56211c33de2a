"""The simulated people and their accounts: each person's latent traits (`People`), the records the
five systems hold of them (`Accounts`, the customers export), and how each system writes their
names, emails and phones.

Identities: each person has a crm record with SOURCE_PRESENCE[crm] and pos/web/app/email accounts
with the other shares (people without a crm record half as often), at least one pos/web/app
account (the one they signed up with; the others open Exp(120 days) later). Each record carries
the person's email / phone with EMAIL_PRESENCE / PHONE_PRESENCE, written each system's way (case,
spaces, +84 / 84 / 0 prefixes, spaces or dashes). HOUSEHOLD_SHARE of people share a phone in
pairs (false merges), UNLINKED_SHARE use a different address per account and no phone, and
WEB_OTHER_EMAIL_SHARE of web accounts use another address (misses).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.sample.formats import (
    blank,
    fixed_ids,
    format_dates,
    format_timestamps,
    join,
    number_strings,
    pick,
    scramble,
    source_customer_ids,
)
from features.sample.world import (
    ACQUISITION_CHANNELS,
    ACQUISITION_WEIGHTS,
    APP,
    CATEGORIES,
    CATEGORY_VALUE,
    CRM,
    DEAL_SEEKER_HAZARD,
    DEAL_SEEKER_SHARE,
    EMAIL,
    ENTRY_ACCOUNT_WEIGHT,
    FIRST_ORDER_AT_SIGNUP,
    GG_GAMMA,
    GG_P,
    GG_Q,
    HAZARD_MEAN,
    HAZARD_SHAPE,
    MARKETING_OPT_IN,
    ORDER_SOURCES,
    OTHER_ACCOUNT_WEIGHT,
    POS,
    PURCHASE_RATE_MEAN,
    PURCHASE_RATE_SHAPE,
    SATISFACTION_HAZARD,
    SIGNUP_GROWTH_PER_YEAR,
    SIGNUP_HOURS,
    SLOWNESS_HAZARD,
    SOURCES,
    WEB,
    Window,
    categorical,
    row_choice,
    time_of_day,
)

SOURCE_PRESENCE = (0.85, 0.50, 0.55, 0.40, 0.60)
EMAIL_PRESENCE = (0.97, 0.40, 0.99, 0.97, 1.0)  # share of a source's records that carry an email
PHONE_PRESENCE = (0.97, 0.97, 0.55, 0.95, 0.0)
UNLINKED_SHARE = 0.008  # people whose accounts share no contact at all (realistic misses)
HOUSEHOLD_SHARE = 0.005  # people using another person's phone (realistic false merges)
WEB_OTHER_EMAIL_SHARE = 0.03  # web accounts opened with another email address
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


# ---------------------------------------------------------------- people


@dataclass
class People:
    """The latent truth of a chunk of people, one entry per person."""

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


def simulate_people(rng: np.random.Generator, first_number: int, n: int, window: Window) -> People:
    number = np.arange(first_number, first_number + n, dtype=np.int64)
    growth = math.log(SIGNUP_GROWTH_PER_YEAR) / 365
    total = math.expm1(growth * window.days)
    signup_day = np.floor(np.log1p(rng.random(n) * total) / growth)
    signup = time_of_day(rng, np.minimum(signup_day, window.days - 1), SIGNUP_HOURS)
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
    return People(
        number=number, signup=signup, channel=categorical(rng, ACQUISITION_WEIGHTS, n),
        purchase_rate=purchase_rate, hazard=hazard, dropout=dropout, satisfaction=satisfaction, slowness=slowness,
        deal=deal, engagement=rng.gamma(2.0, 0.5, n), expected_value=expected_value, value_scale=value_scale,
        category_preference=preference, opt_in=rng.random(n) < MARKETING_OPT_IN, female=female,
        first_order=rng.random(n) < FIRST_ORDER_AT_SIGNUP, household=household,
        unlinked=rng.random(n) < UNLINKED_SHARE, birth_days=end_day - age_days,
        city=categorical(rng, CITY_WEIGHTS, n),
        family=categorical(rng, tuple(weight for _, weight in FAMILY_NAMES), n),
        middle=rng.integers(0, len(MIDDLE_NAMES[0]), n), given=rng.integers(0, len(GIVEN_NAMES[0]), n),
    )  # fmt: skip


# ---------------------------------------------------------------- accounts (the customers table)


@dataclass
class Accounts:
    """The accounts of a chunk's people, person-major (a person's accounts sit together)."""

    person: np.ndarray  # index into the chunk's people
    source: np.ndarray
    created: np.ndarray  # days since window start
    ids: pa.Array
    of_person: np.ndarray  # (people, sources): account index or -1
    entry: np.ndarray  # per person: the order source whose account they signed up with
    rows: pa.Table  # the customers export of these accounts, contract columns
    has_email: np.ndarray
    has_phone: np.ndarray
    # how often the account carries its person's orders once open (0: crm and email never do)
    order_weight: np.ndarray


def simulate_accounts(rng: np.random.Generator, people: People, window: Window) -> Accounts:
    n = len(people)
    present = rng.random((n, len(SOURCES))) < np.array(SOURCE_PRESENCE)
    # people the CRM never registered use fewer of the other systems too
    present[~present[:, CRM], WEB:] &= rng.random((int((~present[:, CRM]).sum()), len(SOURCES) - WEB)) < 0.5
    offline = people.channel == ACQUISITION_CHANNELS.index("offline")
    present[offline, POS] = True
    order_weights = present[:, ORDER_SOURCES] * np.array([0.4, 0.35, 0.25])
    none = order_weights.sum(axis=1) == 0
    order_weights[none] = np.array([0.4, 0.35, 0.25])
    entry = np.array(ORDER_SOURCES)[row_choice(rng, order_weights)]
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
            "source": pick(SOURCES, source),
            "source_customer_id": ids,
            "signup_at": format_timestamps(window.seconds(account_created), source),
            "email": blank(email, has_email),
            "phone": blank(phone, has_phone),
            "full_name": blank(full_name, keep_name),
            "birth_date": blank(format_dates(people.birth_days[person]), with_birth),
            "gender": pa.array(gender, type=pa.string()),
            "city": blank(pick(CITIES, people.city[person]), with_city),
            "acquisition_channel": blank(pick(ACQUISITION_CHANNELS, people.channel[person]), with_channel),
            "marketing_opt_in": pa.array(yes_no, type=pa.string()),
        }
    )
    order_weight = np.where(
        np.isin(source, ORDER_SOURCES),
        np.where(source == entry[person], ENTRY_ACCOUNT_WEIGHT, OTHER_ACCOUNT_WEIGHT),
        0.0,
    )
    return Accounts(person, source, account_created, ids, of_person, entry, rows, has_email, has_phone,
                    order_weight)  # fmt: skip


def _full_names(people: People, person: np.ndarray) -> pa.Array:
    female = people.female[person].astype(np.int64)
    family = pick([name for name, _ in FAMILY_NAMES], people.family[person])
    middle = pick(MIDDLE_NAMES[0] + MIDDLE_NAMES[1], people.middle[person] + female * len(MIDDLE_NAMES[0]))
    given = pick(GIVEN_NAMES[0] + GIVEN_NAMES[1], people.given[person] + female * len(GIVEN_NAMES[0]))
    return pc.binary_join_element_wise(family, middle, given, " ")


def _emails(rng: np.random.Generator, people: People, person: np.ndarray, source: np.ndarray) -> pa.Array:
    """The person's address as each system holds it: case and spaces vary; some accounts use
    another address (unlinked people everywhere, some web accounts)."""
    count = len(person)
    female = people.female[person].astype(np.int64)
    given = pick([_ascii(name) for name in GIVEN_NAMES[0] + GIVEN_NAMES[1]],
                  people.given[person] + female * len(GIVEN_NAMES[0]))  # fmt: skip
    family = pick([_ascii(name) for name, _ in FAMILY_NAMES], people.family[person])
    number = number_strings(scramble(people.number[person], 7_654_321, 1_234_567, 10**7))
    domain = pick(EMAIL_DOMAINS, categorical(rng, EMAIL_DOMAIN_WEIGHTS, len(people))[person])
    primary = join(given, ".", family, number, "@", domain)
    # another address: an underscore where the primary has a dot, and a letter per source, so never shared
    other = join(given, "_", family, number, pick(["c", "p", "w", "a", "e"], source), "@", domain)
    use_other = people.unlinked[person] | ((source == WEB) & (rng.random(count) < WEB_OTHER_EMAIL_SHARE))
    email = pc.if_else(pa.array(use_other), other, primary)
    style = rng.random(count)
    capitalized = pc.utf8_capitalize(email)
    upper = pc.utf8_upper(email)
    spaced = join("  ", email, " ")
    email = pc.if_else(
        pa.array(((source == WEB) & (style < 0.3)) | ((source == APP) & (style < 0.1))), capitalized, email
    )
    email = pc.if_else(pa.array((source == EMAIL) & (style < 0.1)), upper, email)
    email = pc.if_else(pa.array(((source == APP) & (style > 0.85)) | ((source == CRM) & (style > 0.9))), spaced, email)
    return email


def _phones(rng: np.random.Generator, people: People, person: np.ndarray, source: np.ndarray) -> pa.Array:
    """The household's phone, written the way each clerk or form writes it."""
    household = people.household[person]
    # prefix and subscriber number both come from the household number: one household, one phone
    subscriber = fixed_ids("", scramble(household, 3_141_593, 2_718_281, 10**7), 7)
    national = join(pick(PHONE_PREFIXES, household % len(PHONE_PREFIXES)), subscriber)
    head, middle, tail = (pc.utf8_slice_codeunits(national, a, b) for a, b in ((0, 4), (4, 7), (7, 10)))
    without_zero = pc.utf8_slice_codeunits(national, 1, 10)
    styles = [
        national,
        join(head, " ", middle, " ", tail),
        join("+84 ", without_zero),
        join("84", without_zero),
        join(head, "-", middle, "-", tail),
        join("+84 ", pc.utf8_slice_codeunits(head, 1, 4), " ", middle, " ", tail),
    ]
    weights = np.array([[0.7, 0.1, 0.1, 0.05, 0.03, 0.02],  # crm
                        [0.3, 0.3, 0.05, 0.1, 0.25, 0.0],   # pos
                        [0.4, 0.1, 0.3, 0.1, 0.0, 0.1],     # web
                        [0.2, 0.0, 0.5, 0.1, 0.0, 0.2],     # app
                        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # email  # fmt: skip
    style = row_choice(rng, weights[source])
    return pc.choose(pa.array(style.astype(np.int8)), *styles)


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFD", name.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Mn").lower()
