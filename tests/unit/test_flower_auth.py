"""CONVEYOR_FLOWER_BASIC_AUTH: validated without echoing a password; required outside embedded."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conveyor.cli import cli
from conveyor.cli.flower import check_access, flower_argv
from conveyor.config import load_settings
from conveyor.errors import ConfigError
from tests.unit.support import FAKE_BROKER, FAKE_DATABASE


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("ops", "entry 1 of 1 is not user:password"),
        (":longenough1", "entry 1 of 1 is not user:password"),
        ("ops:s3cret!", "entry 1 of 1 has a password shorter than 8 characters"),
        ("ops:longenough1,", "entry 2 of 2 is not user:password"),
        ("ops:longenough1,dev:s3cret!", "entry 2 of 2 has a password shorter than 8 characters"),
    ],
)
def test_bad_values_name_the_setting_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("CONVEYOR_FLOWER_BASIC_AUTH", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting CONVEYOR_FLOWER_BASIC_AUTH: {problem}")
    assert "s3cret" not in message and "longenough" not in message


def test_entries_are_trimmed_and_the_secret_is_masked() -> None:
    settings = load_settings(flower_basic_auth=" ops:pa:ss word1 , dev:12345678 ")
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == "ops:pa:ss word1,dev:12345678"
    assert "12345678" not in repr(settings) and "12345678" not in str(settings.model_dump())


def test_there_is_no_default() -> None:
    assert load_settings().flower_basic_auth is None


@pytest.mark.parametrize("urls", [{"broker_url": FAKE_BROKER}, {"database_url": FAKE_DATABASE}])
def test_auth_is_required_when_any_service_url_is_set(urls: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^CONVEYOR_FLOWER_BASIC_AUTH is not set; "):
        check_access(load_settings(**urls), "127.0.0.1")
    check_access(load_settings(**urls, flower_basic_auth="ops:12345678"), "0.0.0.0")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_embedded_mode_runs_without_auth_on_loopback(address: str) -> None:
    check_access(load_settings(), address)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "flower.example.com"])
def test_embedded_mode_without_auth_refuses_other_addresses(address: str) -> None:
    with pytest.raises(ConfigError, match="listens only on loopback"):
        check_access(load_settings(), address)


def test_flower_gets_the_options_and_the_credentials() -> None:
    settings = load_settings(flower_basic_auth="ops:12345678,dev:abcdefgh")
    assert flower_argv(settings, 5600, "0.0.0.0", "/ops/flower/") == [
        "--port=5600",
        "--address=0.0.0.0",
        "--url_prefix=ops/flower",
        "--basic_auth=ops:12345678,dev:abcdefgh",
    ]
    assert flower_argv(load_settings(), 5555, "127.0.0.1", None) == [
        "--port=5555",
        "--address=127.0.0.1",
    ]


def test_the_command_refuses_before_building_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the app was built")

    monkeypatch.setattr("conveyor.cli.common.build_app", refuse)
    monkeypatch.setenv("CONVEYOR_BROKER_URL", FAKE_BROKER)
    result = CliRunner().invoke(cli, ["flower"])
    assert result.exit_code == 1
    assert result.output.startswith("conveyor: CONVEYOR_FLOWER_BASIC_AUTH is not set;")
    assert result.output.count("\n") == 1
