"""The settings object: shipped configs load, typos are errors, the environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from custlens.errors import CustlensError
from custlens.settings import PROJECT_ROOT, load_settings

SHIPPED_CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


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
    # and the untouched nested values keep their YAML defaults
    assert settings.ingest.source_timezone == "Asia/Ho_Chi_Minh"


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
    config.write_text("ingest:\n  source_timezone: Mars/Olympus\n", encoding="utf-8")
    with pytest.raises(CustlensError, match=r"ingest\.source_timezone: .*unknown time zone"):
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
