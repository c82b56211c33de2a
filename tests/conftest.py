"""Shared fixtures: a Settings whose data_dir is a temporary folder, and tiny hand-made raw
export folders (CSV or Parquet) that tests change one value at a time. Also the layer markers:
a test's folder (tests/integration, tests/service) decides its marker, not a decorator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from custlens.settings import Settings, load_settings
from tests.support.business import SAMPLE_CONFIG

Rows = list[dict[str, str]]

TESTS = Path(__file__).parent
# Folders whose tests get the marker of the same name (registered in pyproject.toml).
MARKED_LAYERS = ("integration", "service")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its layer, so `-m "not integration and not service"` is the unit layer
    wherever a test file sits and however it is named."""
    for item in items:
        if item.path.is_relative_to(TESTS) and (layer := item.path.relative_to(TESTS).parts[0]) in MARKED_LAYERS:
            item.add_marker(layer)


def clean_tables() -> dict[str, Rows]:
    """Three people, one of them known to two systems (same email, different case), all rows valid."""
    return {
        "customers": [
            {"source": "crm", "source_customer_id": "1", "signup_at": "2024-01-05 09:00:00",
             "email": "lan.nguyen@example.vn", "phone": "0912345678", "full_name": "Nguyễn Thị Lan",
             "birth_date": "1990-04-01", "gender": "F", "city": "Hồ Chí Minh", "acquisition_channel": "facebook",
             "marketing_opt_in": "yes"},
            {"source": "web", "source_customer_id": "w-1", "signup_at": "2024-01-03T02:00:00Z",
             "email": " Lan.Nguyen@Example.VN ", "phone": "", "full_name": "", "birth_date": "",
             "gender": "", "city": "", "acquisition_channel": "google", "marketing_opt_in": "false"},
            {"source": "crm", "source_customer_id": "2", "signup_at": "2024-02-01 10:00:00",
             "email": "minh.tran@example.vn", "phone": "+84 987 654 321", "full_name": "Trần Văn Minh",
             "birth_date": "1985-12-31", "gender": "M", "city": "Hà Nội", "acquisition_channel": "organic",
             "marketing_opt_in": "1"},
            {"source": "pos", "source_customer_id": "p-9", "signup_at": "2024-03-01 08:30:00+07:00",
             "email": "", "phone": "0900000001", "full_name": "Lê Hoa", "birth_date": "2000-01-01",
             "gender": "F", "city": "Đà Nẵng", "acquisition_channel": "store", "marketing_opt_in": "NO"},
        ],
        "orders": [
            {"order_id": "O1", "source": "crm", "source_customer_id": "1", "ordered_at": "2024-02-01 12:00:00",
             "status": "completed", "net_amount": "1234567.89", "channel": "app", "gross_amount": "1300000",
             "discount_amount": "65432.11", "items": "3", "category": "Thời trang", "currency": "VND"},
            {"order_id": "O2", "source": "web", "source_customer_id": "w-1", "ordered_at": "2024-02-03T05:00:00Z",
             "status": "returned", "net_amount": "250000", "channel": "web", "gross_amount": "250000",
             "discount_amount": "0", "items": "1", "category": "Mỹ phẩm", "currency": "VND"},
            {"order_id": "O3", "source": "crm", "source_customer_id": "2", "ordered_at": "2024-02-05T10:00:00+07:00",
             "status": "completed", "net_amount": "99000.5", "channel": "store", "gross_amount": "99000.5",
             "discount_amount": "0", "items": "2", "category": "Gia dụng", "currency": "VND"},
            {"order_id": "O4", "source": "pos", "source_customer_id": "p-9", "ordered_at": "2024-03-02 18:00:00",
             "status": "cancelled", "net_amount": "0", "channel": "store", "gross_amount": "120000",
             "discount_amount": "0", "items": "1", "category": "Gia dụng", "currency": "VND"},
        ],
        "engagement_events": [
            {"event_id": "E1", "source": "web", "source_customer_id": "w-1", "occurred_at": "2024-02-01 11:00:00",
             "event_type": "session_start", "channel": "web", "campaign_id": "", "session_id": "s1",
             "duration_s": "12.5", "page_views": "4"},
            {"event_id": "E2", "source": "crm", "source_customer_id": "2", "occurred_at": "2024-02-02T01:00:00Z",
             "event_type": "email_open", "channel": "email", "campaign_id": "tet-2024", "session_id": "",
             "duration_s": "", "page_views": ""},
        ],
        "surveys": [
            {"response_id": "R1", "source_customer_id": "1", "responded_at": "2024-02-10 09:00:00",
             "survey_type": "nps", "score": "9", "channel": "email", "comment": "Giao hàng nhanh, rất hài lòng"},
            {"response_id": "R2", "source_customer_id": "2", "responded_at": "2024-02-11 09:00:00",
             "survey_type": "csat", "score": "4", "channel": "app", "comment": ""},
        ],
        "tickets": [
            {"ticket_id": "T1", "source_customer_id": "1", "opened_at": "2024-02-12 09:00:00",
             "first_response_at": "2024-02-12 09:30:00", "resolved_at": "2024-02-13 10:00:00", "channel": "chat",
             "category": "giao hàng", "status": "closed"},
        ],
        "marketing_spend": [
            {"date": "2024-02-01", "channel": "facebook", "spend": "1500000.00", "campaign_id": "tet-2024",
             "impressions": "10000", "clicks": "350", "new_customers": "12"},
            {"date": "2024-02-01", "channel": "google", "spend": "900000", "campaign_id": "tet-2024",
             "impressions": "8000", "clicks": "200", "new_customers": "7"},
        ],
    }  # fmt: skip


def write_exports(folder: Path, tables: dict[str, Rows], file_format: str = "csv") -> Path:
    """One file per table, every value written as text (CSV) or as a string column (Parquet)."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, rows in tables.items():
        columns = list(dict.fromkeys(name for row in rows for name in row))
        data = {name: pa.array([row.get(name, "") for row in rows], type=pa.string()) for name in columns}
        if file_format == "parquet":
            pq.write_table(pa.table(data), folder / f"{table}.parquet")
        else:
            pv.write_csv(pa.table(data), folder / f"{table}.csv")
    return folder


def with_ingest(settings: Settings, **changes: Any) -> Settings:
    """The same settings with some `ingest.*` values changed."""
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=changes)})


WriteExports = Callable[..., Path]


@pytest.fixture
def exports(tmp_path: Path) -> WriteExports:
    """`exports(tables, name="exports", file_format="csv")` writes a raw export folder under tmp_path."""

    def write(tables: dict[str, Rows], name: str = "exports", file_format: str = "csv") -> Path:
        return write_exports(tmp_path / name, tables, file_format)

    return write


@pytest.fixture
def configure() -> Callable[..., Settings]:
    """`configure(settings, **ingest_changes)`: the settings with some `ingest.*` values changed."""
    return with_ingest


@pytest.fixture
def tables() -> dict[str, Rows]:
    return copy.deepcopy(clean_tables())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(SAMPLE_CONFIG).model_copy(
        update={"data_dir": tmp_path / "data", "pii_salt": SecretStr("test-salt")}
    )


@pytest.fixture
def lenient(settings: Settings) -> Settings:
    """Settings that never fail on bad rows, for tests about what happens to each row."""
    return with_ingest(settings, max_bad_row_share=1.0)
