"""One typed, frozen settings object: `configs/default.yaml`, an optional config on top,
then `CUSTLENS_...` environment variables (nested keys joined by `__`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from custlens.errors import CustlensError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestSettings(_Section):
    """How raw exports become the lake."""

    max_bad_row_share: float = Field(
        0.05, ge=0.0, le=1.0, description="A table with more quarantined rows than this share fails ingest."
    )
    source_timezone: str = Field(
        "Asia/Ho_Chi_Minh", description="Time zone of timestamps written without an offset."
    )
    phone_country_code: str = Field("84", pattern=r"^\d{1,3}$", description="Calling code dropped from phones.")
    default_source: dict[str, str] = Field(
        default_factory=lambda: {"surveys": "crm", "tickets": "crm"},
        description="Source system whose ids a table uses when the file has no `source` column.",
    )
    chunk_rows: int = Field(500_000, ge=1_000, description="Rows validated at a time (bounds memory).")
    phone_min_digits: int = Field(
        9, ge=1, le=20, description="A normalized phone with fewer digits is treated as no phone."
    )
    max_ids_per_contact: int = Field(
        10,
        ge=2,
        description="An email or phone shared by more source ids than this is a placeholder, not a person: "
        "it links nobody.",
    )
    duckdb_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$", description="Memory DuckDB may use before spilling to disk."
    )

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class FeatureSettings(_Section):
    """How per-customer feature snapshots are computed from the lake."""

    cutoff_every: Literal["month", "week"] = Field(
        "month", description="Snapshots are taken at the start of each month (or Monday), over the whole history."
    )
    max_cutoffs: int = Field(48, ge=1, description="At most this many of the latest periodic cutoffs are built.")
    include_today: bool = Field(True, description="Also snapshot at today's date, the one the online store serves.")
    duckdb_memory_limit: str = Field(
        "4GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$", description="Memory DuckDB may use before spilling to disk."
    )
    duckdb_threads: int = Field(2, ge=1, description="Threads DuckDB computes features with.")


class FeastSettings(_Section):
    """Where Feast keeps its registry and online store."""

    project: str = Field("custlens", pattern=r"^[a-z][a-z0-9_]*$", description="Feast project name.")
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="sqlite (a file under data_dir) or redis.")
    redis_connection_string: str = Field(
        "127.0.0.1:6379", description="Feast's Redis connection string, e.g. host:port,db=0,password=..."
    )
    registry_url: str | None = Field(
        None,
        description="SQL registry URL (postgresql+psycopg://...); default: a registry file under data_dir/feast.",
    )
    materialize_batch_rows: int = Field(
        100_000, ge=1_000, description="Customers written to the online store at a time."
    )


class TrainingSettings(_Section):
    """Label windows, splits, tuning budgets and the promotion gate of `custlens train`."""

    activity_window_days: int = Field(365, ge=1, description="Churn is defined for customers who bought in these days.")
    churn_window_days: int = Field(90, ge=1, description="No purchase in these days after the cutoff is churn.")
    repurchase_window_days: int = Field(30, ge=1, description="A purchase in these days after the cutoff.")
    clv_window_days: int = Field(365, ge=1, description="Customer value is net revenue in these days.")
    train_cutoffs: int = Field(6, ge=1, description="Monthly cutoffs whose rows train each model.")
    trials: int = Field(30, ge=1, description="Optuna trials per model.")
    timeout_seconds: int = Field(600, ge=1, description="Optuna time budget per model.")
    seed: int = Field(42, description="Seed of sampling, tuning and training.")
    threads: int = Field(
        1,
        ge=1,
        description="LightGBM threads. OpenMP threads spin while waiting: on a loaded machine (another job, "
        "parallel tests) two threads on two cores ran 20x slower than one, so one is the safe default.",
    )
    promotion_margin: float = Field(
        0.002, ge=0.0, description="A new model must beat the champion's test metric by at least this much."
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite store and artifacts in mlruns/ at the project root."
    )


class ServingSettings(_Section):
    """The Scorer and the online service (`custlens serve`)."""

    model_alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]*$", description="Registry alias the Scorer loads.")
    churn_medium_risk: float = Field(0.3, gt=0.0, lt=1.0, description="Churn probability from which risk is medium.")
    churn_high_risk: float = Field(0.6, gt=0.0, lt=1.0, description="Churn probability from which risk is high.")
    reasons: int = Field(3, ge=1, le=10, description="Reasons given behind each churn score.")
    max_ids_per_request: int = Field(1000, ge=1, description="Most customer ids one /score call may ask for.")
    host: str = Field("127.0.0.1", description="Address `custlens serve` listens on.")
    port: int = Field(3000, ge=1, le=65535, description="Port `custlens serve` listens on.")
    workers: int = Field(1, ge=1, description="Service worker processes.")
    reload_poll_seconds: float = Field(
        30.0, ge=0.0, description="How often the service checks the registry for a new champion (0: never)."
    )

    @model_validator(mode="after")
    def _ordered_bands(self) -> ServingSettings:
        if self.churn_medium_risk >= self.churn_high_risk:
            raise ValueError(
                f"churn_medium_risk ({self.churn_medium_risk}) must be below churn_high_risk ({self.churn_high_risk})"
            )
        return self


class BatchSettings(_Section):
    """Nightly batch scoring (`custlens score`) and its write-back."""

    sink: str | None = Field(
        None,
        description="Where scores are written: sqlite:///path.db, postgresql://..., parquet:PATH or csv:PATH; "
        "default: sqlite:///<data_dir>/scores/scores.db.",
    )
    chunk_rows: int = Field(200_000, ge=1_000, description="Customers scored at a time (bounds memory).")
    psi_warning: float = Field(
        0.2, gt=0.0, description="Warn when a score's PSI against the previous run exceeds this."
    )
    kpi_segments: bool = Field(
        True, description="After a run of every customer, rebuild the KPI cubes by segment from its scores."
    )


class Settings(BaseSettings):
    """Everything custlens can be told; one instance per command run."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="CUSTLENS_", env_nested_delimiter="__"
    )

    data_dir: Path = Field(Path("data"), description="All runtime output lives under this folder.")
    crm_source: str = Field("crm", description="The source whose customer ids the CRM knows.")
    pii_salt: SecretStr | None = Field(
        None, description="Salt for hashing emails and phones; set CUSTLENS_PII_SALT, never in a file."
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated keys the service accepts as `Authorization: Bearer <key>`; "
        "set CUSTLENS_API_KEYS, never in a file.",
    )
    ingest: IngestSettings = IngestSettings()
    features: FeatureSettings = FeatureSettings()
    feast: FeastSettings = FeastSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    batch: BatchSettings = BatchSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the YAML files, which arrive as init values.
        return (env_settings, init_settings)

    # Paths every stage agrees on, derived so that CUSTLENS_DATA_DIR moves them all.
    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def sample_dir(self) -> Path:
        return self.data_dir / "sample"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def scores_sink(self) -> str:
        return self.batch.sink or f"sqlite:///{(self.data_dir / 'scores' / 'scores.db').resolve()}"

    def api_key_set(self) -> frozenset[str]:
        """The accepted API keys; empty when none is configured."""
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        return frozenset(key.strip() for key in raw.split(",") if key.strip())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CustlensError(f"config file {path} does not exist; pass --config with an existing YAML file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CustlensError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CustlensError(f"config file {path} must hold a mapping of settings at the top level")
    return loaded


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config: Path | None = None) -> Settings:
    """Read default.yaml, merge `config` over it, apply the environment, validate.

    A misspelled or unknown key is a CustlensError that names the key and the file.
    """
    values = _read_yaml(DEFAULT_CONFIG)
    sources = [DEFAULT_CONFIG]
    if config is not None and Path(config).resolve() != DEFAULT_CONFIG:
        values = _deep_merge(values, _read_yaml(Path(config)))
        sources.append(Path(config))
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"  {key}: {reason}")
        files = " + ".join(str(path) for path in sources)
        raise CustlensError(
            f"invalid settings in {files} (or CUSTLENS_* environment variables):\n" + "\n".join(problems)
        ) from exc
