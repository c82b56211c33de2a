"""The KPI engine: the daily KPI cube built at ingest, the cubes by segment built after a batch
run, and `kpis()`, the one function the CLI, the service and the tests ask for KPI tables."""

from features.kpis.engine import (
    GROUPINGS,
    KPI_NAMES,
    KPIS,
    SEGMENT_GROUPINGS,
    CubeMeta,
    Grouping,
    KpiTable,
    KpiValue,
    build_kpi_cube,
    build_segment_cubes,
    kpi_dir,
    kpis,
    kpis_direct,
    last_full_month,
    segment_as_of,
)

__all__ = [
    "GROUPINGS",
    "KPIS",
    "KPI_NAMES",
    "SEGMENT_GROUPINGS",
    "CubeMeta",
    "Grouping",
    "KpiTable",
    "KpiValue",
    "build_kpi_cube",
    "build_segment_cubes",
    "kpi_dir",
    "kpis",
    "kpis_direct",
    "last_full_month",
    "segment_as_of",
]
