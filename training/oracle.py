"""The oracle: churn, repurchase and CLV predicted from the simulated customers' latent truth
(`features.sample.truth`'s folder), the ceiling a model's test metric is measured against.
Real businesses have no truth: the oracle exists for the generated sample only.

What the oracle knows at a cutoff t, per person behind a customer: the purchase rate lambda, the
drop-out hazard mu, whether they are a deal seeker (their seasonality), the expected order value,
whether they are still alive at t, and when each of their accounts opens (which account carries
their orders: an identity fact, not a buying one), all read from the truth files. Plus the
generator's laws, imported from `features.sample.world` (its calendar m(day), its hour-of-day
profile, the completed share of orders, the fade and the activity rates), and the share of order
rows ingest keeps.

What it does not know: the future drop-out time and the random timing, status and amount of
future orders. The generator draws drop-out as tau = signup + Exp(1) / mu with mu constant in
time (satisfaction and support slowness enter mu once, at signup), so given alive at t the
remaining life is exactly Exp(mu): the oracle's probabilities are the generator's own law, the
best prediction from the latent parameters. It is not an absolute bound: engagement fades in the
25 days before drop-out, so the observed data carry a little of the future drop-out time that
the oracle ignores. `knows_dropout_time=True` gives the clairvoyant variant that uses tau itself.

The observable oracle (`oracle_predictions(..., evidence=load_evidence(...))`) knows the same
latent parameters but not whether the person is still alive: it infers tau from what the lake
shows of the person before t, by Bayes with the generator's own law (the Exp(mu) prior from
signup; no order after tau; browsing sessions, social shares, referrals and email opens thinned
by the engagement fade, which also tells a little about a drop-out soon after t). What separates
it from the oracle no model can learn from this data: it is the ceiling for any model.
Left out as negligible: the signup order of someone who signed up in the 20 minutes before t,
and orders moved back to the drop-out instant on the window's last day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.lake.tables import CROSSWALK, lake_file
from features.sample.dirt import EXTRA_ROW_KINDS
from features.sample.truth import TRUTH_SCHEMAS, outdated_truth_files, truth_file, truth_folder
from features.sample.world import (
    APP,
    COMPLETED_SHARE,
    EMAIL_OPEN_BASE,
    EMAIL_OPEN_DELAY_DAYS,
    EMAIL_OPEN_RESPONSIVE,
    FADE_DAYS,
    FADE_FLOOR,
    LOCAL_OFFSET_S,
    ORDER_HOURS,
    ORDER_SESSION_LEAD_MINUTES,
    SOURCES,
    WEB,
    fade,
    order_intensity,
    referral_rate,
    session_rate,
    share_rate,
)

OracleModel = Literal["churn", "repurchase", "clv"]

# Below this share of the lake's source ids known to the truth, the truth describes other data.
MIN_TRUTH_COVERAGE = 0.99

_KEY = ["source", "source_customer_id"]
_DAY_S = 86_400
_PERSON_COLUMNS = [
    "person_id",
    "signup_at",
    "purchase_rate",
    "dropout_hazard",
    "dropout_at",
    "alive_at_end",
    "expected_order_value",
    "latent_satisfaction",
    "support_slowness",
    "is_deal_seeker",
    "engagement_rate",
]
# A session this long before an order led to it: the generator's longest lead, plus a minute for
# timestamps written to the second.
ORDER_SESSION_LEAD_DAYS = (ORDER_SESSION_LEAD_MINUTES[1] + 1) / 1440
# Activity this long before the last order says nothing more about tau (the fade is exp(-10) away).
FADE_REACH_DAYS = 10 * FADE_DAYS
# The observable oracle's grid of drop-out times reaches this far past the window's end: later,
# the fade no longer touches anything observed before t.
TAU_GRID_BEYOND_DAYS = 6 * FADE_DAYS


@dataclass(frozen=True)
class PersonBehind:
    """One simulated person behind a unified customer, with what the oracle needs of them.

    The order accounts are all the person's pos/web/app accounts, also those identity resolution
    put under another customer_id (`here` False): orders split over them by weight."""

    person_id: int
    signup_s: int  # UTC epoch seconds
    dropout_s: float  # UTC epoch seconds; inf when the person outlives the simulation
    purchase_rate: float  # orders per year while alive, before seasonality
    dropout_hazard: float  # per year
    is_deal_seeker: bool
    expected_order_value: float  # VND, net
    engagement_rate: float
    latent_satisfaction: float
    account_opened_s: np.ndarray  # int64 UTC epoch seconds of each order account
    account_weight: np.ndarray  # float, 0 for an account whose opening time is unknown
    account_here: np.ndarray  # bool: the account belongs to this customer_id

    def order_share(self, at_s: np.ndarray) -> np.ndarray:
        """Share of the person's orders this customer's accounts carry at each instant."""
        opened = self.account_opened_s[None, :] <= at_s[:, None]
        weight = opened * self.account_weight[None, :]
        total = weight.sum(axis=1)
        here = (weight * self.account_here[None, :]).sum(axis=1)
        return np.divide(here, total, out=np.zeros(len(at_s)), where=total > 0)


# ---------------------------------------------------------------- the truth per customer


def load_truth(truth_dir: Path, lake_dir: Path) -> pd.DataFrame:
    """One row per unified customer_id of the lake's crosswalk with the latent truth behind it.

    Identity resolution is not perfect, and the oracle follows the orders, not the ids:
    - merged persons (two people sharing a phone put under one customer_id): every person is in
      `persons`; the oracle multiplies their no-order probabilities and adds their expected revenue;
    - a split person (accounts resolution could not link): each customer_id gets the share of the
      person's orders its accounts carry, the generator's account weights at each instant.
    The person columns (purchase_rate, dropout_hazard, ...) describe the main person: the one whose
    order accounts here weigh most. `recorded_order_share` is the share of generated order rows
    ingest kept (the rest were made bad on purpose and quarantined); `history_end` is the end of the
    simulated history (the generator does not record it: the local day after the lake's last order).
    """
    _check_truth_version(truth_dir)
    persons = pd.read_parquet(truth_file(truth_dir, "persons"))
    identities = pd.read_parquet(truth_file(truth_dir, "identities"))
    crosswalk = pd.read_parquet(lake_file(lake_dir, CROSSWALK), columns=[*_KEY, "customer_id"])
    _check_coverage(crosswalk, identities, truth_dir, lake_dir)

    accounts = identities.merge(crosswalk, on=_KEY, how="left")
    signup_s = _epoch_seconds(persons["signup_at"])
    order_accounts = _order_accounts(truth_dir, accounts)
    links = accounts.dropna(subset=["customer_id"])[["customer_id", "person_id"]].drop_duplicates()

    order_accounts = order_accounts.sort_values("person_id", kind="stable")
    account_person = order_accounts["person_id"].to_numpy()
    account_customer = order_accounts["customer_id"].to_numpy(dtype=object)
    opened_s = order_accounts["opened_s"].to_numpy(dtype=np.int64)
    weight = order_accounts["weight"].to_numpy(dtype=float)
    row_of = pd.Series(np.arange(len(persons)), index=persons["person_id"].to_numpy())
    latent = {name: persons[name].to_numpy() for name in _PERSON_COLUMNS}
    dropout_s = _epoch_seconds(persons["dropout_at"], missing=np.inf)

    rows = []
    for customer_id, group in links.groupby("customer_id", sort=True):
        behind = []
        for person_id in group["person_id"].to_numpy():
            i = int(row_of[person_id])
            first, last = np.searchsorted(account_person, [person_id, person_id + 1])
            behind.append(
                PersonBehind(
                    person_id=int(person_id),
                    signup_s=int(signup_s[i]),
                    dropout_s=float(dropout_s[i]),
                    purchase_rate=float(latent["purchase_rate"][i]),
                    dropout_hazard=float(latent["dropout_hazard"][i]),
                    is_deal_seeker=bool(latent["is_deal_seeker"][i]),
                    expected_order_value=float(latent["expected_order_value"][i]),
                    engagement_rate=float(latent["engagement_rate"][i]),
                    latent_satisfaction=float(latent["latent_satisfaction"][i]),
                    account_opened_s=opened_s[first:last],
                    account_weight=weight[first:last],
                    account_here=account_customer[first:last] == customer_id,
                )
            )
        main = max(behind, key=lambda p: (float(p.account_weight[p.account_here].sum()), -p.person_id))
        rows.append((customer_id, main.person_id, len(behind), tuple(behind)))

    truth = pd.DataFrame(rows, columns=["customer_id", "person_id", "n_persons", "persons"])
    truth = truth.merge(persons[_PERSON_COLUMNS], on="person_id", how="left")
    truth["recorded_order_share"] = _recorded_order_share(truth_dir, lake_dir)
    truth["history_end"] = _history_end(lake_dir)
    return truth


def _check_truth_version(truth_dir: Path) -> None:
    outdated = outdated_truth_files(truth_dir)
    if outdated:
        raise CustlensError(
            f"the truth in {truth_dir} was written by an older `custlens generate` ({', '.join(outdated)} "
            "lack what the oracle reads); generate the sample again, then ingest it"
        )


def _check_coverage(crosswalk: pd.DataFrame, identities: pd.DataFrame, truth_dir: Path, lake_dir: Path) -> None:
    known = crosswalk.merge(identities[_KEY], on=_KEY, how="inner")
    coverage = len(known) / len(crosswalk) if len(crosswalk) else 0.0
    if coverage < MIN_TRUTH_COVERAGE:
        raise CustlensError(
            f"the truth in {truth_dir} knows {coverage:.1%} of the source ids in {lake_file(lake_dir, CROSSWALK)}: "
            "the lake was ingested from other data; the oracle only describes the generated sample "
            "(ingest it with `custlens ingest` from the sample folder, or skip the oracle)"
        )


def _epoch_seconds(values: pd.Series, missing: float = np.nan) -> np.ndarray:
    stamps = pd.to_datetime(values, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    return np.where(np.isnan(seconds), missing, seconds)


def _order_accounts(truth_dir: Path, accounts: pd.DataFrame) -> pd.DataFrame:
    """Every pos/web/app account (order_weight > 0) with person_id, customer_id (may be missing),
    opened_s and weight: the truth's opening time and order weight, except that an account whose
    export row lost its signup_at (made bad on purpose) weighs 0. The generator spoils only rows
    no activity refers to, so such an account never carried an order."""
    mine = accounts[accounts["order_weight"] > 0]
    lost = _opening_lost(truth_dir, mine)
    return mine.assign(
        opened_s=np.where(lost, np.iinfo(np.int64).max, _epoch_seconds(mine["opened_at"]).astype(np.int64)),
        weight=np.where(lost, 0.0, mine["order_weight"].to_numpy(dtype=float)),
    )


def _opening_lost(truth_dir: Path, accounts: pd.DataFrame) -> np.ndarray:
    """Per account: whether its customers export row had its signup_at made bad on purpose."""
    dirty = pd.read_parquet(truth_file(truth_dir, "dirty_rows"), columns=["table", "row_key", "kind", "column"])
    spoiled = dirty[(dirty["table"] == "customers") & (dirty["column"] == "signup_at")]
    spoiled = spoiled[~spoiled["kind"].isin(EXTRA_ROW_KINDS)]  # a copy leaves the original row readable
    row_key = accounts["source"] + "|" + accounts["source_customer_id"]  # how dirty_rows names a customers row
    return row_key.isin(spoiled["row_key"]).to_numpy()


def _recorded_order_share(truth_dir: Path, lake_dir: Path) -> float:
    """Share of generated order rows the lake kept: rows made bad in place were quarantined, while
    conflicting and exact copies were extra rows (the original stayed)."""
    dirty = pd.read_parquet(truth_file(truth_dir, "dirty_rows"), columns=["table", "kind"])
    kinds = dirty.loc[dirty["table"] == "orders", "kind"]
    lost = int((~kinds.isin(EXTRA_ROW_KINDS)).sum())
    kept = pq.ParquetFile(lake_file(lake_dir, "orders")).metadata.num_rows
    return kept / (kept + lost) if kept + lost else 1.0


def _history_end(lake_dir: Path) -> pd.Timestamp:
    orders_path = lake_file(lake_dir, "orders")
    ordered_at = pq.read_table(orders_path, columns=["ordered_at"]).column("ordered_at")
    last = pd.Timestamp(ordered_at.to_pandas().max())
    if pd.isna(last):
        raise CustlensError(f"{orders_path} holds no orders; the oracle needs the order history")
    offset = pd.Timedelta(seconds=LOCAL_OFFSET_S)
    last_local_day = (last.tz_convert("UTC").tz_localize(None) + offset).normalize()
    return (last_local_day + pd.Timedelta(days=1) - offset).tz_localize("UTC")


@dataclass(frozen=True)
class Evidence:
    """What the lake shows of each simulated person's activity, over all their accounts (whichever
    customer_id carries them), in days since 1970-01-01 UTC and keyed by person_id: the clues to
    whether they are still alive that the observable oracle reads.

    `browsing` is what the fade thins and nothing else drives: sessions that lead to no order,
    social shares and referrals. Left out: tickets (about 0.3 a year, while alive) and
    unsubscribes (0.4% of sends while alive, 1.5% after), too rare to move the estimate much."""

    orders: dict[int, np.ndarray]  # every recorded order, any status, sorted
    browsing: dict[int, np.ndarray]  # sorted
    email_sent: dict[int, np.ndarray]  # sorted
    email_opened: dict[int, np.ndarray]  # per send, when it was opened (NaN: never)
    online_from: dict[int, float]  # when the first web or app account opened (sessions need one)


def load_evidence(truth_dir: Path, lake_dir: Path) -> Evidence:
    """Each person's orders, browsing and email history from the lake, through the truth's identities."""
    _check_truth_version(truth_dir)
    accounts = pd.read_parquet(truth_file(truth_dir, "identities"))
    identities = accounts[[*_KEY, "person_id"]]
    orders = pd.read_parquet(lake_file(lake_dir, "orders"), columns=[*_KEY, "ordered_at"])
    orders = orders.merge(identities, on=_KEY, how="inner").assign(at=lambda o: _epoch_days(o["ordered_at"]))
    columns = [*_KEY, "occurred_at", "event_type", "campaign_id"]
    events_path = lake_file(lake_dir, "engagement_events")
    if events_path.exists():
        clues = ["session_start", "social_share", "referral", "email_sent", "email_open"]
        events = pd.read_parquet(events_path, columns=columns, filters=[("event_type", "in", clues)])
    else:
        events = pd.DataFrame({name: pd.Series(dtype="datetime64[us, UTC]" if name == "occurred_at" else object)
                               for name in columns})  # fmt: skip
    events = events.merge(identities, on=_KEY, how="inner").assign(at=lambda e: _epoch_days(e["occurred_at"]))

    sessions = events[events["event_type"] == "session_start"].sort_values("at")
    ahead = orders[[*_KEY, "at"]].rename(columns={"at": "order_at"}).sort_values("order_at")
    sessions = pd.merge_asof(sessions, ahead, left_on="at", right_on="order_at", by=_KEY, direction="forward",
                             tolerance=ORDER_SESSION_LEAD_DAYS)  # fmt: skip
    browsing = pd.concat(
        [sessions[sessions["order_at"].isna()], events[events["event_type"].isin(["social_share", "referral"])]]
    )
    sent = events[events["event_type"] == "email_sent"]
    opens = events[events["event_type"] == "email_open"].groupby([*_KEY, "campaign_id"], as_index=False)["at"].min()
    sent = sent.merge(opens.rename(columns={"at": "opened_at"}), on=[*_KEY, "campaign_id"], how="left")

    online = accounts[accounts["source"].isin([SOURCES[WEB], SOURCES[APP]])]
    online = online[~_opening_lost(truth_dir, online)].assign(opened_s=lambda a: _epoch_seconds(a["opened_at"]))
    return Evidence(
        orders=_by_person(orders, "at"),
        browsing=_by_person(browsing, "at"),
        email_sent=_by_person(sent, "at"),
        email_opened=_by_person(sent, "at", "opened_at"),
        online_from=(online.groupby("person_id")["opened_s"].min() / _DAY_S).to_dict(),
    )


def _epoch_days(values: pd.Series) -> np.ndarray:
    return _epoch_seconds(values) / _DAY_S


def _by_person(rows: pd.DataFrame, order_by: str, column: str | None = None) -> dict[int, np.ndarray]:
    """person_id -> the `column` (default `order_by`) values of their rows, in `order_by` order."""
    rows = rows.sort_values(["person_id", order_by], kind="stable")
    person = rows["person_id"].to_numpy()
    values = rows[column or order_by].to_numpy(dtype=float)
    starts = np.flatnonzero(np.r_[True, person[1:] != person[:-1]]) if len(person) else np.array([], dtype=int)
    return {int(person[start]): part for start, part in zip(starts, np.split(values, starts[1:]), strict=True)}


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class _Calendar:
    """The label window [t, t + W days) cut into local days, t being 07:00 local of day d0.

    Orders of a local day are spread over it by ORDER_HOURS whenever in the day they were drawn,
    so an order of day d0 falls in the window with the day's share after 07:00 and one of day
    d0 + W with the share before it. Segment j covers [start_j, start_j + length_j) days after t."""

    start: np.ndarray
    length: np.ndarray
    landing: np.ndarray  # share of the segment's day's orders that land in the window
    regular: np.ndarray  # m(day) of each segment's day, 0 beyond the history
    deal_seeker: np.ndarray
    before_cutoff: float  # days of d0 before t (the person is surely alive then)
    middle_s: np.ndarray  # UTC epoch seconds of each segment's middle, for account shares

    @classmethod
    def of(cls, cutoff: date, window_days: int, history_end: pd.Timestamp) -> _Calendar:
        offset_days = LOCAL_OFFSET_S / _DAY_S
        hours = np.concatenate([[0.0], np.cumsum(ORDER_HOURS)])
        share_before = float(np.interp(offset_days * 24, np.arange(25), hours) / hours[-1])
        first = (cutoff - date(1970, 1, 1)).days
        days = first + np.arange(window_days + 1)
        end_day = (history_end + pd.Timedelta(seconds=LOCAL_OFFSET_S) - pd.Timestamp(0, tz="UTC")).days
        simulated = days < end_day
        start = np.concatenate([[0.0], np.arange(1, window_days + 1) - offset_days])
        length = np.concatenate([[1 - offset_days], np.ones(window_days)])
        landing = np.ones(window_days + 1)
        landing[0], landing[-1] = 1 - share_before, share_before
        as_dates = days.astype("datetime64[D]")
        return cls(
            start=start,
            length=length,
            landing=landing,
            regular=np.where(simulated, order_intensity(as_dates, False), 0.0),
            deal_seeker=np.where(simulated, order_intensity(as_dates, True), 0.0),
            before_cutoff=offset_days,
            middle_s=first * _DAY_S + (start + length / 2) * _DAY_S,  # t is midnight UTC
        )


def oracle_predictions(
    truth: pd.DataFrame,
    customer_ids: Sequence[str],
    cutoff: date,
    model: OracleModel,
    window_days: int,
    *,
    knows_dropout_time: bool = False,
    evidence: Evidence | None = None,
) -> np.ndarray:
    """The oracle's prediction for each customer at `cutoff` over [cutoff, cutoff + window_days):
    churn P(no completed order), repurchase P(a completed order), clv expected completed net revenue.

    People who dropped out before the cutoff, or sign up after it, add no orders. With
    `knows_dropout_time` the oracle also knows when the others drop out (an upper bound). With
    `evidence` it does not know who is alive at the cutoff (the observable oracle): it weighs each
    drop-out time by how well it explains what the lake shows of the person before the cutoff."""
    wanted = pd.Index(customer_ids, dtype=object)
    rows = truth.set_index("customer_id").reindex(wanted)
    unknown = wanted[rows["persons"].isna().to_numpy()]
    if len(unknown):
        raise CustlensError(
            f"{len(unknown)} of {len(wanted)} customers are not in the truth (e.g. {unknown[0]}); "
            "the truth must come from the sample the lake was ingested from"
        )
    if len(wanted) == 0:
        return np.zeros(0)
    calendar = _Calendar.of(cutoff, window_days, truth["history_end"].iat[0])
    cutoff_s = (cutoff - date(1970, 1, 1)).days * _DAY_S
    per_order = COMPLETED_SHARE * float(truth["recorded_order_share"].iat[0])

    owner = np.repeat(np.arange(len(rows)), [len(behind) for behind in rows["persons"]])
    people: list[PersonBehind] = [person for behind in rows["persons"] for person in behind]
    if evidence is None:
        no_order, orders = _per_person(people, calendar, cutoff_s, per_order, knows_dropout_time)
    else:
        recorded_share = float(truth["recorded_order_share"].iat[0])
        no_order, orders = _per_person_observed(people, calendar, cutoff_s, per_order, recorded_share, evidence)
    if model == "clv":
        value = np.array([person.expected_order_value for person in people])
        return np.bincount(owner, weights=orders * value, minlength=len(rows))
    with np.errstate(divide="ignore"):
        none = np.exp(np.bincount(owner, weights=np.log(no_order), minlength=len(rows)))
    return none if model == "churn" else 1 - none


def _per_person(people: list[PersonBehind], calendar: _Calendar, cutoff_s: int, per_order: float,
                knows_dropout_time: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """P(no recorded completed order) and the expected number of them, per person behind a customer,
    counting only the orders this customer's accounts carry."""
    dropout_s = np.array([p.dropout_s for p in people])
    rate, before = _window_rates(people, calendar, cutoff_s, per_order)
    buying = (dropout_s > cutoff_s) & (rate.sum(axis=1) > 0)  # alive at the cutoff, and known by then
    rate, before = rate * buying[:, None], before * buying

    if knows_dropout_time:
        left = (dropout_s - cutoff_s) / _DAY_S
        alive_days = np.clip(left[:, None] - calendar.start[None, :], 0, calendar.length[None, :])
        expected = before + (rate * alive_days).sum(axis=1)
        return np.exp(-expected), expected

    # Drop-out after t is Exp(hazard): integrate the piecewise-constant rate against survival.
    hazard = np.array([p.dropout_hazard for p in people])[:, None] / 365
    start, length = calendar.start[None, :], calendar.length[None, :]
    surviving = np.exp(-hazard * start)  # P(alive at each segment's start)
    within = rate * length
    earlier = np.cumsum(within, axis=1) - within  # expected orders before each segment, if alive
    gone_in = surviving * np.exp(-earlier) * hazard / (hazard + rate) * -np.expm1(-(hazard + rate) * length)
    never_gone = np.exp(-hazard[:, 0] * (start[0, -1] + length[0, -1]) - within.sum(axis=1))
    no_order = np.exp(-before) * (gone_in.sum(axis=1) + never_gone)
    expected = before + (rate * surviving * -np.expm1(-hazard * length) / hazard).sum(axis=1)
    return np.where(buying, no_order, 1.0), np.where(buying, expected, 0.0)  # exactly, not up to rounding


def _window_rates(people: list[PersonBehind], calendar: _Calendar, cutoff_s: int,
                  per_order: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Orders per day in each segment of the window while alive (0 for someone who signs up after
    the cutoff), and the orders of day d0 drawn before t that land after it."""
    signup_s = np.array([p.signup_s for p in people], dtype=float)
    per_day = np.array([p.purchase_rate for p in people]) / 365 * per_order * (signup_s < cutoff_s)
    deal = np.array([p.is_deal_seeker for p in people])
    seasonality = np.where(deal[:, None], calendar.deal_seeker[None, :], calendar.regular[None, :])
    share = np.ones((len(people), len(calendar.start)))
    for i, person in enumerate(people):
        if len(person.account_here) == 0 or not person.account_here.all():
            share[i] = person.order_share(calendar.middle_s)
    rate = per_day[:, None] * seasonality * calendar.landing[None, :] * share  # orders per day
    return rate, rate[:, 0] * calendar.before_cutoff


def _per_person_observed(people: list[PersonBehind], calendar: _Calendar, cutoff_s: int, per_order: float,
                         recorded_share: float, evidence: Evidence) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`_per_person` for the observable oracle: each person's drop-out time tau is unknown, its
    posterior given the evidence before t is a grid of one-day cells, and the window's orders are
    averaged over it (the clairvoyant formula at each cell, no orders for a tau before t)."""
    rate, before = _window_rates(people, calendar, cutoff_s, per_order)
    knots = np.concatenate([calendar.start, [calendar.start[-1] + calendar.length[-1]]])
    expected_by = before[:, None] + np.concatenate([np.zeros((len(people), 1)),
                                                    np.cumsum(rate * calendar.length, axis=1)], axis=1)  # fmt: skip
    cutoff = cutoff_s / _DAY_S
    first = min((p.signup_s for p in people), default=cutoff_s) / _DAY_S
    intensity = _OrderIntensity.of(first, cutoff)
    no_order, expected = np.ones(len(people)), np.zeros(len(people))
    for i, person in enumerate(people):
        if rate[i].sum() == 0:
            continue  # signs up after the cutoff
        after, weight, tail = _dropout_posterior(person, evidence, cutoff, knots[-1] + TAU_GRID_BEYOND_DAYS,
                                                 intensity, recorded_share)  # fmt: skip
        alive = after > 0
        by_then = np.interp(after[alive], knots, expected_by[i])  # orders in the window before tau
        total = expected_by[i, -1]
        no_order[i] = weight[~alive].sum() + (weight[alive] * np.exp(-by_then)).sum() + tail * np.exp(-total)
        expected[i] = (weight[alive] * by_then).sum() + tail * total
    return no_order, expected


@dataclass(frozen=True)
class _OrderIntensity:
    """The cumulative order-rate multiplier m(day) from `first` on, at the local day boundaries, in
    days since 1970-01-01 UTC; linear within a day (the hour-of-day profile left out)."""

    knots: np.ndarray
    regular: np.ndarray
    deal_seeker: np.ndarray

    @classmethod
    def of(cls, first: float, last: float) -> _OrderIntensity:
        offset_days = LOCAL_OFFSET_S / _DAY_S
        days = np.arange(np.floor(first + offset_days) - 1, np.ceil(last + offset_days) + 2).astype(np.int64)
        levels = [np.concatenate([[0.0], np.cumsum(order_intensity(days[:-1], deal))]) for deal in (False, True)]
        return cls(days - offset_days, levels[0], levels[1])

    def level(self, at: np.ndarray | float, deal_seeker: bool) -> np.ndarray:
        return np.interp(at, self.knots, self.deal_seeker if deal_seeker else self.regular)


def _dropout_posterior(
    person: PersonBehind,
    evidence: Evidence,
    cutoff: float,
    beyond: float,
    intensity: _OrderIntensity,
    recorded_share: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """P(tau in each one-day cell) from the last order to `beyond` days after the cutoff (times in
    days since 1970-01-01; returned as each cell's middle minus the cutoff) and P(tau later still),
    given the person's evidence before the cutoff and the generator's law:
    - prior: tau - signup ~ Exp(mu);
    - orders: a Poisson process at lambda m(day) until tau, so none between the last one and
      min(tau, t) has probability exp(-lambda (M(min(tau, t)) - M(last)));
    - browsing: a Poisson process at rho f(u; tau) from the first web/app account on, f the fade;
    - emails: each send observed before t opened with probability q f(send; tau), seen by t
      with probability 1 - exp(-(t - send) / 0.25 days).
    Factors that do not depend on tau (older activity, the orders' own densities) are left out."""
    pid = person.person_id
    signup = person.signup_s / _DAY_S
    empty = np.zeros(0)
    orders = evidence.orders.get(pid, empty)
    last = max(signup, float(orders[orders < cutoff].max(initial=-np.inf)))
    edges = np.unique(np.concatenate([np.arange(last, cutoff, 1.0), np.arange(cutoff, cutoff + beyond, 1.0),
                                      [cutoff + beyond]]))  # fmt: skip
    low, high = edges[:-1], edges[1:]
    tau = (low + high) / 2
    hazard = person.dropout_hazard / 365
    log_weight = -hazard * (low - signup) + np.log(-np.expm1(-hazard * (high - low)))
    log_tail = -hazard * (cutoff + beyond - signup)

    order_rate = person.purchase_rate / 365 * recorded_share
    at_last = intensity.level(last, person.is_deal_seeker)
    log_weight -= order_rate * (intensity.level(np.minimum(tau, cutoff), person.is_deal_seeker) - at_last)
    log_tail -= order_rate * (intensity.level(cutoff, person.is_deal_seeker) - at_last)

    since = last - FADE_REACH_DAYS
    online = evidence.online_from.get(pid, np.inf)
    if online < cutoff:
        satisfaction, engagement = person.latent_satisfaction, person.engagement_rate
        per_day = (
            session_rate(engagement, person.purchase_rate)
            + share_rate(engagement, satisfaction)
            + referral_rate(satisfaction)
        ) / 365
        browsing = evidence.browsing.get(pid, empty)
        seen = browsing[(browsing >= max(online, since)) & (browsing < cutoff)]
        log_weight += np.log(fade(seen[None, :], tau[:, None])).sum(axis=1)
        log_weight -= per_day * _faded_exposure(online, cutoff, tau)
        log_tail -= per_day * (cutoff - online)

    sent = evidence.email_sent.get(pid, empty)
    recent = (sent >= since) & (sent < cutoff)
    if recent.any():
        sent, opened = sent[recent], evidence.email_opened[pid][recent] < cutoff  # NaN: never opened
        opens = EMAIL_OPEN_BASE + EMAIL_OPEN_RESPONSIVE * -np.expm1(-person.engagement_rate)
        shown = -np.expm1(-(cutoff - sent) / EMAIL_OPEN_DELAY_DAYS)
        faded = fade(sent[None, :], tau[:, None])
        log_weight += np.where(opened, np.log(faded), np.log1p(-opens * faded * shown)).sum(axis=1)
        log_tail += np.log1p(-opens * shown[~opened]).sum()

    top = max(float(log_weight.max(initial=-np.inf)), log_tail)
    weight, tail = np.exp(log_weight - top), float(np.exp(log_tail - top))
    total = weight.sum() + tail
    return tau - cutoff, weight / total, tail / total


def _faded_exposure(start: float, end: float, dropout: np.ndarray) -> np.ndarray:
    """The integral of f(u; tau) over u in [start, end), for each tau."""
    fading = (1 - FADE_FLOOR) * FADE_DAYS
    before = dropout <= start
    inside = ~before & (dropout <= end)
    lived = np.clip(dropout, start, end) - start
    return np.where(
        before,
        FADE_FLOOR * (end - start),
        np.where(
            inside,
            lived + fading * np.expm1(-lived / FADE_DAYS) + FADE_FLOOR * (end - np.clip(dropout, start, end)),
            (end - start) - fading * (np.exp(-(dropout - end) / FADE_DAYS) - np.exp(-(dropout - start) / FADE_DAYS)),
        ),
    )


# ---------------------------------------------------------------- comparing


def gap_closed(baseline: float, model: float, oracle: float) -> float:
    """Share of the baseline-to-oracle gap the model closes: (model - baseline) / (oracle - baseline).
    NaN when the oracle does not beat the baseline (there is no gap to close)."""
    if not oracle > baseline:
        return float("nan")
    return (model - baseline) / (oracle - baseline)


def truth_dir_for(settings: Settings) -> Path | None:
    """The generated sample's truth folder (<data_dir>/sample/truth) when there is one, else None:
    a real business has no truth, and then the oracle is skipped."""
    truth_dir = truth_folder(settings.sample_dir)
    return truth_dir if all(truth_file(truth_dir, name).is_file() for name in TRUTH_SCHEMAS) else None
