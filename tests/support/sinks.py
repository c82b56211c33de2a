"""Reading a sink back in tests: opened, read, closed."""

from __future__ import annotations

from serving.sinks import RunEntry, open_sink


def sink_runs(uri: str) -> list[RunEntry]:
    """The sink's manifest, oldest start first."""
    sink = open_sink(uri)
    try:
        return sink.runs()
    finally:
        sink.close()
