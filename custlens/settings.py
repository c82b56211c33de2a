"""One typed, frozen settings object: `configs/default.yaml`, an optional config on top,
then `CUSTLENS_...` environment variables (nested keys joined by `__`)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from custlens.errors import CustlensError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/New_York)") from exc
    return value


class BusinessSettings(_Section):
    """The business the data belongs to: its clock and its money. Nothing is assumed for a user's own
    data: ingest refuses naive timestamps without a time zone, and amounts without a currency."""

    timezone: str | None = Field(
        None,
        description="IANA time zone. Timestamps without an offset and date-only values are read in it; KPI days, "
        "weeks and months are its local calendar. Unset: every timestamp must carry an offset (calendar: UTC).",
    )
    currency: str | None = Field(
        None,
        description="ISO 4217 code. Money is stored with its minor units and shown with it; order rows in another "
        "currency are quarantined (currency_mismatch) unless ingest.exchange_rates converts them. Unset: taken "
        "from the orders' currency column when it holds exactly one.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from features.lake.money import check_currency  # babel's ISO 4217 list

        return check_currency(value)


class CsvOptions(_Section):
    """How a delimited text file is written."""

    delimiter: str = Field(",", description='One character, "tab", or "whitespace" (runs of spaces/tabs).')
    header: bool = Field(True, description="false: the first line is data; columns are then named by position.")
    decimal: str = Field(".", pattern=r"^[.,]$", description="Decimal mark of numbers and amounts.")
    thousands: str | None = Field(
        None,
        description="Thousands separator of amounts (e.g. ',' or '.' or ' '); unset: ',' grouping is accepted "
        "when the decimal mark is '.', nothing else.",
    )
    encoding: str = Field("utf-8", description="Text encoding, e.g. utf-8, latin-1, cp1252.")
    quote: str = Field('"', max_length=1, description="Quote character.")

    @field_validator("delimiter")
    @classmethod
    def _one_delimiter(cls, value: str) -> str:
        if value in ("whitespace", "tab") or len(value) == 1:
            return value
        raise ValueError(f"delimiter {value!r} must be one character, 'tab' or 'whitespace'")


class TableSource(_Section):
    """Where one contract table comes from and how its file maps onto the contract (ingest.tables.<table>)."""

    file: str | None = Field(None, description="File name or glob under --source (CSV, TSV, text, Parquet).")
    sql: str | None = Field(
        None,
        description="A DuckDB query over files in --source that yields the contract's columns (instead of file).",
    )
    csv: CsvOptions = CsvOptions()
    columns: dict[str, str | int] = Field(
        default_factory=dict,
        description="Contract column -> the file's column name, or its position from 1 when there is no header.",
    )
    defaults: dict[str, str] = Field(default_factory=dict, description="Contract column -> a constant value.")
    values: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Contract column -> {file value: contract value}; matched ignoring case and surrounding spaces.",
    )
    timestamp_format: str | None = Field(
        None, description="strptime format of the table's timestamps; unset: the documented formats are tried."
    )
    date_order: Literal["day_first", "month_first"] | None = Field(
        None, description="How slashed dates (01/02/1997) are read; unset: they are not accepted."
    )

    @model_validator(mode="after")
    def _one_origin(self) -> TableSource:
        if self.file and self.sql:
            raise ValueError("give either file or sql, not both")
        if self.sql and self.columns:
            raise ValueError("columns maps a file's columns; a sql query names the contract's columns itself")
        return self


class IngestSettings(_Section):
    """How raw exports become the lake."""

    max_bad_row_share: float = Field(
        0.05, ge=0.0, le=1.0, description="A table with more quarantined rows than this share fails ingest."
    )
    phone_country_code: str = Field("84", pattern=r"^\d{1,3}$", description="Calling code dropped from phones.")
    default_source: dict[str, str] = Field(
        default_factory=lambda: {"surveys": "crm", "tickets": "crm"},
        description="Source system whose ids a table uses when the file has no `source` column.",
    )
    tables: dict[str, TableSource] = Field(
        default_factory=dict,
        description="Per contract table: the file (or query) and how it maps onto the contract; a table not "
        "listed is read from <table>.csv or <table>.parquet with the contract's column names.",
    )
    identity_keys: list[str] = Field(
        default_factory=list,
        description="Customers-file columns that identify a person (loyalty card, person id): source ids sharing "
        "a value are one customer, transitively, together with email/phone.",
    )
    crosswalk: str | None = Field(
        None, description="File under --source of (source, source_customer_id, person_key) already resolved."
    )
    exchange_rates: str | None = Field(
        None,
        description="File under --source of (date, currency, rate): 1 unit of currency = rate units of "
        "business.currency from that date; converts order rows in other currencies.",
    )
    chunk_rows: int = Field(500_000, ge=1_000, description="Rows validated at a time (bounds memory).")
    phone_min_digits: int = Field(
        9, ge=1, le=20, description="A normalized phone with fewer digits is treated as no phone."
    )
    max_ids_per_contact: int = Field(
        10,
        ge=2,
        description="An email or phone shared by more source ids than this is a placeholder, not a person: "
        "it links nobody (declared identity_keys are trusted).",
    )
    duckdb_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$", description="Memory DuckDB may use before spilling to disk."
    )
    max_shrink_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A table that loses more than this share of its rows against the current lake is refused "
        "(a truncated export) unless `custlens ingest --allow-shrink`.",
    )
    earliest: date = Field(
        date(1990, 1, 1),
        ge=date(1900, 1, 1),
        description="Timestamps and dates before this day are quarantined as implausible_timestamp / implausible_date.",
    )
    future_tolerance: timedelta = Field(
        timedelta(days=1),
        ge=timedelta(0),
        le=timedelta(days=3650),
        description="Timestamps later than now + this are quarantined as implausible (e.g. `1 day`, `36 hours`).",
    )

    @field_validator("future_tolerance", mode="before")
    @classmethod
    def _spelled_duration(cls, value: Any) -> Any:
        """`1 day`, `36 hours`, `90 minutes` (or anything pydantic reads: seconds, ISO 8601 `P1D`)."""
        if isinstance(value, str):
            spelled = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(day|hour|minute|second)s?\s*", value)
            if spelled:
                return timedelta(**{spelled.group(2) + "s": float(spelled.group(1))})
        return value

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        if isinstance(values, dict) and "source_timezone" in values:
            raise ValueError("ingest.source_timezone is now business.timezone (the business's IANA time zone)")
        return values

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, value: dict[str, TableSource]) -> dict[str, TableSource]:
        from features.lake.contracts import CONTRACTS

        unknown = sorted(set(value) - set(CONTRACTS))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)}; the tables are {', '.join(CONTRACTS)}")
        for table, source in value.items():
            names = set(CONTRACTS[table].column_names)
            for key in ("columns", "defaults", "values"):
                wrong = sorted(set(getattr(source, key)) - names)
                if wrong:
                    raise ValueError(
                        f"{table}.{key} names {', '.join(wrong)}, not columns of {table} ({', '.join(sorted(names))})"
                    )
        return value


class FeatureSettings(_Section):
    """How per-customer feature snapshots are computed from the lake."""

    cutoff_every: Literal["auto", "month", "week"] = Field(
        "auto",
        description="Snapshots are taken at the start of each month (or Monday), over the whole history; auto: "
        "Mondays when the orders span less than two years (more training rows where there are few months), "
        "else month starts.",
    )
    max_cutoffs: int | None = Field(
        None,
        ge=1,
        description="At most this many of the latest periodic cutoffs are built (default: 48 month "
        "starts, 104 Mondays).",
    )
    include_today: bool = Field(
        True,
        description="When the data is fresh, the as-of (the snapshot scored and served) is today; false: always the "
        "end of the data.",
    )
    fresh_within_days: float = Field(
        2,
        ge=0,
        description="Data whose last event is at most this many days old is fresh: described as of today, with "
        "request-time recency online; older data is described as of its end.",
    )
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


# Days in a spelled window: a week is 7 days, a year 365 (the default windows' year), a month a
# twelfth of the mean Gregorian year (365.25 days), rounded to the day: 1m = 30, 3m = 91, 6m = 183, 12m = 365.
DAYS_PER_UNIT = {"d": 1.0, "w": 7.0, "m": 365.25 / 12, "y": 365.0}


def parse_days(value: Any) -> Any:
    """A window in days: a whole number (days), or a string `90`, `90d`, `39w`, `3m` or `1y`.
    Anything else is a ValueError that says what is accepted (pydantic adds the key)."""
    if isinstance(value, str):
        spelled = re.fullmatch(r"\s*(\d+)\s*([dwmy]?)\s*", value.lower())
        if not spelled:
            raise ValueError(
                f"{value!r} is not a window; write days (90 or 90d), weeks (39w), months (3m = 91 days) or years (1y)"
            )
        return round(int(spelled.group(1)) * DAYS_PER_UNIT[spelled.group(2) or "d"])
    return value


Days = Annotated[int, BeforeValidator(parse_days)]


class TrainingSettings(_Section):
    """Label windows, splits, data minimums, tuning budgets and the promotion gate of `custlens train`."""

    activity_window_days: Days = Field(
        365, ge=1, description="Churn is defined for customers who bought in these days (also 52w, 12m, 1y)."
    )
    churn_window_days: Days = Field(90, ge=1, description="No purchase in these days after the cutoff is churn.")
    repurchase_window_days: Days = Field(30, ge=1, description="A purchase in these days after the cutoff.")
    clv_window_days: Days = Field(365, ge=1, description="Customer value is net revenue in these days.")
    train_cutoffs: int | None = Field(
        None,
        ge=1,
        description="Cutoffs of the grid (features.cutoff_every) whose rows train each model "
        "(default: 6 month starts, or 26 Mondays: about half a year either way).",
    )
    validation_cutoffs: int | None = Field(
        None,
        ge=1,
        description="Cutoffs at which the held-out fifth of customers validates (tuning, early "
        "stopping, calibration); default: 3 month starts, or 13 Mondays.",
    )
    min_split_rows: int = Field(
        200,
        ge=1,
        description="Fewer rows than this in a split: not trained (training), tuned "
        "(validation) or promoted (test) on it; the run and the summary say so.",
    )
    min_class_rows: int = Field(
        30, ge=1, description="The same for the fewer class of a split: churners or non-churners, buyers or non-buyers."
    )
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
        0.002,
        ge=0.0,
        description="A new model is promoted only if the lower bound of the 95% paired-bootstrap "
        "interval of (model - incumbent) on its primary test metric exceeds this, against the champion and "
        "every baseline.",
    )
    bootstrap_resamples: int = Field(
        1000, ge=10, description="Bootstrap resamples of the test customers behind the promotion gate's intervals."
    )
    guard_tolerance: float = Field(
        0.1,
        ge=0.0,
        description="A guard metric (log loss, calibration error; CLV's MAE) is materially worse "
        "when the lower bound of its paired interval of (model - incumbent) exceeds this share of the "
        "incumbent's value: the model is then not promoted.",
    )
    clv_total_band: tuple[float, float] = Field(
        (0.8, 1.25),
        description="A CLV model is promoted only if its total predicted over total actual test "
        "revenue is within this band.",
    )
    clv_design: Literal["auto", "tweedie", "two_part"] = Field(
        "auto",
        description="How the CLV model is built: 'tweedie' (one regressor of net revenue), 'two_part' (P(any "
        "net revenue) x E[revenue | some], two LightGBM models sharing the trials budget), or 'auto': both, "
        "and the one with the better validation normalized Gini goes to the promotion gate (the test rows never "
        "choose). Without a validation window to tune on, auto is tweedie.",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite store and artifacts in <data_dir>/mlruns/."
    )

    @field_validator("clv_total_band")
    @classmethod
    def _band_holds_one(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 < low <= 1 <= high:
            raise ValueError(f"[{low}, {high}] must hold 1 (a total right on the actual) with a low above 0")
        return band


class ServingSettings(_Section):
    """The Scorer and the online service (`custlens serve`)."""

    model_alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]*$", description="Registry alias the Scorer loads.")
    churn_risk_bands: Literal["quantiles", "probability"] = Field(
        "quantiles",
        description="How churn risk bands are cut: 'quantiles' of the served churn model's scores on its test "
        "customers (serving.churn_risk_quantiles), or fixed 'probability' thresholds (churn_medium_risk, "
        "churn_high_risk).",
    )
    churn_risk_quantiles: tuple[float, float] = Field(
        (0.5, 0.8),
        description="With churn_risk_bands 'quantiles': the score quantiles from which risk is medium and high "
        "(0.5, 0.8: the riskiest 20% of the churn population are high, the next 30% medium).",
    )
    churn_medium_risk: float = Field(0.3, gt=0.0, lt=1.0, description="Churn probability from which risk is medium.")
    churn_high_risk: float = Field(0.6, gt=0.0, lt=1.0, description="Churn probability from which risk is high.")
    next_order_horizon_days: int = Field(
        365,
        ge=1,
        description="Latest expected next-order date given, in days after the as-of: a customer not more likely "
        "than not to have ordered again by then gets none.",
    )
    reasons: int = Field(3, ge=1, le=10, description="Reasons given behind each churn score.")
    max_ids_per_request: int = Field(1000, ge=1, description="Most customer ids one /score call may ask for.")
    host: str = Field("127.0.0.1", description="Address `custlens serve` listens on.")
    port: int = Field(3000, ge=1, le=65535, description="Port `custlens serve` listens on.")
    workers: int = Field(1, ge=1, description="Service worker processes.")
    reload_poll_seconds: float = Field(
        30.0, ge=0.0, description="How often the service checks the registry for a new champion (0: never)."
    )
    threads: int = Field(1, ge=1, description="Threads per worker that score and answer KPIs, off the event loop.")
    max_in_flight: int = Field(
        32, ge=1, description="/score and /kpis requests a worker holds at once; one more gets 503 + Retry-After."
    )
    max_body_bytes: int = Field(1_048_576, ge=1, description="Largest request body accepted; a larger one gets 413.")
    header_timeout_seconds: float = Field(
        10.0, gt=0.0, description="A request header not whole in this time gets 408 and its connection closed."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0.0, description="A request body not whole in this time after its header gets 408."
    )

    @model_validator(mode="after")
    def _ordered_bands(self) -> ServingSettings:
        if self.churn_medium_risk >= self.churn_high_risk:
            raise ValueError(
                f"churn_medium_risk ({self.churn_medium_risk}) must be below churn_high_risk ({self.churn_high_risk})"
            )
        medium, high = self.churn_risk_quantiles
        if not 0.0 < medium < high < 1.0:
            raise ValueError(f"churn_risk_quantiles ({medium}, {high}) must rise within 0..1, e.g. [0.5, 0.8]")
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

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix="CUSTLENS_", env_nested_delimiter="__")

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
    business: BusinessSettings = BusinessSettings()
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
