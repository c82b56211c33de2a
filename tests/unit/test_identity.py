"""The single customer view: contact normalization, transitive merging by shared email or
phone, and customer ids that depend only on who the members are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from custlens.settings import Settings
from features.lake.identity import customer_id_of, normalize_email, normalize_phone, resolve_identities
from features.lake.ingest import ingest

Rows = list[dict[str, str]]


def _ids(rows: list[tuple[str, str, str | None, str | None]], max_ids_per_contact: int = 10) -> dict[str, str]:
    """source|id -> customer_id for rows of (source, source_customer_id, email, phone)."""
    frame = pd.DataFrame(rows, columns=["source", "source_customer_id", "email", "phone"])
    emails = normalize_email(pa.array(frame["email"], type=pa.string()))
    phones = normalize_phone(pa.array(frame["phone"], type=pa.string()), "84", 9)
    frame = frame.assign(email_key=emails.to_pylist(), phone_key=phones.to_pylist())
    crosswalk = resolve_identities(frame, max_ids_per_contact).crosswalk.to_pandas()
    return dict(zip(crosswalk["source"] + "|" + crosswalk["source_customer_id"], crosswalk["customer_id"], strict=True))


def test_email_case_and_space_variants_normalize_to_one() -> None:
    emails = normalize_email(pa.array(["Lan@Example.VN", "  lan@example.vn ", "LAN@EXAMPLE.VN\t"]))
    assert set(emails.to_pylist()) == {"lan@example.vn"}


def test_phone_with_plus84_84_0084_or_0_normalizes_to_one() -> None:
    phones = normalize_phone(
        pa.array(["+84 912 345 678", "84912345678", "0084-912-345-678", "(091) 234-5678"]), "84", 9
    )
    assert set(phones.to_pylist()) == {"0912345678"}


def test_empty_or_unusable_contacts_are_null() -> None:
    assert normalize_email(pa.array(["", "   ", "n/a", None])).to_pylist() == [None] * 4
    assert normalize_phone(pa.array(["", "12345", "abc", None]), "84", 9).to_pylist() == [None] * 4


def test_email_case_and_space_variants_merge() -> None:
    ids = _ids([("crm", "1", "Lan@Example.VN", None), ("web", "a", " lan@example.vn ", None)])
    assert ids["crm|1"] == ids["web|a"]


def test_phone_country_code_variants_merge() -> None:
    ids = _ids(
        [("crm", "1", None, "+84 912 345 678"), ("pos", "2", None, "84912345678"), ("app", "3", None, "0912345678")]
    )
    assert len(set(ids.values())) == 1


def test_merge_is_transitive_through_email_then_phone() -> None:
    # given A and B share an email, B and C share a phone, A and C share nothing
    ids = _ids(
        [
            ("crm", "A", "a@x.vn", "0911111111"),
            ("web", "B", "A@X.VN", "0922222222"),
            ("pos", "C", "c@x.vn", "+84 922 222 222"),
        ]
    )
    # then all three are one customer
    assert ids["crm|A"] == ids["web|B"] == ids["pos|C"]


def test_unrelated_ids_stay_apart() -> None:
    ids = _ids([("crm", "1", "a@x.vn", "0911111111"), ("crm", "2", "b@x.vn", "0922222222"), ("web", "3", None, None)])
    assert len(set(ids.values())) == 3


def test_customer_id_is_named_after_the_smallest_member() -> None:
    ids = _ids([("web", "9", "a@x.vn", None), ("crm", "5", "a@x.vn", None)])
    assert ids["web|9"] == customer_id_of("crm|5")
    assert customer_id_of("crm|5").startswith("C") and len(customer_id_of("crm|5")) == 17


def test_customer_ids_do_not_depend_on_row_order() -> None:
    rows = [("crm", "1", "a@x.vn", None), ("web", "2", "a@x.vn", "0912345678"), ("pos", "3", None, "0912345678"),
            ("app", "4", "z@x.vn", None)]  # fmt: skip
    assert _ids(rows) == _ids(list(reversed(rows)))


def test_a_contact_shared_by_too_many_ids_links_nobody() -> None:
    # given a shop's placeholder phone on five ids, above a limit of three
    rows = [("pos", str(i), None, "0900000000") for i in range(5)]
    result = resolve_identities(
        pd.DataFrame(
            {
                "source": [r[0] for r in rows],
                "source_customer_id": [r[1] for r in rows],
                "email_key": [None] * 5,
                "phone_key": [r[3] for r in rows],
            }
        ),
        max_ids_per_contact=3,
    )
    assert result.customers == 5
    assert result.shared_contacts_ignored == 1


def test_ingest_merges_identities_and_keeps_ids_across_runs(
    exports: Callable[..., Path], settings: Settings, tables: dict[str, Rows]
) -> None:
    # given a web account sharing the CRM customer's phone in another notation
    tables["customers"].append(
        {"source": "app", "source_customer_id": "x-7", "signup_at": "2024-04-01 10:00:00", "phone": "84987654321"}
    )
    tables["orders"].append({**tables["orders"][2], "order_id": "O5", "source": "app", "source_customer_id": "x-7"})
    source = exports(tables)
    # when ingested twice
    report = ingest(settings, source)
    first = pd.read_parquet(settings.lake_dir / "crosswalk.parquet")
    ingest(settings, source)
    second = pd.read_parquet(settings.lake_dir / "crosswalk.parquet")
    # then app|x-7 is the same customer as crm|2, and the ids do not change
    pd.testing.assert_frame_equal(first, second)
    owner = first.set_index(first["source"] + "|" + first["source_customer_id"])["customer_id"]
    assert owner["app|x-7"] == owner["crm|2"] == customer_id_of("app|x-7")
    orders = pd.read_parquet(settings.lake_dir / "orders.parquet").set_index("order_id")
    assert orders.loc["O5", "customer_id"] == orders.loc["O3", "customer_id"]
    customers = pd.read_parquet(settings.lake_dir / "customers.parquet").set_index("customer_id")
    assert customers.loc[owner["crm|2"], "sources"] == "app,crm"
    assert customers.loc[owner["crm|2"], "n_source_ids"] == 2
    assert (report.identity.source_ids, report.identity.customers) == (5, 3)
