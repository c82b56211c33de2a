"""The business of the generated sample and of the hand-made test exports: a Vietnamese shop
(configs/sample.yaml). Nothing is assumed for a user's own data, so every test that ingests
naive timestamps says whose they are."""

from __future__ import annotations

from pathlib import Path

from custlens.settings import PROJECT_ROOT, BusinessSettings, Settings, load_settings

SAMPLE_CONFIG: Path = PROJECT_ROOT / "configs" / "sample.yaml"
SAMPLE_BUSINESS = BusinessSettings(timezone="Asia/Ho_Chi_Minh", currency="VND")


def sample_settings(**updates: object) -> Settings:
    """The project's settings for the generated sample, with some top-level values replaced."""
    return load_settings(SAMPLE_CONFIG).model_copy(update=updates)
