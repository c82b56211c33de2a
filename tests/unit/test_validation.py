"""Row checks of one chunk, called directly on tiny tables: every documented timestamp format and
how each fails, the business's zone (and the refusal to guess it), amounts as real exports write
them, refunds, guests, case-insensitive vocabularies and hashed identity keys."""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest

from custlens.errors import CustlensError
from features.lake.contracts import CONTRACTS
from features.lake.pii import Salt
from features.lake.readers import ROW_NUMBER
from features.lake.validation import (
    DETAIL,
    IDENTITY,
    REASON,
    TIMESTAMP_FORMATS,
    TYPED,
    ChunkContext,
    ChunkStats,
    identity_field,
    staged_schema,
    validate_chunk,
)

SALT = Salt(b"test-salt", "settings")
HO_CHI_MINH = "Asia/Ho_Chi_Minh"  # UTC+7 all year
NEW_YORK = "America/New_York"
DOLLAR_MARKS = ("$", "USD")


def _context(**changes: Any) -> ChunkContext:
    base = ChunkContext(timezone=HO_CHI_MINH, salt=SALT, phone_country_code="84", phone_min_digits=9)
    return replace(base, **changes)


def _validate(table: str, context: ChunkContext | None = None, **columns: list[str]) -> tuple[pa.Table, ChunkStats]:
    n = len(next(iter(columns.values())))
    rows = pa.table(
        {
            ROW_NUMBER: pa.array(range(1, n + 1), type=pa.int64()),
            **{name: pa.array(values, type=pa.string()) for name, values in columns.items()},
        }
    )
    return validate_chunk(rows, CONTRACTS[table], context or _context())


def _typed(staged: pa.Table, column: str) -> list[Any]:
    return staged.column(TYPED + column).to_pylist()


def _reasons(staged: pa.Table) -> list[str | None]:
    return staged.column(REASON).to_pylist()


def _details(staged: pa.Table) -> list[str | None]:
    return staged.column(DETAIL).to_pylist()


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# ---------------------------------------------------------------- timestamps

# (value, date_order, the format that reads it, the instant; naive values are Ho Chi Minh wall time, UTC+7)
ACCEPTED_TIMESTAMPS = [
    ("2024-03-01T10:00:00Z", None, "iso_offset", _utc(2024, 3, 1, 10)),
    ("2024-03-01 10:00:00.25+07:00", None, "iso_offset", _utc(2024, 3, 1, 3, 0, 0, 250_000)),
    ("2024-03-01T10:00-0530", None, "iso_offset", _utc(2024, 3, 1, 15, 30)),
    ("2024-03-01 10:00:00 +07", None, "iso_offset", _utc(2024, 3, 1, 3)),
    ("2024-03-01 10:00:00", None, "iso_local", _utc(2024, 3, 1, 3)),
    ("2024-03-01T10:00:00.123456", None, "iso_local", _utc(2024, 3, 1, 3, 0, 0, 123_456)),
    ("2024-03-01 10:56", None, "iso_local", _utc(2024, 3, 1, 3, 56)),
    ("2024-03-01", None, "date", _utc(2024, 2, 29, 17)),
    ("20240301", None, "yyyymmdd", _utc(2024, 2, 29, 17)),
    ("2024/03/01 10:00", None, "ymd_slash", _utc(2024, 3, 1, 3)),
    ("2024/3/1", None, "ymd_slash", _utc(2024, 2, 29, 17)),
    ("01/03/2024 10:00", "day_first", "dmy", _utc(2024, 3, 1, 3)),
    ("1.3.2024", "day_first", "dmy", _utc(2024, 2, 29, 17)),
    ("03-01-2024 10:00:30", "month_first", "mdy", _utc(2024, 3, 1, 3, 0, 30)),
    ("1709287200", None, "epoch_s", _utc(2024, 3, 1, 10)),
    ("1709287200500", None, "epoch_ms", _utc(2024, 3, 1, 10, 0, 0, 500_000)),
]


@pytest.mark.parametrize(("value", "date_order", "name", "instant"), ACCEPTED_TIMESTAMPS, ids=lambda v: str(v))
def test_each_documented_timestamp_format_reads_its_instant(
    value: str, date_order: Any, name: str, instant: datetime
) -> None:
    # given one value written in a documented format
    # when it is checked
    staged, stats = _validate("orders", _context(date_order=date_order), ordered_at=[value])
    # then it is that instant, the row is good, and the report says which format read it
    assert _typed(staged, "ordered_at") == [instant]
    assert _reasons(staged) == [None]
    assert stats.timestamp_formats == {"ordered_at": {name: 1}}
    assert name in TIMESTAMP_FORMATS


# (value, date_order, the format it resembles): each fails as unparseable_timestamp
REJECTED_TIMESTAMPS = [
    ("2024-02-30T10:00:00Z", None, "iso_offset"),
    ("2024-03-01T10:00:00+25:00", None, "iso_offset"),
    ("2024-03-01 24:00:00", None, "iso_local"),
    ("2024-03-01 10:61", None, "iso_local"),
    ("2024-13-01", None, "date"),
    ("20241301", None, "yyyymmdd"),
    ("2023/02/29", None, "ymd_slash"),
    ("31/02/2024", "day_first", "dmy"),
    ("13/01/2024", "month_first", "mdy"),
    ("17092872", None, "epoch_s"),  # 8 digits: not epoch seconds, and not a real YYYYMMDD either
    ("17092872000", None, "epoch_ms"),  # 11 digits: neither seconds nor milliseconds
    ("yesterday", None, "none"),
    ("2024-03-01T10:00:00 CET", None, "none"),
]


@pytest.mark.parametrize(("value", "date_order", "resembles"), REJECTED_TIMESTAMPS, ids=lambda v: str(v))
def test_a_value_no_format_reads_is_unparseable_timestamp(value: str, date_order: Any, resembles: str) -> None:
    staged, stats = _validate("orders", _context(date_order=date_order), ordered_at=[value, "2024-03-01 10:00:00"])
    assert _reasons(staged) == ["unparseable_timestamp", None]
    assert _details(staged)[0] == f"ordered_at: unparseable_timestamp ({value})"
    assert _typed(staged, "ordered_at")[0] is None
    assert stats.timestamp_formats == {"ordered_at": {"iso_local": 1}}  # a failed value is counted nowhere


def test_every_spelling_of_a_format_in_one_column_is_read() -> None:
    values = ["2024-03-01 10:00:00", "2024-03-01T10:00:00.5", "2024-03-01 10:00", "2024-03-01T10:00:00"]
    staged, stats = _validate("orders", ordered_at=values)
    assert _typed(staged, "ordered_at") == [
        _utc(2024, 3, 1, 3),
        _utc(2024, 3, 1, 3, 0, 0, 500_000),
        _utc(2024, 3, 1, 3),
        _utc(2024, 3, 1, 3),
    ]
    assert stats.timestamp_formats == {"ordered_at": {"iso_local": 4}}


def test_slashed_dates_without_date_order_are_refused_with_what_to_set() -> None:
    # given 01/02/2024, which is 1 February or 2 January, and no date_order
    staged, stats = _validate("orders", ordered_at=["01/02/2024", "01/02/2024 10:00"])
    # then it is not guessed: unparseable, and the detail says which setting decides
    assert _reasons(staged) == ["unparseable_timestamp"] * 2
    hint = "day or month first? set ingest.tables.orders.date_order"
    assert _details(staged)[0] == f"ordered_at: unparseable_timestamp (01/02/2024): {hint}"
    assert stats.timestamp_formats == {}


def test_date_order_decides_which_number_is_the_day() -> None:
    day_first, _ = _validate("orders", _context(date_order="day_first"), ordered_at=["01/02/2024"])
    month_first, _ = _validate("orders", _context(date_order="month_first"), ordered_at=["01/02/2024"])
    assert _typed(day_first, "ordered_at") == [_utc(2024, 1, 31, 17)]  # 1 February, local midnight
    assert _typed(month_first, "ordered_at") == [_utc(2024, 1, 1, 17)]  # 2 January


def test_timestamp_format_reads_local_wall_time_and_nothing_else() -> None:
    context = _context(timestamp_format="%d.%m.%Y %H.%M")
    staged, stats = _validate("orders", context, ordered_at=["01.03.2024 10.00", "2024-03-01 10:00:00"])
    assert _typed(staged, "ordered_at") == [_utc(2024, 3, 1, 3), None]  # the table's format only
    assert _reasons(staged) == [None, "unparseable_timestamp"]
    assert stats.timestamp_formats == {"ordered_at": {"timestamp_format": 1}}


def test_timestamp_format_with_an_offset_reads_instants_without_a_zone() -> None:
    context = _context(timezone=None, timestamp_format="%Y-%m-%d %H:%M %z")
    staged, _ = _validate("orders", context, ordered_at=["2024-03-01 10:00 +0200", "2024-03-01 10:00 -0500"])
    assert _typed(staged, "ordered_at") == [_utc(2024, 3, 1, 8), _utc(2024, 3, 1, 15)]


@pytest.mark.parametrize(
    ("zone", "midnight"), [(NEW_YORK, _utc(2024, 1, 15, 5)), (HO_CHI_MINH, _utc(2024, 1, 14, 17))], ids=str
)
def test_a_date_only_timestamp_is_local_midnight_of_the_business(zone: str, midnight: datetime) -> None:
    staged, _ = _validate("orders", _context(timezone=zone), ordered_at=["2024-01-15", "20240115"])
    assert _typed(staged, "ordered_at") == [midnight, midnight]


def test_a_time_in_the_spring_dst_gap_moves_forward_to_the_first_real_time() -> None:
    # 02:30 on 10 March 2024 does not exist in New York: clocks jump from 02:00 EST to 03:00 EDT
    staged, _ = _validate("orders", _context(timezone=NEW_YORK), ordered_at=["2024-03-10 02:30:00"])
    assert _typed(staged, "ordered_at") == [_utc(2024, 3, 10, 7)]  # 03:00 EDT


def test_a_repeated_autumn_hour_is_its_first_occurrence() -> None:
    # 01:30 on 3 November 2024 happens twice in New York: first in EDT (UTC-4), then in EST (UTC-5)
    staged, _ = _validate("orders", _context(timezone=NEW_YORK), ordered_at=["2024-11-03 01:30:00"])
    assert _typed(staged, "ordered_at") == [_utc(2024, 11, 3, 5, 30)]


@pytest.mark.parametrize("value", ["2024-03-01 10:00:00", "2024-03-01", "20240301"])
def test_a_naive_timestamp_without_a_business_timezone_is_refused_naming_the_column(value: str) -> None:
    context = _context(timezone=None, table_label="orders (orders.csv)")
    with pytest.raises(CustlensError) as refused:
        _validate("orders", context, ordered_at=["2024-03-01T10:00:00Z", value])
    message = str(refused.value)
    assert "orders (orders.csv)" in message
    assert "ordered_at" in message
    assert repr(value) in message
    assert "business.timezone" in message


def test_timestamps_with_an_offset_or_epochs_need_no_business_timezone() -> None:
    staged, stats = _validate(
        "orders", _context(timezone=None), ordered_at=["2024-03-01T10:00:00Z", "2024-03-01 17:00+07:00", "1709287200"]
    )
    assert _typed(staged, "ordered_at") == [_utc(2024, 3, 1, 10)] * 3
    assert stats.timestamp_formats == {"ordered_at": {"iso_offset": 2, "epoch_s": 1}}


def test_format_counts_per_column_add_up_across_chunks() -> None:
    _, first = _validate(
        "tickets", opened_at=["2024-03-01 10:00:00", "2024-03-01", "1709287200"], resolved_at=["20240302", "", ""]
    )
    _, second = _validate("tickets", opened_at=["2024-03-01 11:00:00"], resolved_at=["2024-03-02"])
    assert first.timestamp_formats == {
        "opened_at": {"iso_local": 1, "date": 1, "epoch_s": 1},
        "resolved_at": {"yyyymmdd": 1},
    }
    assert first.merge(second).timestamp_formats == {
        "opened_at": {"iso_local": 2, "date": 1, "epoch_s": 1},
        "resolved_at": {"yyyymmdd": 1, "date": 1},
    }
    assert first.timestamp_formats["opened_at"]["iso_local"] == 1  # merge makes a new object


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    "value", ["2024-02-01", "20240201", "2024/02/01", "2024/2/1", "2024-02-01T00:00:00", "2024-02-01 00:00:00Z"]
)
def test_a_date_column_reads_dates_and_midnight_datetimes_without_a_zone(value: str) -> None:
    staged, _ = _validate("marketing_spend", _context(timezone=None), date=[value])
    assert _typed(staged, "date") == [date(2024, 2, 1)]
    assert _reasons(staged) == [None]


def test_a_date_column_follows_date_order_and_refuses_slashes_without_it() -> None:
    day_first, stats = _validate("marketing_spend", _context(date_order="day_first"), date=["01/02/2024"])
    month_first, _ = _validate("marketing_spend", _context(date_order="month_first"), date=["01/02/2024"])
    refused, _ = _validate("marketing_spend", date=["01/02/2024"])
    assert _typed(day_first, "date") == [date(2024, 2, 1)]
    assert stats.timestamp_formats == {"date": {"dmy": 1}}
    assert _typed(month_first, "date") == [date(2024, 1, 2)]
    assert _reasons(refused) == ["unparseable_date"]
    assert "set ingest.tables.marketing_spend.date_order" in str(_details(refused)[0])


def test_a_date_column_with_a_time_of_day_or_an_impossible_day_is_unparseable_date() -> None:
    staged, _ = _validate("marketing_spend", date=["2024-02-01 10:00:00", "2024-02-30", "2024-02-01"])
    assert _reasons(staged) == ["unparseable_date", "unparseable_date", None]
    assert (
        _details(staged)[0]
        == "date: unparseable_date (2024-02-01 10:00:00): a date column holds days, not times of day"
    )


def test_a_date_column_reads_the_tables_timestamp_format() -> None:
    staged, stats = _validate("marketing_spend", _context(timestamp_format="%d.%m.%Y"), date=["01.02.2024", "20240203"])
    assert _typed(staged, "date") == [date(2024, 2, 1), date(2024, 2, 3)]
    assert stats.timestamp_formats == {"date": {"timestamp_format": 1, "yyyymmdd": 1}}


# ---------------------------------------------------------------- amounts and numbers

# (written, csv settings and currency marks, the validated text)
ACCEPTED_AMOUNTS = [
    ("145.79999999999998", {}, "145.79999999999998"),  # a plain pandas sum: rounded by ingest, not here
    ("12.3456", {}, "12.3456"),
    ("+12.5", {}, "12.5"),
    (".5", {}, "0.5"),
    ("12.", {}, "12"),
    ("1,234.50", {}, "1234.50"),
    ("1,234,567", {}, "1234567"),
    ("999999999999999.99", {}, "999999999999999.99"),
    ("$12.00", {"currency_marks": DOLLAR_MARKS}, "12.00"),
    ("$ 1,234.5", {"currency_marks": DOLLAR_MARKS}, "1234.5"),
    ("12.00 USD", {"currency_marks": DOLLAR_MARKS}, "12.00"),
    ("12.00usd", {"currency_marks": DOLLAR_MARKS}, "12.00"),
    ("USD 12", {"currency_marks": DOLLAR_MARKS}, "12"),
    ("1.234,50", {"decimal": ","}, "1234.50"),
    ("1 234,50", {"decimal": ","}, "1234.50"),
    ("1\u00a0234,50\u00a0€", {"decimal": ",", "currency_marks": ("€", "EUR")}, "1234.50"),
    ("12,5", {"decimal": ","}, "12.5"),
    ("1.234.567,5", {"decimal": ",", "thousands": "."}, "1234567.5"),
    ("1 234,50", {"decimal": ",", "thousands": " "}, "1234.50"),
    ("1 234.50", {"thousands": " "}, "1234.50"),
]


@pytest.mark.parametrize(("written", "settings", "text"), ACCEPTED_AMOUNTS, ids=lambda v: str(v))
def test_amounts_are_read_as_exports_write_them_and_staged_as_plain_text(
    written: str, settings: dict[str, Any], text: str
) -> None:
    staged, _ = _validate("orders", _context(**settings), net_amount=[written], status=["completed"])
    assert _typed(staged, "net_amount") == [text]
    assert _reasons(staged) == [None]


# (written, csv settings, reason code)
REJECTED_AMOUNTS = [
    ("NaN", {}, "unparseable_number"),
    ("inf", {}, "unparseable_number"),
    ("-Infinity", {}, "unparseable_number"),
    ("1e400", {}, "unparseable_number"),
    ("1e5", {}, "unparseable_number"),  # an amount is written out, not in scientific notation
    ("twelve", {}, "unparseable_number"),
    ("12,50", {}, "unparseable_number"),  # a decimal comma without csv.decimal: ','
    ("1,23.4", {}, "unparseable_number"),  # not thousands grouping
    ("12.5", {"decimal": ","}, "unparseable_number"),
    ("$12.00", {}, "unparseable_number"),  # a mark not of this business's currency
    ("12 $ 5", {"currency_marks": DOLLAR_MARKS}, "unparseable_number"),
    ("1000000000000000", {}, "amount_out_of_range"),
    ("-1,000,000,000,000,000.00", {}, "amount_out_of_range"),
    ("00001000000000000000.5", {}, "amount_out_of_range"),
]


@pytest.mark.parametrize(("written", "settings", "code"), REJECTED_AMOUNTS, ids=lambda v: str(v))
def test_amounts_that_are_no_real_money_are_quarantined_with_their_reason(
    written: str, settings: dict[str, Any], code: str
) -> None:
    staged, _ = _validate("orders", _context(**settings), net_amount=[written, "1"], status=["returned", "completed"])
    assert _reasons(staged) == [code, None]
    assert _details(staged)[0] == f"net_amount: {code} ({written})"
    assert _typed(staged, "net_amount") == [None, "1"]


def test_reformatted_amounts_are_counted_per_column() -> None:
    _, stats = _validate(
        "orders",
        _context(currency_marks=DOLLAR_MARKS),
        net_amount=["$1,234.50", "12.00", "+3", "oops"],
        gross_amount=["1,300", "1300", "", ""],
    )
    assert stats.reformatted_numbers == {"net_amount": 1, "gross_amount": 1}
    assert ChunkStats(reformatted_numbers={"net_amount": 2}).merge(stats).reformatted_numbers == {
        "net_amount": 3,
        "gross_amount": 1,
    }


def test_integers_and_numbers_accept_grouping_and_reject_the_rest() -> None:
    orders, _ = _validate("orders", items=["1,234", "3.0", "3.5", "-1", "1e3"])
    assert _typed(orders, "items") == [1234, 3, None, -1, None]
    assert _reasons(orders) == [None, None, "unparseable_number", "negative_amount", "unparseable_number"]
    events, _ = _validate("engagement_events", duration_s=["1,234.5", "1e3", "1e400", "nan"])
    assert _typed(events, "duration_s") == [1234.5, 1000.0, None, None]
    assert _reasons(events) == [None, None, "unparseable_number", "unparseable_number"]


def test_grouped_amounts_in_a_decimal_comma_file_need_not_name_their_separator() -> None:
    staged, stats = _validate("marketing_spend", _context(decimal=","), spend=["1.500.000", "900 000,00", "12,5"])
    assert _typed(staged, "spend") == ["1500000", "900000.00", "12.5"]
    assert stats.reformatted_numbers == {"spend": 3}


def test_the_same_mark_for_decimals_and_thousands_is_refused() -> None:
    with pytest.raises(CustlensError, match=r"csv\.decimal and csv\.thousands"):
        _validate("orders", _context(decimal=",", thousands=","), net_amount=["1"])


# ---------------------------------------------------------------- refunds, vocabularies, guests, currency


def test_a_negative_net_or_gross_amount_is_a_refund_only_on_a_returned_order() -> None:
    staged, _ = _validate(
        "orders",
        _context(currency_marks=DOLLAR_MARKS),
        status=["returned", "Returned", "completed", "cancelled"],
        net_amount=["-$5", "-12.50", "-12.50", "-1"],
        gross_amount=["-5", "-12.50", "12.50", "1"],
        discount_amount=["0", "-1", "0", "0"],
    )
    assert _typed(staged, "net_amount") == ["-5", "-12.50", "-12.50", "-1"]
    assert _reasons(staged) == [None, "negative_amount", "negative_amount", "negative_amount"]
    details = _details(staged)
    assert details[1] == "discount_amount: negative_amount (-1)"  # a discount is never negative
    hint = "only a refund (status returned) may be negative"
    assert details[2] == f"net_amount: negative_amount (-12.50): {hint}"
    assert details[3] == f"net_amount: negative_amount (-1): {hint}"


def test_a_negative_amount_without_a_status_column_is_not_a_refund() -> None:
    staged, _ = _validate("orders", net_amount=["-5"])
    assert _reasons(staged) == ["negative_amount"]


def test_vocabularies_are_matched_ignoring_case_and_spaces_and_stored_lowercase() -> None:
    orders, _ = _validate("orders", status=["Completed", " RETURNED ", "cancelled", "Refunded"])
    assert _typed(orders, "status") == ["completed", "returned", "cancelled", "refunded"]
    assert _reasons(orders) == [None, None, None, "unknown_status"]
    events, _ = _validate("engagement_events", event_type=["Page_View", "EMAIL_OPEN"])
    assert _typed(events, "event_type") == ["page_view", "email_open"]
    assert _reasons(events) == [None, None]
    surveys, _ = _validate("surveys", survey_type=["NPS", "Csat"], score=["9", "4"])
    assert _typed(surveys, "survey_type") == ["nps", "csat"]
    assert _reasons(surveys) == [None, None]


def test_an_order_without_a_customer_is_a_guest_not_a_missing_value() -> None:
    orders, _ = _validate("orders", source_customer_id=["", "c-1"])
    assert _reasons(orders) == [None, None]
    assert _typed(orders, "source_customer_id") == [None, "c-1"]
    tickets, _ = _validate("tickets", source_customer_id=["", "c-1"])
    assert _reasons(tickets) == ["missing_value", None]


def test_the_currency_column_is_trimmed_and_upper_case() -> None:
    staged, _ = _validate("orders", currency=[" usd ", "Vnd", ""])
    assert _typed(staged, "currency") == ["USD", "VND", None]


# ---------------------------------------------------------------- identity keys


def test_declared_identity_keys_are_staged_hashed_and_never_raw() -> None:
    # given a customers chunk with a loyalty card number, which may be personal
    rows = pa.table(
        {
            ROW_NUMBER: pa.array([1, 2, 3], type=pa.int64()),
            "source_customer_id": pa.array(["a", "b", "c"]),
            IDENTITY + "loyalty_card": pa.array([" LC-7781 ", "", "lc-7781"]),
        }
    )
    context = _context(identity_columns=("loyalty_card",))
    # when it is checked
    staged, _ = validate_chunk(rows, CONTRACTS["customers"], context)
    # then the staged rows carry the HMAC of the trimmed value, case kept, empty as null
    expected = hmac.digest(SALT.key, b"LC-7781", "sha256").hex()
    hashes = staged.column(identity_field("loyalty_card")).to_pylist()
    assert hashes[0] == expected
    assert hashes[1] is None
    assert hashes[2] not in (None, expected)
    # and the raw value is nowhere in them
    assert IDENTITY + "loyalty_card" not in staged.column_names
    for column in staged.columns:
        if pa.types.is_string(column.type):
            assert not any(value and "7781" in value for value in column.to_pylist())
    assert staged.schema == staged_schema(CONTRACTS["customers"], ("source_customer_id",), ("loyalty_card",))
    assert identity_field("loyalty_card") == "v__identity__loyalty_card"
