"""Writing scores to a sink and reading a sink back in tests: opened, read, closed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from custlens.settings import Settings
from serving.batch import BatchReport, score_customers
from serving.sinks import RunEntry, open_sink


def sink_runs(uri: str) -> list[RunEntry]:
    """The sink's manifest, oldest start first."""
    sink = open_sink(uri)
    try:
        return sink.runs()
    finally:
        sink.close()


def sink_scores(uri: str, as_of: date | None = None) -> pd.DataFrame:
    """The scores the sink holds for one as-of date (default: all)."""
    sink = open_sink(uri)
    try:
        return sink.scores(as_of)
    finally:
        sink.close()


def score_into_parquet(settings: Settings, folder: Path) -> tuple[BatchReport, pd.DataFrame]:
    """`custlens score` with defaults into a Parquet sink in `folder`, and what it wrote."""
    uri = f"parquet:{folder}"
    report = score_customers(settings, sink_uri=uri)
    return report, sink_scores(uri, report.as_of)
