"""Where the feature store's files live under the data directory, for the Feast repo
definitions (which Feast imports as modules, so they cannot be handed a Settings object)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from features.catalog import Family

# Set by the entry point that applies the repo, so that `--config` and CUSTLENS_DATA_DIR both
# reach the definitions; without it the settings are read the usual way.
DATA_DIR_VARIABLE = "CUSTLENS_DATA_DIR"
REQUEST_TIME = "request_ts"


def data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if configured:
        return Path(configured).resolve()
    from custlens.settings import load_settings

    return load_settings().data_dir.resolve()


def features_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "features"


def family_dir(family: Family, root: Path | None = None) -> Path:
    return features_dir(root) / family


def family_glob(family: Family, root: Path | None = None) -> Path:
    return family_dir(family, root) / "*.parquet"


def snapshot_file(family: Family, cutoff: date, root: Path | None = None) -> Path:
    """One family's snapshot at one cutoff. No "=" in the name: DuckDB (and so Feast) would read
    it as a hive partition."""
    return family_dir(family, root) / f"{cutoff.isoformat()}.parquet"


def btyd_fit_file(cutoff: date, root: Path | None = None) -> Path:
    """The population fit behind the `btyd` family at one cutoff (features/btyd.py), for a reviewer."""
    return family_dir("btyd", root) / f"{cutoff.isoformat()}.json"


def packed_path(root: Path | None = None) -> Path:
    return features_dir(root) / "packed" / "latest.parquet"
