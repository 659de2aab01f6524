"""Security settings: message signing, TLS verification, and passwords masked in logs."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.worker.request import Request
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import dumps, loads

from conveyor.config import load_settings
from conveyor.errors import ConfigError
from conveyor.redaction import RedactSecrets, install_redaction, mask_secrets
from conveyor.runs.records import NewRun, Outcome
from conveyor.runs.status import RunStatus
from conveyor.services import cache_client
from conveyor.tls import TLS, database_url_with_tls
from conveyor.workers.task import AgentRequest
from tests.support.certs import issue, serializer_registry_restored, signing_env, signing_files
from tests.unit.support import FAKE_AMQP, build_app

SIGNED_TYPE = "application/data"


@pytest.fixture(autouse=True)
def _restored_serializers() -> Iterator[None]:
    with serializer_registry_restored():
        yield


def settings_error(**values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    return str(caught.value)


def signing_settings(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("CONVEYOR_").lower(): v for k, v in env.items()}


# -- signing: settings ---------------------------------------------------------------------


def test_signing_is_off_by_default() -> None:
    assert load_settings().signing is None


def test_signing_settings_are_checked_and_kept(tmp_path: Path) -> None:
    settings = load_settings(**signing_settings(signing_env(tmp_path)))
    assert settings.signing is not None
    assert settings.signing.digest == "sha256"
    assert settings.signing.key.is_file()


@pytest.mark.parametrize("missing", ["signing_cert", "signing_cert_store", "signing_key"])
def test_signing_needs_all_three_files(tmp_path: Path, missing: str) -> None:
    values = signing_settings(signing_env(tmp_path))
    del values[missing]
    message = settings_error(**values)
    assert f"CONVEYOR_{missing.upper()}" in message
    assert "signing also needs" in message


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    values = signing_settings(signing_env(tmp_path)) | {"signing_key": str(tmp_path / "nope")}
    message = settings_error(**values)
    assert "CONVEYOR_SIGNING_KEY" in message
    assert "nope" in message


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    other = issue(tmp_path / "other", "other")
    values = signing_settings(signing_env(tmp_path)) | {"signing_key": str(other.key)}
    assert "is not the key of the certificate" in settings_error(**values)


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    signer = issue(tmp_path / "keys", "locked", password=b"correct horse")
    values = {
        "signing_key": str(signer.key),
        "signing_cert": str(signer.cert),
        "signing_cert_store": str(signer.cert),
    }
    assert "CONVEYOR_SIGNING_KEY_PASSWORD" in settings_error(**values)
    wrong = settings_error(**values, signing_key_password="wrong horse")
    assert "CONVEYOR_SIGNING_KEY_PASSWORD" in wrong
    assert "wrong horse" not in wrong
    assert load_settings(**values, signing_key_password="correct horse").signing is not None


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    signer = issue(tmp_path / "keys", "old", expired=True)
    values = {
        "signing_key": str(signer.key),
        "signing_cert": str(signer.cert),
        "signing_cert_store": str(signer.cert),
    }
    assert "CONVEYOR_SIGNING_CERT" in settings_error(**values)
    assert "expired" in settings_error(**values)


def test_the_signer_must_be_in_the_cert_store(tmp_path: Path) -> None:
    values = signing_settings(signing_env(tmp_path))
    stranger, _ = signing_files(tmp_path / "elsewhere", "stranger")
    values["signing_cert_store"] = str(stranger.cert)
    message = settings_error(**values)
    assert "CONVEYOR_SIGNING_CERT_STORE" in message
    assert "is not in" in message


def test_an_empty_cert_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    values = signing_settings(signing_env(tmp_path)) | {
        "signing_cert_store": str(tmp_path / "empty")
    }
    assert "no certificate files match" in settings_error(**values)


def test_an_unknown_digest_is_refused(tmp_path: Path) -> None:
    values = signing_settings(signing_env(tmp_path)) | {"signing_digest": "md5"}
    assert "CONVEYOR_SIGNING_DIGEST" in settings_error(**values)


# -- signing: the app ----------------------------------------------------------------------


def test_a_signing_app_signs_and_accepts_only_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch, **signing_settings(signing_env(tmp_path)))
    conf = app.conf
    assert (conf.task_serializer, conf.event_serializer) == ("auth", "auth")
    assert conf.accept_content == ["auth"]
    assert conf.result_serializer == "json"
    content_type, encoding, body = dumps({"a": 1}, serializer="auth")
    assert content_type == SIGNED_TYPE
    assert loads(body, content_type, encoding, accept=[SIGNED_TYPE]) == {"a": 1}


def test_a_tampered_or_unsigned_message_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_app(tmp_path, monkeypatch, **signing_settings(signing_env(tmp_path)))
    content_type, encoding, body = dumps({"a": 1}, serializer="auth")
    from celery.utils.serialization import b64decode, b64encode

    tampered = b64encode(b64decode(body).replace(b'{"a": 1}', b'{"a": 2}'))
    assert tampered != body
    with pytest.raises(DecodeError, match="Unable to deserialize"):
        loads(tampered, content_type, encoding, accept=[SIGNED_TYPE])
    with pytest.raises(ContentDisallowed):
        loads(b'{"a": 2}', "application/json", "utf-8", accept=[SIGNED_TYPE])


def test_a_message_signed_by_an_untrusted_key_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intruder = signing_env(tmp_path / "intruder")
    build_app(tmp_path, monkeypatch, **signing_settings(intruder))
    content_type, encoding, forged = dumps({"a": 1}, serializer="auth")
    build_app(tmp_path, monkeypatch, **signing_settings(signing_env(tmp_path / "ours")))
    with pytest.raises(DecodeError, match="Unknown certificate"):
        loads(forged, content_type, encoding, accept=[SIGNED_TYPE])


def test_without_signing_the_app_stays_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch)
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    return issue(tmp_path / "tls", "test-ca", ca=True).cert


def test_rediss_is_verified_against_the_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: Path
) -> None:
    url = "rediss://:pw@redis.example:6380/0"
    app = build_app(tmp_path, monkeypatch, broker_url=url, tls_ca=str(ca))
    for key in ("broker_use_ssl", "redis_backend_use_ssl"):
        options = app.conf[key]
        assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert options["ssl_ca_certs"] == str(ca)


def test_rediss_without_a_ca_uses_the_trust_store_and_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, monkeypatch, broker_url="rediss://redis.example:6380/0")
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_amqps_gets_pyamqp_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: Path
) -> None:
    pair = issue(tmp_path / "tls", "client")
    app = build_app(
        tmp_path,
        monkeypatch,
        broker_url=FAKE_AMQP.replace("amqp://", "amqps://"),
        tls_ca=str(ca),
        tls_cert=str(pair.cert),
        tls_key=str(pair.key),
    )
    assert app.conf.broker_use_ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": str(ca),
        "certfile": str(pair.cert),
        "keyfile": str(pair.key),
    }


def test_plain_urls_get_no_tls_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(tmp_path, monkeypatch)
    assert not app.conf.broker_use_ssl
    assert not app.conf.redis_backend_use_ssl


@pytest.mark.parametrize("reqs", ["none", "CERT_NONE", "optional"])
def test_rediss_without_verification_is_refused(reqs: str) -> None:
    message = settings_error(broker_url=f"rediss://h:6380/0?ssl_cert_reqs={reqs}")
    assert "CONVEYOR_BROKER_URL" in message
    assert "CONVEYOR_TLS_INSECURE" in message


@pytest.mark.parametrize("mode", ["require", "prefer", "allow"])
def test_unverified_postgres_tls_is_refused(mode: str) -> None:
    message = settings_error(database_url=f"postgresql://u@db/x?sslmode={mode}")
    assert "CONVEYOR_DATABASE_URL" in message
    assert f"sslmode={mode}" in message
    assert "verify-full" in message


def test_verified_postgres_tls_needs_a_ca() -> None:
    message = settings_error(database_url="postgresql://u@db/x?sslmode=verify-full")
    assert "CONVEYOR_TLS_CA" in message
    url = "postgresql://u@db/x?sslmode=verify-full&sslrootcert=system"
    assert load_settings(database_url=url).database_url is not None


def test_the_ca_and_client_cert_join_a_verifying_database_url(tmp_path: Path, ca: Path) -> None:
    pair = issue(tmp_path / "tls", "client")
    tls = TLS(ca=ca, cert=pair.cert, key=pair.key)
    url = database_url_with_tls(tls, "postgresql+psycopg://u@db/x?sslmode=verify-full")
    assert url is not None
    assert f"sslrootcert={str(ca).replace('/', '%2F')}" in url
    assert "sslcert=" in url and "sslkey=" in url
    plain = "postgresql+psycopg://u@db/x"
    assert database_url_with_tls(tls, plain) == plain


def test_the_app_engine_url_carries_the_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: Path
) -> None:
    url = "postgresql://u@127.0.0.1:1/x?sslmode=verify-ca"
    app = build_app(tmp_path, monkeypatch, database_url=url, tls_ca=str(ca))
    assert app.settings.database_url is not None
    assert "sslrootcert=" in app.settings.database_url


def test_insecure_tls_is_allowed_only_explicitly_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = "rediss://h:6380/0?ssl_cert_reqs=none"
    with caplog.at_level(logging.WARNING, logger="conveyor.tls"):
        app = build_app(tmp_path, monkeypatch, broker_url=url, tls_insecure="true")
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_NONE
    assert "NOT verified" in caplog.text


@pytest.mark.parametrize("name", ["tls_ca", "tls_cert", "tls_key"])
def test_tls_files_must_exist(tmp_path: Path, name: str) -> None:
    message = settings_error(**{name: str(tmp_path / "missing.pem")})
    assert f"CONVEYOR_{name.upper()}" in message


def test_client_cert_and_key_go_together(ca: Path) -> None:
    assert "go together" in settings_error(tls_cert=str(ca))


def test_the_cache_client_verifies_rediss(ca: Path) -> None:
    client = cache_client("rediss://cache.example:6380/0", TLS(ca=ca))
    assert client is not None
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_ca_certs"] == str(ca)
    plain = cache_client("redis://cache.example:6379/0", TLS(ca=ca))
    assert plain is not None
    assert "ssl_cert_reqs" not in plain.connection_pool.connection_kwargs


# -- secrets in logs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "redis://:s3cret@h:6379/0",
        "rediss://default:s3cret@h:6380/0",
        "postgresql+psycopg://u:s3cret@db:5432/x",
        "amqp://guest:s3cret@rabbit:5672//",
        "http://admin:s3cret@rabbit:15672/api",
        "host=db user=u password=s3cret dbname=x",
        "connect to redis://u:s3cret@a and amqp://v:s3cret@b failed",
    ],
)
def test_passwords_are_masked(text: str) -> None:
    masked = mask_secrets(text)
    assert "s3cret" not in masked
    assert "**" in masked


def test_urls_without_passwords_are_untouched() -> None:
    for text in ("redis://h:6379/0", "postgresql://u@db/x", "see https://docs.example/a:b"):
        assert mask_secrets(text) == text


def test_the_filter_masks_arguments_and_tracebacks() -> None:
    logger = logging.getLogger("unit.redaction")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    try:
        logger.warning("broker %s is down", "redis://:s3cret@h/0")
        try:
            raise ConnectionError("cannot reach amqp://u:s3cret@rabbit//")
        except ConnectionError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == "broker redis://:**@h/0 is down"
    assert records[1].exc_text is not None
    assert "s3cret" not in records[1].exc_text
    assert "amqp://u:**@rabbit//" in records[1].exc_text


def test_install_redaction_filters_each_handler_once() -> None:
    logger = logging.getLogger("unit.redaction.install")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        install_redaction(logger)
        install_redaction(logger)
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)


def test_recorded_errors_never_keep_a_password() -> None:
    outcome = Outcome(
        run=NewRun(id="r1", agent="a", pool="default"),
        status=RunStatus.FAILED,
        error_message="cannot reach redis://:s3cret@cache:6379",
        error_traceback="Traceback ...\nConnectionError: amqp://u:s3cret@rabbit//",
    )
    assert outcome.error_message == "cannot reach redis://:**@cache:6379"
    assert outcome.error_traceback is not None
    assert "s3cret" not in outcome.error_traceback


def test_failure_events_never_carry_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def capture(self: Request, type: str, **fields: Any) -> None:
        sent.append((type, fields))

    monkeypatch.setattr(Request, "send_event", capture)
    request = AgentRequest.__new__(AgentRequest)
    request.send_event(
        "task-failed",
        exception="ValueError('postgresql://u:s3cret@db/x')",
        traceback="File ...\nValueError: postgresql://u:s3cret@db/x",
    )
    [(kind, fields)] = sent
    assert kind == "task-failed"
    assert fields["exception"] == "ValueError('postgresql://u:**@db/x')"
    assert "s3cret" not in fields["traceback"]
