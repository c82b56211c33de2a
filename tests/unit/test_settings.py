"""The settings object: shipped configs load, typos are errors, the environment overrides."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from custlens.errors import CustlensError
from custlens.settings import DEFAULT_CONFIG, PROJECT_ROOT, Settings, load_settings

SHIPPED_CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUSTLENS_* variable of the shell running the tests reaches the settings."""
    for name in os.environ:
        if name.startswith("CUSTLENS_"):
            monkeypatch.delenv(name)


def keys_set(values: dict[str, Any], model: BaseModel, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The setting each YAML value sets, as a path (`("ingest", "chunk_rows")`); a mapping is a
    section only where the settings have one (`ingest.default_source` is one value)."""
    for key, value in values.items():
        current = getattr(model, key)
        if isinstance(current, BaseModel):
            yield from keys_set(value, current, (*prefix, key))
        else:
            yield (*prefix, key)


def setting(settings: BaseModel, key: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in key:
        value = getattr(value, part)
    return value


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


# One place per default. custlens/settings.py holds every default: the code builds settings
# without any YAML too (Settings(...), FeastSettings(...)), and there each default sits next to
# its type, bounds and description. configs/default.yaml lists only what a deployment is expected
# to change, to show it; were it to set a value of its own, `load_settings()` and `Settings()`
# would silently disagree. So every value it sets must equal the code's, and the whole file must
# change nothing.
def test_default_yaml_sets_only_the_code_defaults(no_environment: None) -> None:
    code, shipped = Settings(), load_settings()
    written = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))

    keys = list(keys_set(written, code))

    assert keys, "default.yaml sets nothing"
    for key in keys:
        assert setting(shipped, key) == setting(code, key), (
            f"configs/default.yaml sets {'.'.join(key)} to {setting(shipped, key)!r}, the code default is "
            f"{setting(code, key)!r}: change the default in custlens/settings.py, not (only) in the YAML"
        )
    assert shipped == code


def test_every_setting_says_what_it_means() -> None:
    # settings.py is the reference for every key default.yaml leaves out
    undescribed = [name for name, field in fields(Settings) if not field.description]
    assert undescribed == []


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads(config: Path) -> None:
    settings = load_settings(config)
    assert settings.ingest.max_bad_row_share > 0


def test_misspelled_nested_key_is_an_error_naming_it(tmp_path: Path) -> None:
    # given a config with a typo in a nested key
    config = tmp_path / "typo.yaml"
    config.write_text("ingest:\n  max_bad_row_shar: 0.1\n", encoding="utf-8")
    # when it is loaded, then the error names the key
    with pytest.raises(CustlensError, match=r"ingest\.max_bad_row_shar: unknown key"):
        load_settings(config)


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "extra.yaml"
    config.write_text("data_dri: elsewhere\n", encoding="utf-8")
    with pytest.raises(CustlensError, match="data_dri: unknown key"):
        load_settings(config)


def test_environment_overrides_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUSTLENS_DATA_DIR", str(tmp_path / "moved"))
    monkeypatch.setenv("CUSTLENS_INGEST__MAX_BAD_ROW_SHARE", "0.25")
    settings = load_settings()
    assert settings.data_dir == tmp_path / "moved"
    assert settings.lake_dir == tmp_path / "moved" / "lake"
    assert settings.ingest.max_bad_row_share == 0.25
    # and the untouched nested values keep their defaults
    assert settings.ingest.phone_country_code == "84"
    assert settings.business.timezone is None  # nothing is assumed about a user's own data


def test_config_file_merges_over_default(tmp_path: Path) -> None:
    config = tmp_path / "partial.yaml"
    config.write_text("ingest:\n  chunk_rows: 2000\n", encoding="utf-8")
    settings = load_settings(config)
    assert settings.ingest.chunk_rows == 2000
    assert settings.ingest.default_source == {"surveys": "crm", "tickets": "crm"}


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.crm_source = "pos"  # type: ignore[misc]


def test_bad_value_names_key_and_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("business:\n  timezone: Mars/Olympus\n", encoding="utf-8")
    with pytest.raises(CustlensError, match=r"business\.timezone: .*unknown time zone"):
        load_settings(config)
    config.write_text("business:\n  currency: XYZ\n", encoding="utf-8")
    with pytest.raises(CustlensError, match=r"business\.currency: .*unknown currency"):
        load_settings(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CustlensError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_pii_salt_comes_from_environment_and_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTLENS_PII_SALT", "s3cret")
    settings = load_settings()
    assert settings.pii_salt is not None
    assert settings.pii_salt.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(("spelled", "days"), [(273, 273), ("90", 90), ("90d", 90), ("39w", 273), ("3m", 91),
                                               ("6m", 183), ("12m", 365), ("1y", 365)])  # fmt: skip
def test_a_window_is_days_or_weeks_months_years(tmp_path: Path, spelled: Any, days: int) -> None:
    config = tmp_path / "windows.yaml"
    config.write_text(yaml.safe_dump({"training": {"clv_window_days": spelled}}), encoding="utf-8")

    assert load_settings(config).training.clv_window_days == days


@pytest.mark.parametrize("spelled", ["3 months", "1.5y", "90 days", "-3w", "w"])
def test_a_window_spelled_otherwise_is_an_error_naming_the_key(tmp_path: Path, spelled: str) -> None:
    config = tmp_path / "windows.yaml"
    config.write_text(yaml.safe_dump({"training": {"churn_window_days": spelled}}), encoding="utf-8")

    with pytest.raises(CustlensError, match=r"training\.churn_window_days: .*not a window; write days .*39w"):
        load_settings(config)
