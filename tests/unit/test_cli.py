"""The command line: every command and sub-command has help and its documented options; user
errors (a bad config, a bad date, an unknown option, a value out of range) print one message and
exit 2, never a traceback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.testing import CliRunner, Result

from custlens.cli import app

runner = CliRunner()

# The commands the README documents, each with the options and arguments it documents. A command
# added to the CLI must be added here (and to the README): the walk below finds it either way.
DOCUMENTED: dict[tuple[str, ...], set[str]] = {
    ("generate",): {"--customers", "--seed", "--out", "--start", "--end", "--dirty-rate", "--format", "--config"},
    ("ingest",): {"--source", "--config"},
    ("kpis",): {"--from", "--to", "--by", "--format", "--rebuild", "--config"},
    ("features", "build"): {"--as-of", "--config"},
    ("features", "apply"): {"--config"},
    ("features", "materialize"): {"--as-of", "--full", "--config"},
    ("features", "online"): {"customer_ids", "--service", "--config"},
    ("train",): {"models", "--trials", "--timeout", "--config"},
    ("models",): {"--config"},
    ("promote",): {"model", "version", "--reason", "--config"},
    ("backtest",): {"--cutoff", "--horizon", "--format", "--baselines-only", "--trials", "--resamples", "--config"},
    ("score",): {"--as-of", "--sink", "--customers", "--config"},
    ("serve",): {"--host", "--port", "--workers", "--config"},
}
GROUPS = [(), ("features",)]


# Typer 0.29 builds on its own copy of click (typer._click): its classes, not click's, are checked.
Command = TyperCommand | TyperGroup


def walk(command: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every command under `command`, groups included, with the words that invoke it."""
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            assert isinstance(sub, TyperCommand | TyperGroup), f"{name}: {sub!r}"
            yield from walk(sub, (*path, name))


def root() -> TyperGroup:
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


ROOT = root()
EVERYTHING = dict(walk(ROOT))
COMMANDS = {path: command for path, command in EVERYTHING.items() if not isinstance(command, TyperGroup)}


def params(command: Command) -> dict[str, TyperOption | TyperArgument]:
    """An option by its long name (`--as-of`), an argument by its name (`customer_ids`)."""
    found: dict[str, TyperOption | TyperArgument] = {}
    for param in command.params:
        if isinstance(param, TyperOption):
            found[max(param.opts, key=len)] = param
        elif isinstance(param, TyperArgument):
            found[str(param.name)] = param
        else:
            raise AssertionError(f"{param!r} is neither a Typer option nor argument")
    return found


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def test_the_walk_finds_exactly_the_documented_commands() -> None:
    assert set(COMMANDS) == set(DOCUMENTED)
    assert [path for path, command in walk(ROOT) if isinstance(command, TyperGroup)] == GROUPS


@pytest.mark.parametrize("path", sorted(DOCUMENTED), ids=" ".join)
def test_every_command_has_help_and_its_documented_options(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    found = params(command)

    result = runner.invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert command.help and command.help.strip()
    assert DOCUMENTED[path] <= set(found), f"missing: {sorted(DOCUMENTED[path] - set(found))}"
    for name, param in found.items():
        assert param.help, f"{' '.join(path)} {name} has no help text"
        if name.startswith("--"):
            assert name in result.output, name


@pytest.mark.parametrize("path", GROUPS, ids=lambda path: " ".join(path) or "custlens")
def test_every_group_lists_its_commands_in_its_help(path: tuple[str, ...]) -> None:
    group = EVERYTHING[path]
    assert isinstance(group, TyperGroup)

    result = runner.invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert group.help and group.help.strip()
    for name in group.commands:
        assert name in result.output, name


@pytest.mark.parametrize("path", GROUPS, ids=lambda path: " ".join(path) or "custlens")
def test_a_group_without_a_command_shows_its_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, list(path))
    assert result.exit_code == 2
    assert "Usage:" in result.output and "Commands" in result.output
    no_traceback(result)


@pytest.mark.parametrize("path", [*sorted(DOCUMENTED), *GROUPS[1:]], ids=" ".join)
def test_an_unknown_option_is_a_clear_error_without_traceback(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option: --no-such-option" in result.output
    no_traceback(result)


def test_an_unknown_command_is_a_clear_error_without_traceback() -> None:
    result = runner.invoke(app, ["features", "delete"])
    assert result.exit_code == 2
    assert "No such command 'delete'" in result.output
    no_traceback(result)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["generate", "--customers", "0"], "Invalid value for '--customers'"),
        (["generate", "--dirty-rate", "0.9"], "Invalid value for '--dirty-rate'"),
        (["generate", "--format", "xlsx"], "Invalid value for '--format'"),
        (["kpis", "--format", "xml"], "Invalid value for '--format'"),
        (["train", "--trials", "0"], "Invalid value for '--trials'"),
        (["serve", "--port", "http"], "Invalid value for '--port'"),
        (["serve", "--workers", "0"], "Invalid value for '--workers'"),
        (["serve", "--port", "70000"], "Invalid value for '--port'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_value_of_the_wrong_type_or_range_is_a_clear_error(args: list[str], words: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert words in result.output
    no_traceback(result)


def test_bad_config_key_prints_message_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("ingset: {}\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "ingset: unknown key" in result.output
    no_traceback(result)


def test_serve_on_a_taken_port_is_one_line_not_a_traceback_after_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def start_bentoml(*_: object) -> None:
        raise AssertionError("BentoML was started (and would have replaced the test process)")

    monkeypatch.setattr(os, "execvpe", start_bentoml)
    # given a port something else listens on
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # when the service is asked to listen there (and on an address this machine does not have)
        result = runner.invoke(app, ["serve", "--host", "127.0.0.1", "--port", str(port)])
        bad_host = runner.invoke(app, ["serve", "--host", "999.1.1.1", "--port", str(port)])
    # then each is refused before BentoML starts, in one message
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in flat(result)
    assert bad_host.exit_code == 2 and "cannot listen on 999.1.1.1" in flat(bad_host)
    no_traceback(result)


def flat(result: Result) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(result.output.split())


def test_unparseable_date_option_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--customers", "10", "--end", "31/10/2026", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--end '31/10/2026' is not a date" in result.output
    no_traceback(result)


def test_version_prints_the_package_version() -> None:
    from custlens import __version__

    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0 and result.output.strip() == f"custlens {__version__}"
