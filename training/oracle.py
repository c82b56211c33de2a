"""The oracle: churn, repurchase and CLV predicted from the simulated customers' latent truth
(`features.generate`'s truth folder), the ceiling a model's test metric is measured against.
Real businesses have no truth: the oracle exists for the generated sample only.

What the oracle knows at a cutoff t, per person behind a customer: the purchase rate lambda, the
drop-out hazard mu, whether they are a deal seeker (their seasonality), the expected order value,
whether they are still alive at t, and when each of their accounts opens (which account carries
their orders: an identity fact, not a buying one). Plus the generator's calendar m(day), its
hour-of-day profile, the completed share of orders and the share of order rows ingest keeps.

What it does not know: the future drop-out time and the random timing, status and amount of
future orders. The generator draws drop-out as tau = signup + Exp(1) / mu with mu constant in
time (satisfaction and support slowness enter mu once, at signup), so given alive at t the
remaining life is exactly Exp(mu): the oracle's probabilities are the generator's own law, the
best prediction from the latent parameters. It is not an absolute bound: engagement fades in the
25 days before drop-out, so the observed data carry a little of the future drop-out time that
the oracle ignores. `knows_dropout_time=True` gives the clairvoyant variant that uses tau itself.
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
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.generate import CRM, LOCAL_OFFSET_S, ORDER_HOURS, ORDER_SOURCES, POS, SOURCES, order_intensity

OracleModel = Literal["churn", "repurchase", "clv"]

# features.generate._simulate_orders draws these inline (status 93/4/3%; the account a person signed
# up with carries orders three times as often as each other order account they have opened).
COMPLETED_SHARE = 0.93
ENTRY_ACCOUNT_WEIGHT = 3.0
OTHER_ACCOUNT_WEIGHT = 1.0
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
    persons = pd.read_parquet(truth_dir / "persons.parquet")
    identities = pd.read_parquet(truth_dir / "identities.parquet")
    crosswalk = pd.read_parquet(lake_dir / "crosswalk.parquet", columns=[*_KEY, "customer_id"])
    _check_coverage(crosswalk, identities, truth_dir, lake_dir)

    accounts = identities.merge(crosswalk, on=_KEY, how="left")
    signup_s = _epoch_seconds(persons["signup_at"])
    order_accounts = _order_accounts(truth_dir.parent, accounts, persons["person_id"].to_numpy(), signup_s)
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


def _check_coverage(crosswalk: pd.DataFrame, identities: pd.DataFrame, truth_dir: Path, lake_dir: Path) -> None:
    known = crosswalk.merge(identities[_KEY], on=_KEY, how="inner")
    coverage = len(known) / len(crosswalk) if len(crosswalk) else 0.0
    if coverage < MIN_TRUTH_COVERAGE:
        raise CustlensError(
            f"the truth in {truth_dir} knows {coverage:.1%} of the source ids in {lake_dir / 'crosswalk.parquet'}: "
            "the lake was ingested from other data; the oracle only describes the generated sample "
            "(ingest it with `custlens ingest` from the sample folder, or skip the oracle)"
        )


def _epoch_seconds(values: pd.Series, missing: float = np.nan) -> np.ndarray:
    stamps = pd.to_datetime(values, utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    return np.where(np.isnan(seconds), missing, seconds)


def _order_accounts(sample_dir: Path, accounts: pd.DataFrame, person_ids: np.ndarray,
                    signup_s: np.ndarray) -> pd.DataFrame:  # fmt: skip
    """Every pos/web/app account with person_id, customer_id (may be missing), opened_s and weight.

    Opening times come from the sample's customers export (the generator writes the truth inside
    it): the account a person signed up with opens at their signup instant and weighs most."""
    order_sources = [SOURCES[code] for code in ORDER_SOURCES]
    mine = accounts[accounts["source"].isin(order_sources)]
    opened = _account_opening(sample_dir)
    mine = mine.merge(opened, on=_KEY, how="left")
    person_signup = pd.Series(signup_s, index=person_ids)
    entry = mine["opened_s"].to_numpy() == person_signup.loc[mine["person_id"].to_numpy()].to_numpy()
    weight = np.where(entry, ENTRY_ACCOUNT_WEIGHT, OTHER_ACCOUNT_WEIGHT)
    # an account whose opening the export lost (a row made bad on purpose) never carried an order
    unknown = mine["opened_s"].isna().to_numpy()
    return mine.assign(
        opened_s=mine["opened_s"].fillna(np.iinfo(np.int64).max).astype(np.int64),
        weight=np.where(unknown, 0.0, weight),
    )


def _account_opening(sample_dir: Path) -> pd.DataFrame:
    """source, source_customer_id, opened_s (UTC epoch seconds) from the customers export, whose
    timestamps are written each system's way (`features.generate._format_timestamps`): crm and pos
    in local time, the others in UTC; the first 19 characters are the date and time either way."""
    columns = [*_KEY, "signup_at"]
    csv_path, parquet_path = sample_dir / "customers.csv", sample_dir / "customers.parquet"
    if csv_path.exists():
        convert = pv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()), include_columns=columns)
        table = pv.read_csv(csv_path, convert_options=convert)
    elif parquet_path.exists():
        table = pq.read_table(parquet_path, columns=columns)
    else:
        raise CustlensError(
            f"no customers export next to the truth in {sample_dir}; the oracle needs the generated sample "
            "as `custlens generate` writes it"
        )
    frame = table.to_pandas().drop_duplicates(_KEY, keep="first")  # a conflicting copy comes later
    text = frame["signup_at"].str.slice(0, 19).str.replace("T", " ", regex=False)
    naive = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    seconds = (naive - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    local = frame["source"].isin([SOURCES[CRM], SOURCES[POS]]).to_numpy()
    frame["opened_s"] = seconds - np.where(local, LOCAL_OFFSET_S, 0)
    return frame[[*_KEY, "opened_s"]]


def _recorded_order_share(truth_dir: Path, lake_dir: Path) -> float:
    """Share of generated order rows the lake kept: rows made bad in place were quarantined, while
    conflicting and exact copies were extra rows (the original stayed)."""
    dirty = pd.read_parquet(truth_dir / "dirty_rows.parquet", columns=["table", "kind"])
    kinds = dirty.loc[dirty["table"] == "orders", "kind"]
    lost = int((~kinds.isin(["duplicate_id_conflict", "exact_duplicate"])).sum())
    kept = pq.ParquetFile(lake_dir / "orders.parquet").metadata.num_rows
    return kept / (kept + lost) if kept + lost else 1.0


def _history_end(lake_dir: Path) -> pd.Timestamp:
    ordered_at = pq.read_table(lake_dir / "orders.parquet", columns=["ordered_at"]).column("ordered_at")
    last = pd.Timestamp(ordered_at.to_pandas().max())
    if pd.isna(last):
        raise CustlensError(f"{lake_dir / 'orders.parquet'} holds no orders; the oracle needs the order history")
    offset = pd.Timedelta(seconds=LOCAL_OFFSET_S)
    last_local_day = (last.tz_convert("UTC").tz_localize(None) + offset).normalize()
    return (last_local_day + pd.Timedelta(days=1) - offset).tz_localize("UTC")


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
) -> np.ndarray:
    """The oracle's prediction for each customer at `cutoff` over [cutoff, cutoff + window_days):
    churn P(no completed order), repurchase P(a completed order), clv expected completed net revenue.

    People who dropped out before the cutoff, or sign up after it, add no orders. With
    `knows_dropout_time` the oracle also knows when the others drop out (an upper bound)."""
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
    no_order, orders = _per_person(people, calendar, cutoff_s, per_order, knows_dropout_time)
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
    signup_s = np.array([p.signup_s for p in people], dtype=float)
    dropout_s = np.array([p.dropout_s for p in people])
    buying = (dropout_s > cutoff_s) & (signup_s < cutoff_s)  # alive at the cutoff, and known by then
    per_day = np.array([p.purchase_rate for p in people]) / 365 * per_order
    deal = np.array([p.is_deal_seeker for p in people])
    seasonality = np.where(deal[:, None], calendar.deal_seeker[None, :], calendar.regular[None, :])
    share = np.ones((len(people), len(calendar.start)))
    for i, person in enumerate(people):
        if len(person.account_here) == 0 or not person.account_here.all():
            share[i] = person.order_share(calendar.middle_s)
    rate = per_day[:, None] * seasonality * calendar.landing[None, :] * share * buying[:, None]  # orders per day
    before = rate[:, 0] * calendar.before_cutoff  # day d0's orders drawn before t that land after it

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
    truth_dir = settings.sample_dir / "truth"
    needed = ("persons.parquet", "identities.parquet", "dirty_rows.parquet")
    return truth_dir if all((truth_dir / name).is_file() for name in needed) else None
