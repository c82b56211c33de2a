"""The KPI cubes on disk: the daily cube built from the lake at ingest (`<data_dir>/kpis/`), the cubes
by segment built from a batch run's scores (`<data_dir>/kpis-by-segment/`), what each was built from
(CubeMeta), and reading them back only while they still fit the lake."""

from __future__ import annotations

import json
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.kpis.arguments import SEGMENT_GROUPINGS
from features.kpis.definitions import ALL, NONE_LABEL, UNSCORED
from features.kpis.source import connect
from features.kpis.sql import (
    CUSTOMER_DAILY_SQL,
    CUSTOMER_DIMS_SQL,
    CUSTOMER_ORDERS_SQL,
    CUSTOMER_REVENUE_SQL,
    FACT_ROWS,
    TICKET_DURATION_ROWS_SQL,
    fact_sources,
    fill,
    lake_sources,
    segment_dims_sql,
)
from features.lake.tables import (
    atomic_folder,
    copy_to_parquet,
    lake_business,
    lake_stamp,
    present_tables,
    read_table_sql,
    sql_date,
    sql_literal,
    table_path,
)

VARIANCE_COLUMN = "predicted_clv_variance"  # of each customer's predicted value, in the assignments
CUBE_FILES = ("daily", "customer_daily", "customer_orders", "ticket_durations")


class PredictedSum(NamedTuple):
    """The predicted value of one group of customers: its sum, the customers, and the sum of their
    variances (None when a customer has none: scored by a CLV version without a range)."""

    total: float
    customers: float
    variance: float | None = None


# PredictedSum per group label, per grouping (None: ungrouped)
PredictedSums = dict[str | None, dict[str, PredictedSum]]


def kpi_dir(settings: Settings) -> Path:
    """Where the KPI cube lives."""
    return settings.data_dir / "kpis"


def segment_dir(settings: Settings) -> Path:
    """Where the cubes by segment and the latest scores' segments and predicted values live."""
    return settings.data_dir / "kpis-by-segment"


@dataclass(frozen=True)
class CubeMeta:
    """What a cube was built from: the lake tables present, the day span, the churn windows, and the
    business whose local days its days are and whose currency its money is."""

    tables: tuple[str, ...]
    first_day: date
    last_day: date
    activity_days: int
    churn_days: int
    lake_stamp: str
    timezone: str = "UTC"  # a cube written before the business was recorded counted UTC days
    currency: str | None = None

    def to_json(self) -> str:
        values = asdict(self)
        values.update(first_day=self.first_day.isoformat(), last_day=self.last_day.isoformat())
        return json.dumps(values, indent=2)

    @classmethod
    def read(cls, path: Path) -> CubeMeta:
        values = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            tables=tuple(values["tables"]),
            first_day=date.fromisoformat(values["first_day"]),
            last_day=date.fromisoformat(values["last_day"]),
            activity_days=int(values["activity_days"]),
            churn_days=int(values["churn_days"]),
            lake_stamp=str(values["lake_stamp"]),
            timezone=str(values.get("timezone", "UTC")),
            currency=values.get("currency"),
        )

    @classmethod
    def of_lake(
        cls, settings: Settings, present: tuple[str, ...], first_day: date, last_day: date, stamp: str
    ) -> CubeMeta:
        """The meta of a cube of this lake (its optional tables `present`) under these settings."""
        business = lake_business(settings)
        return cls(
            tables=("customers", "orders", *present),
            first_day=first_day,
            last_day=last_day,
            activity_days=settings.training.activity_window_days,
            churn_days=settings.training.churn_window_days,
            lake_stamp=stamp,
            timezone=business.timezone,
            currency=business.currency,
        )


# ---------------------------------------------------------------- building


def build_kpi_cube(settings: Settings) -> Path:
    """Aggregate the lake into the daily KPI cube under <data_dir>/kpis/ and return that folder;
    the old cube is replaced whole (a reader sees the old cube or the new one)."""
    with atomic_folder(kpi_dir(settings)) as new_dir:
        _build_cube(settings, new_dir, dims_sql=CUSTOMER_DIMS_SQL, stamp=lake_stamp(settings))
    return kpi_dir(settings)


def build_segment_cubes(settings: Settings, scores: pd.DataFrame, as_of: date) -> Path:
    """The KPI cubes by RFM segment and by behavioural segment, from one batch run's scores
    (customer_id, rfm_segment, behavioural_segment, predicted_clv and, when given,
    predicted_clv_variance): `custlens score` calls it after writing the scores. Every customer is
    grouped by their segment at `as_of`, for any period (segments describe who the customers are
    now, not who they were then)."""
    columns = ["customer_id", *SEGMENT_GROUPINGS.values(), "predicted_clv"]
    missing = set(columns) - set(scores.columns)
    columns += [VARIANCE_COLUMN] if VARIANCE_COLUMN in scores.columns else []
    if missing:
        raise CustlensError(f"segment cubes need the score columns {sorted(missing)}")
    with atomic_folder(segment_dir(settings)) as new_dir:
        assignments = new_dir / "assignments.parquet"
        scores[columns].to_parquet(assignments, index=False)
        stamp = f"{lake_stamp(settings)}|scores {as_of.isoformat()} {uuid.uuid4().hex}"
        for grouping in SEGMENT_GROUPINGS:
            cube = new_dir / grouping
            cube.mkdir()
            _build_cube(settings, cube, segment_dims_sql(grouping, assignments), stamp)
        (new_dir / "scores.json").write_text(json.dumps({"as_of": as_of.isoformat(), "stamp": stamp}), "utf-8")
    return segment_dir(settings)


def _build_cube(settings: Settings, new_dir: Path, dims_sql: str, stamp: str) -> None:
    """Write one cube's files into `new_dir`, its customers' dimensions from `dims_sql`."""
    present = present_tables(settings)
    try:
        with closing(connect(settings)) as con:
            tables, first_day, last_day = lake_sources(con, settings, present, dims_sql)
            meta = CubeMeta.of_lake(settings, present, first_day, last_day, stamp)
            copy_to_parquet(con, _daily_sql(tables, meta.tables), new_dir / "daily.parquet")
            con.execute(f"CREATE TEMP TABLE customer_orders AS {CUSTOMER_ORDERS_SQL.format(**tables)}")
            con.execute(f"CREATE TEMP TABLE customer_revenue AS {CUSTOMER_REVENUE_SQL.format(**tables)}")
            copy_to_parquet(
                con,
                "SELECT day, prev_day, prev2_day, channel, city FROM customer_orders ORDER BY day",
                new_dir / "customer_orders.parquet",
            )
            copy_to_parquet(
                con,
                CUSTOMER_DAILY_SQL.format(
                    activity_days=meta.activity_days,
                    churn_days=meta.churn_days,
                    first_day=sql_date(first_day),
                    last_day=sql_date(last_day),
                ),
                new_dir / "customer_daily.parquet",
            )
            durations = (
                f"SELECT day, channel, coalesce(city, '{NONE_LABEL}') AS city, measure, hours "
                f"FROM ({fill(TICKET_DURATION_ROWS_SQL, tables)}) ORDER BY day"
                if "tickets" in present
                else "SELECT CAST(NULL AS DATE) AS day, '' AS channel, '' AS city, '' AS measure, "
                "CAST(NULL AS DOUBLE) AS hours LIMIT 0"
            )
            copy_to_parquet(con, durations, new_dir / "ticket_durations.parquet")
        (new_dir / "meta.json").write_text(meta.to_json(), encoding="utf-8")
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0].rstrip(".")
        raise CustlensError(
            f"building the KPI cube from {settings.lake_dir} failed: {reason}. The old cube was left as it was"
        ) from exc


def _daily_sql(tables: dict[str, str], lake_tables: tuple[str, ...]) -> str:
    """The daily cube: each source's additive parts summed per (day, channel, city), one CTE per
    source, stacked by column name and summed once more."""
    parts = []
    for source in fact_sources(lake_tables):
        rows_sql, columns = FACT_ROWS[source]
        sums = ", ".join(f"sum({column}) AS {column}" for column in columns)
        parts.append(
            f"SELECT day, channel, coalesce(city, '{NONE_LABEL}') AS city, {sums} "
            f"FROM ({fill(rows_sql, tables)}) GROUP BY ALL"
        )
    sources = ",\n".join(f"source_{number} AS ({part})" for number, part in enumerate(parts))
    stacked = " UNION ALL BY NAME ".join(f"SELECT * FROM source_{number}" for number in range(len(parts)))
    return (
        f"WITH {sources}, stacked AS ({stacked}) "
        "SELECT day, channel, city, sum(COLUMNS(* EXCLUDE (day, channel, city))) FROM stacked "
        "GROUP BY ALL ORDER BY day, channel, city"
    )


# ---------------------------------------------------------------- reading back


def read_cube_meta(settings: Settings) -> CubeMeta:
    """The daily cube's meta; a clear error when there is none or it is older than the lake."""
    folder = kpi_dir(settings)
    if not (folder / "meta.json").is_file():
        raise CustlensError(
            f"there is no KPI cube in {folder}; run `custlens ingest` (which builds it) or `custlens kpis --rebuild`"
        )
    meta = CubeMeta.read(folder / "meta.json")
    if meta.lake_stamp != lake_stamp(settings):
        raise CustlensError(
            f"the KPI cube in {folder} was built from an older lake than {settings.lake_dir}; "
            "rebuild it with `custlens kpis --rebuild`"
        )
    _check_business(settings, meta, folder, "rebuild it with `custlens kpis --rebuild`")
    return meta


def read_segment_meta(settings: Settings, grouping: str) -> CubeMeta:
    """The meta of one segment grouping's cube, built by `custlens score`; a clear error when there
    is none or the scores are older than the lake."""
    folder = segment_dir(settings) / grouping
    if not (folder / "meta.json").is_file():
        raise CustlensError(f"KPIs by {grouping} need segments from a batch scoring run; run `custlens score` first")
    meta = CubeMeta.read(folder / "meta.json")
    if meta.lake_stamp.split("|")[0] != lake_stamp(settings):
        raise CustlensError(
            f"the segments in {folder.parent} were scored on an older lake than {settings.lake_dir}; "
            "run `custlens score` again"
        )
    _check_business(settings, meta, folder, "run `custlens score` again")
    return meta


def _check_business(settings: Settings, meta: CubeMeta, folder: Path, remedy: str) -> None:
    """A cube counts the days and money of the business it was built for; the lake's business (its
    ingest record, or the config for a lake without one) may have changed since."""
    business = lake_business(settings)
    if (meta.timezone, meta.currency) != (business.timezone, business.currency):
        raise CustlensError(
            f"the KPI cube in {folder} counts {meta.timezone} days in {meta.currency or 'no currency'}, but the "
            f"lake {settings.lake_dir} is {business.timezone}, {business.currency or 'no currency'}; {remedy}"
        )


def segment_as_of(settings: Settings) -> date | None:
    """The as-of date of the scores the KPI cubes by segment come from; None before any."""
    scores = _scores_json(settings)
    return None if scores is None else date.fromisoformat(scores["as_of"])


def has_scores(settings: Settings) -> bool:
    return (segment_dir(settings) / "scores.json").is_file()


def scores_stamp(settings: Settings) -> str | None:
    """Which batch run the segment folder holds, when it was scored on this lake; else None."""
    scores = _scores_json(settings)
    if scores is None or scores["stamp"].split("|")[0] != lake_stamp(settings):
        return None
    return scores["stamp"]


def _scores_json(settings: Settings) -> dict[str, str] | None:
    """The segment folder's scores.json: the batch run's as-of date and stamp; None before any."""
    if not has_scores(settings):
        return None
    scores: dict[str, str] = json.loads((segment_dir(settings) / "scores.json").read_text(encoding="utf-8"))
    return scores


def predicted_sums(settings: Settings, con: duckdb.DuckDBPyConnection | None = None) -> PredictedSums:
    """Every grouping's predicted-value sums in one pass over the latest scores joined to the
    customers (on `con`, or on a connection of its own)."""
    if con is None:
        with closing(connect(settings)) as own:
            return predicted_sums(settings, own)
    groups: dict[str | None, str] = {None: f"'{ALL}'", "channel": "acquisition_channel", "city": "city",
              **{name: f"coalesce({column}, '{UNSCORED}')" for name, column in SEGMENT_GROUPINGS.items()}}  # fmt: skip
    customers = read_table_sql(table_path(settings, "customers"))
    assignments = segment_dir(settings) / "assignments.parquet"
    # written by a `custlens score` from before the outputs were named without a window
    stored = pq.read_schema(assignments).names
    value = "predicted_clv" if "predicted_clv" in stored else "predicted_clv_12m"
    # scores from before ranges have no variances: their totals have no range
    variance = VARIANCE_COLUMN if VARIANCE_COLUMN in stored else "NULL::DOUBLE"
    con.execute(
        f"CREATE TEMP TABLE scored AS SELECT assignments.*, {variance} AS value_variance, dims.city, "
        f"dims.acquisition_channel "
        f"FROM read_parquet({sql_literal(assignments)}) AS assignments "
        f"JOIN ({CUSTOMER_DIMS_SQL.format(customers=customers)}) AS dims "
        f"USING (customer_id) WHERE {value} IS NOT NULL"
    )
    out: PredictedSums = {}
    for grouping, label_sql in groups.items():
        rows = con.execute(f"SELECT {label_sql}, sum({value}), count(*), sum(value_variance), count(value_variance) "
                           "FROM scored GROUP BY 1").fetchall()  # fmt: skip
        out[grouping] = {str(label): PredictedSum(float(total), float(count), float(spread) if known == count else None)
                         for label, total, count, spread, known in rows}  # fmt: skip
    return out
