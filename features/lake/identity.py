"""The single customer view: normalize contact data, and link source ids that share an email, a
phone or a declared person key (transitively) into one person with a stable `customer_id`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def normalize_email(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Trimmed and lowercased; empty, or without an '@', becomes null (it reaches nobody)."""
    trimmed = pc.utf8_lower(pc.utf8_trim_whitespace(_as_array(values)))
    usable = pc.and_(pc.greater(pc.utf8_length(trimmed), 0), pc.match_substring(trimmed, "@"))
    return pc.if_else(usable, trimmed, pa.scalar(None, pa.string()))


def normalize_phone(values: pa.Array | pa.ChunkedArray, country_code: str, min_digits: int) -> pa.Array:
    """Digits only, the country code (written `+84`, `84` or `0084`) replaced by a leading 0.

    So "+84 912 345 678", "84912345678" and "0912-345-678" are all "0912345678". Fewer than
    `min_digits` digits left means no usable phone: null.
    """
    digits = pc.replace_substring_regex(_as_array(values), r"\D", "")
    with_code = f"^(00)?{country_code}"
    # a national number never starts with the country code digits after its trunk 0, so a
    # number that starts with them (and is long enough to carry a national number) has the code
    long_enough = pc.greater_equal(pc.utf8_length(digits), len(country_code) + min_digits - 1)
    national = pc.if_else(
        pc.and_(pc.match_substring_regex(digits, with_code), long_enough),
        pc.replace_substring_regex(digits, with_code, "0", max_replacements=1),
        digits,
    )
    usable = pc.greater_equal(pc.utf8_length(national), min_digits)
    return pc.if_else(usable, national, pa.scalar(None, pa.string()))


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return array.cast(pa.string())


def customer_id_of(member_key: str) -> str:
    """ "C" + 16 hex chars of sha256 of a person's smallest "source|source_customer_id"."""
    return "C" + hashlib.sha256(member_key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class IdentityResult:
    crosswalk: pa.Table  # source, source_customer_id, customer_id: one row per source id
    source_ids: int
    customers: int
    shared_contacts_ignored: int  # emails/phones held by more than max_ids_per_contact ids
    merged_by_key: int = 0  # source ids that joined another id's customer through a declared key alone

    @property
    def source_ids_merged(self) -> int:
        """Source ids that joined another id's customer instead of starting their own."""
        return self.source_ids - self.customers


def resolve_identities(
    source_ids: pd.DataFrame | pa.Table, max_ids_per_contact: int, trusted_keys: tuple[str, ...] = ()
) -> IdentityResult:
    """One customer per connected component of the bipartite graph source id – contact.

    `source_ids` has one row per (source, source_customer_id) and the columns `email_key` and
    `phone_key`: any text that is equal exactly when the normalized contact is equal (the
    normalized value or its hash), null when there is none. A contact held by more than
    `max_ids_per_contact` ids (a shop's placeholder phone, "none@none.com") links nobody.
    `trusted_keys` name more columns of the same kind that the business declared as a person's
    key (a loyalty card, a marketplace's person id, a resolved crosswalk): they link every id that
    shares a value, however many.
    """
    table = source_ids if isinstance(source_ids, pa.Table) else pa.Table.from_pandas(source_ids, preserve_index=False)
    source = _as_array(table.column("source"))
    source_customer_id = _as_array(table.column("source_customer_id"))
    member_key = pc.binary_join_element_wise(source, source_customer_id, "|")
    n_ids = len(member_key)
    if pc.count_distinct(member_key).as_py() != n_ids:
        raise ValueError("resolve_identities needs one row per (source, source_customer_id)")

    id_nodes, contact_nodes = [], []
    next_node = n_ids
    shared_ignored = 0
    for column in ("email_key", "phone_key", *trusted_keys):
        encoded = _as_array(table.column(column)).dictionary_encode()
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        has_contact = codes >= 0
        linking = has_contact
        if column in ("email_key", "phone_key"):
            ids_per_contact = np.bincount(codes[has_contact], minlength=len(encoded.dictionary))
            placeholder = ids_per_contact > max_ids_per_contact
            shared_ignored += int(placeholder.sum())
            if len(placeholder):
                linking = has_contact & ~placeholder[np.where(has_contact, codes, 0)]
        id_nodes.append(np.flatnonzero(linking))
        contact_nodes.append(codes[linking] + next_node)
        next_node += len(encoded.dictionary)

    component = _components(id_nodes, contact_nodes, next_node, n_ids)
    merged_by_key = 0
    if trusted_keys:  # how many merges the declared keys made beyond email/phone
        by_contact = _components(id_nodes[:2], contact_nodes[:2], next_node, n_ids)
        merged_by_key = int(len(np.unique(by_contact)) - len(np.unique(component)))

    # a customer is named after its smallest member key, so ids never depend on row order
    key_rank = pc.rank(member_key, sort_keys="ascending", tiebreaker="first").to_numpy()
    order = np.lexsort((key_rank, component))
    first = np.ones(n_ids, dtype=bool)
    first[1:] = component[order][1:] != component[order][:-1]
    smallest = member_key.take(pa.array(order[first]))  # one per component, in component order
    customer_ids = pa.array([customer_id_of(key) for key in smallest.to_pylist()], type=pa.string())

    crosswalk = pa.table(
        {
            "source": source,
            "source_customer_id": source_customer_id,
            "customer_id": customer_ids.take(pa.array(component)),
        }
    )
    return IdentityResult(
        crosswalk=crosswalk,
        source_ids=n_ids,
        customers=len(customer_ids),
        shared_contacts_ignored=shared_ignored,
        merged_by_key=merged_by_key,
    )


def _components(id_nodes: list[np.ndarray], contact_nodes: list[np.ndarray], nodes: int, n_ids: int) -> np.ndarray:
    """The connected component (0..k-1) of each source id in the id–contact graph."""
    rows, cols = np.concatenate(id_nodes), np.concatenate(contact_nodes)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    _, component = np.unique(labels[:n_ids], return_inverse=True)
    return component
