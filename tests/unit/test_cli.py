"""The command line: user errors print one message and exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from custlens.cli import app

runner = CliRunner()


def test_bad_config_key_prints_message_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("ingset: {}\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "ingset: unknown key" in result.output
    assert "Traceback" not in result.output


def test_unparseable_date_option_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--customers", "10", "--end", "31/10/2026", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--end '31/10/2026' is not a date" in result.output


def test_every_command_accepts_config() -> None:
    for command in app.registered_commands:
        result = runner.invoke(app, [command.name or command.callback.__name__, "--help"])  # type: ignore[union-attr]
        assert "--config" in result.output
