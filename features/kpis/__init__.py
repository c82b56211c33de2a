"""The KPI engine's public API: the daily KPI cube built at ingest, the cubes by segment built after a
batch run, `kpis()`, the one function the CLI, the service and the tests ask for KPI tables, and the
rules of what a KPI question may ask."""

from features.kpis.arguments import (
    CLI_SPELLING,
    GROUPINGS,
    HTTP_SPELLING,
    MAX_KPI_DAYS,
    SEGMENT_GROUPINGS,
    Grouping,
    KpiArgumentError,
    Spelling,
    check_grouping,
    check_period,
    kpi_period,
    last_full_month,
)
from features.kpis.cache import KpiCache
from features.kpis.cube import CubeMeta, build_kpi_cube, build_segment_cubes, kpi_dir, segment_as_of, segment_dir
from features.kpis.definitions import KPI_NAMES, KPIS, KpiDefinition, KpiTable, KpiValue
from features.kpis.direct import kpis_direct
from features.kpis.query import kpis

__all__ = [
    "CLI_SPELLING",
    "GROUPINGS",
    "HTTP_SPELLING",
    "KPIS",
    "KPI_NAMES",
    "MAX_KPI_DAYS",
    "SEGMENT_GROUPINGS",
    "CubeMeta",
    "Grouping",
    "KpiArgumentError",
    "KpiCache",
    "KpiDefinition",
    "KpiTable",
    "KpiValue",
    "Spelling",
    "build_kpi_cube",
    "build_segment_cubes",
    "check_grouping",
    "check_period",
    "kpi_dir",
    "kpi_period",
    "kpis",
    "kpis_direct",
    "last_full_month",
    "segment_as_of",
    "segment_dir",
]
