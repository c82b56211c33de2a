"""The ground truth the generator writes beside its exports, which ingest never reads: where it
lives, what each file holds, and how an identity merge scores against it.

In `<sample>/truth/`: `persons.parquet` (the latent truth per person, PERSONS_SCHEMA),
`identities.parquet` (each source id: the person behind it, when the account opened and how often
it carries the person's orders, IDENTITIES_SCHEMA) and `dirty_rows.parquet` (every row made bad or
copied on purpose, DIRTY_SCHEMA; see `features.sample.dirt`). Everything `training.oracle` knows of
the generated people comes from these files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.sample.formats import pick
from features.sample.people import Accounts, People
from features.sample.world import ACQUISITION_CHANNELS, Window

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
IDENTITIES_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_customer_id", pa.string()),
        ("person_id", pa.int64()),
        ("opened_at", pa.timestamp("s", tz="UTC")),  # the account's signup_at, as its export writes it
        # the account's weight in the draw of which open pos/web/app account carries an order (0: crm, email)
        ("order_weight", pa.float64()),
    ]
)
DIRTY_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("row_key", pa.string()),
        ("kind", pa.string()),
        ("column", pa.string()),  # the column made bad (in the copy, for a conflict); null for an exact copy
    ]
)
TRUTH_SCHEMAS = {"persons": PERSONS_SCHEMA, "identities": IDENTITIES_SCHEMA, "dirty_rows": DIRTY_SCHEMA}


def truth_folder(sample_dir: Path) -> Path:
    """Where the truth of the sample in `sample_dir` lives."""
    return sample_dir / "truth"


def truth_file(truth_dir: Path, name: str) -> Path:
    """One of the truth files (a key of TRUTH_SCHEMAS) in a truth folder."""
    return truth_dir / f"{name}.parquet"


def outdated_truth_files(truth_dir: Path) -> list[str]:
    """The truth files in `truth_dir` that lack a column this generator writes (a sample generated
    by an older version); a missing file counts too."""
    outdated = []
    for name, schema in TRUTH_SCHEMAS.items():
        path = truth_file(truth_dir, name)
        if not path.is_file() or set(schema.names) - set(pq.read_schema(path).names):
            outdated.append(name)
    return outdated


# ---------------------------------------------------------------- the truth tables of one chunk


def persons_table(people: People, window: Window) -> pa.Table:
    gone = people.dropout < window.days
    dropout_seconds = window.seconds(np.where(gone, people.dropout, 0))
    return pa.table(
        {
            "person_id": people.number,
            "signup_at": pa.array(window.seconds(people.signup), pa.timestamp("s", tz="UTC")),
            "acquisition_channel": pick(ACQUISITION_CHANNELS, people.channel),
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


def identities_table(people: People, accounts: Accounts, window: Window) -> pa.Table:
    return pa.table(
        {
            "source": accounts.rows.column("source"),
            "source_customer_id": accounts.ids,
            "person_id": people.number[accounts.person],
            "opened_at": pa.array(window.seconds(accounts.created), pa.timestamp("s", tz="UTC")),
            "order_weight": accounts.order_weight,
        },
        schema=IDENTITIES_SCHEMA,
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
