"""The naive path the ingest benchmark compares identity resolution with: a pure-Python
union-find over (source id, email, phone), with the same placeholder rule."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa


def naive_resolve(contacts: pa.Table, max_ids_per_contact: int) -> list[int]:
    """A component root per row; rows with equal roots are one customer."""
    rows = contacts.to_pylist()
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in ("email_key", "phone_key"):
        holders = Counter(row[column] for row in rows if row[column] is not None)
        first_holder: dict[str, int] = {}
        for i, row in enumerate(rows):
            key = row[column]
            if key is None or holders[key] > max_ids_per_contact:
                continue
            if key in first_holder:
                a, b = find(i), find(first_holder[key])
                if a != b:
                    parent[a] = b
            else:
                first_holder[key] = i
    return [find(i) for i in range(len(rows))]


def compare_identity(customers_csv: str) -> dict[str, float | int | bool]:
    """Time ours and the naive path on the same normalized contacts of a customers export."""
    import time

    import pyarrow.compute as pc
    import pyarrow.csv as pv

    from custlens.settings import load_settings
    from features.lake.identity import normalize_email, normalize_phone, resolve_identities

    settings = load_settings().ingest
    columns = ["source", "source_customer_id", "email", "phone"]
    raw = pv.read_csv(
        customers_csv,
        convert_options=pv.ConvertOptions(include_columns=columns, column_types=dict.fromkeys(columns, pa.string())),
    )
    raw = raw.filter(pc.and_(pc.is_valid(raw["source"]), pc.is_valid(raw["source_customer_id"])))
    raw = raw.group_by(["source", "source_customer_id"], use_threads=False).aggregate(
        [("email", "first"), ("phone", "first")]
    )
    contacts = pa.table(
        {
            "source": raw["source"],
            "source_customer_id": raw["source_customer_id"],
            "email_key": normalize_email(raw["email_first"]),
            "phone_key": normalize_phone(raw["phone_first"], settings.phone_country_code, settings.phone_min_digits),
        }
    )
    started = time.perf_counter()
    ours = resolve_identities(contacts, settings.max_ids_per_contact)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    naive = naive_resolve(contacts, settings.max_ids_per_contact)
    naive_s = time.perf_counter() - started
    return {
        "ours_s": ours_s,
        "naive_s": naive_s,
        "same_partition": ours.customers == len(set(naive)),
        "source_ids": ours.source_ids,
    }
