"""The `conveyor` command: help texts, and arguments refused before any app is built."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner, Result

from conveyor.cli import cli
from conveyor.config import load_settings
from conveyor.errors import ConveyorError


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def resolve(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMANDS = list(command_paths(cli))


@pytest.fixture(autouse=True)
def no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the app would start or reach services; here it fails with a known error."""

    def refuse() -> None:
        raise ConveyorError("unit: the app was built")

    monkeypatch.setattr("conveyor.cli.common.build_app", refuse)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_every_command_is_covered() -> None:
    assert {p[0] for p in COMMANDS if p} == {
        "autoscale",
        "beat",
        "broker",
        "cancel",
        "db",
        "demo",
        "dlq",
        "down",
        "exporter",
        "flower",
        "health",
        "report",
        "runs",
        "status",
        "submit",
        "up",
        "worker",
    }
    assert ("db", "upgrade") in COMMANDS
    assert ("db", "current") in COMMANDS
    assert ("broker", "migrate") in COMMANDS
    for action in ("list", "show", "replay", "purge"):
        assert ("dlq", action) in COMMANDS
    for check in ("worker", "broker", "database", "exporter", "flower"):
        assert ("health", check) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "conveyor")
def test_help_exits_0_and_mentions_every_option(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    command = resolve(path)
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                assert opt in result.output, f"{opt} missing from `{' '.join(path)} --help`"
    assert "unit: the app was built" not in result.output


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_short_and_long_help(flag: str) -> None:
    result = invoke(flag)
    assert result.exit_code == 0
    for name in ("submit", "runs", "worker", "up", "down"):
        assert name in result.output


def test_submit_refuses_text_that_is_not_json() -> None:
    result = invoke("submit", "conveyor.ping", "not json")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output
    assert "unit: the app was built" not in result.output


@pytest.mark.parametrize(("payload", "kind"), [("[1]", "list"), ('"text"', "str"), ("3", "int")])
def test_submit_refuses_json_that_is_not_an_object(payload: str, kind: str) -> None:
    result = invoke("submit", "conveyor.ping", payload)
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output
    assert kind in result.output


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_runs_refuses_an_unparseable_time(option: str) -> None:
    result = invoke("runs", option, "yesterday")
    assert result.exit_code == 2
    assert "'yesterday'" in result.output
    assert "ISO 8601" in result.output
    assert "15m" in result.output  # says what is accepted


@pytest.mark.parametrize(
    "value", ["15m", "2h", "7d", "30s", "2024-05-01", "2024-05-01T12:00:00+02:00"]
)
def test_runs_accepts_ages_and_iso_times(value: str) -> None:
    """A valid time gets past parsing to building the app, which fails here on purpose."""
    result = invoke("runs", "--since", value)
    assert result.exit_code == 1
    assert "conveyor: unit: the app was built" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("submit", "conveyor.ping", "{}", "--priority", "10"),
        ("submit", "conveyor.ping", "{}", "--timeout", "-1"),
        ("runs", "--limit", "0"),
        ("runs", "--status", "exploded"),
        ("worker", "--concurrency", "0"),
        ("worker", "--concurrency", "10001"),
    ],
)
def test_out_of_range_options_exit_2(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert "unit: the app was built" not in result.output


def test_a_conveyor_error_is_one_line_and_exit_1() -> None:
    result = invoke("submit", "conveyor.ping", '{"x": 1}')
    assert result.exit_code == 1
    assert result.output.strip() == "conveyor: unit: the app was built"


@pytest.mark.parametrize(("pool", "ok"), [("default", False), ("io", True)])
def test_worker_concurrency_above_512_only_for_an_asyncio_pool(
    monkeypatch: pytest.MonkeyPatch, pool: str, ok: bool
) -> None:
    settings = load_settings(broker_url="redis://x", database_url="postgresql://x/y")
    started: list[tuple[str, object]] = []
    monkeypatch.setattr("conveyor.cli.services.get_app", lambda: SimpleNamespace(settings=settings))
    monkeypatch.setattr(
        "conveyor.cli.services.run_worker",
        lambda app, pool, **options: started.append((pool, options["concurrency"])),
    )
    result = invoke("worker", "--pool", pool, "--concurrency", "600")
    if ok:
        assert result.exit_code == 0 and started == [(pool, 600)]
    else:
        assert result.exit_code == 2 and not started
        assert "600 is above 512 for pool 'default' of kind prefork" in result.output
