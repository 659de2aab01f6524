"""Optional message signing with Celery's `auth` serializer (celery.security).

When a signing key is configured, every task, event and control message is signed with it
and only signed messages whose signer certificate is in the cert store are accepted. Unsigned
JSON, tampered bodies and pickle are refused before any agent code runs. Producers, workers,
beat and the exporter all build their app through `create_app`, so they all sign and verify.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import SecurityError
from pydantic import BaseModel, ConfigDict, SecretStr

SIGNED_SERIALIZER = "auth"
DIGESTS = ("sha256", "sha384", "sha512")
ENV = {
    "key": "CONVEYOR_SIGNING_KEY",
    "cert": "CONVEYOR_SIGNING_CERT",
    "cert_store": "CONVEYOR_SIGNING_CERT_STORE",
    "key_password": "CONVEYOR_SIGNING_KEY_PASSWORD",
}


class Signing(BaseModel):
    """A checked signing configuration: key and certificate files and the trusted certs."""

    model_config = ConfigDict(frozen=True)

    key: Path
    cert: Path
    cert_store: str
    """A directory or glob of the PEM certificates whose signatures are accepted."""
    key_password: SecretStr | None = None
    digest: str = "sha256"


def _read(field: str, path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"{ENV[field]}: cannot read {path}: {exc.strerror}") from None


def check_signing(
    key: Path | None,
    cert: Path | None,
    cert_store: str | None,
    key_password: SecretStr | None = None,
    digest: str = "sha256",
) -> Signing | None:
    """Validate the signing settings with Celery's own key and certificate classes.

    All of key, cert and cert store, or none. The key must decrypt and be the certificate's
    key, the certificate must not have expired, and it must be in the cert store, or the
    workers would refuse this process's own messages. Raises ValueError naming the setting.
    """
    given = {"key": key, "cert": cert, "cert_store": cert_store}
    if not any(given.values()):
        return None
    missing = [ENV[name] for name, value in given.items() if not value]
    if missing:
        raise ValueError(f"message signing also needs {', '.join(missing)}")
    assert key is not None and cert is not None and cert_store is not None
    if digest not in DIGESTS:
        raise ValueError(f"CONVEYOR_SIGNING_DIGEST: {digest!r} is not one of {', '.join(DIGESTS)}")

    try:
        from celery.security.certificate import Certificate, FSCertStore
        from celery.security.key import PrivateKey
        from celery.security.utils import get_digest_algorithm
    except ImportError:
        raise ValueError(
            "message signing needs the cryptography package: pip install 'conveyor[signing]'"
        ) from None

    password = key_password.get_secret_value() if key_password else None
    try:
        private = PrivateKey(_read("key", key), password=password)
    except (SecurityError, TypeError) as exc:
        raise ValueError(
            f"{ENV['key']}: {key} is not a usable RSA private key in PEM "
            f"(or {ENV['key_password']} is wrong): {exc}"
        ) from None
    try:
        certificate = Certificate(_read("cert", cert))
    except SecurityError as exc:
        raise ValueError(f"{ENV['cert']}: {cert} is not an RSA certificate in PEM: {exc}") from None
    if certificate.has_expired():
        raise ValueError(f"{ENV['cert']}: the certificate {cert} has expired")
    probe, algorithm = b"conveyor signing check", get_digest_algorithm(digest)
    try:
        certificate.verify(probe, private.sign(probe, algorithm), algorithm)
    except (SecurityError, TypeError):  # Celery 5.7's reraise_errors turns a bad one to TypeError
        raise ValueError(f"{ENV['key']}: {key} is not the key of the certificate {cert}") from None
    store_glob = os.path.join(cert_store, "*") if os.path.isdir(cert_store) else cert_store
    if not glob.glob(store_glob):
        raise ValueError(f"{ENV['cert_store']}: no certificate files match {cert_store}")
    try:
        store = FSCertStore(cert_store)
    except SecurityError as exc:
        raise ValueError(f"{ENV['cert_store']}: {exc}") from None
    try:
        store[certificate.get_id()]
    except SecurityError:
        raise ValueError(
            f"{ENV['cert_store']}: the signing certificate {cert} is not in {cert_store}, so "
            "workers would refuse this process's own messages"
        ) from None
    return Signing(
        key=key, cert=cert, cert_store=cert_store, key_password=key_password, digest=digest
    )


def signing_config(signing: Signing | None) -> dict[str, Any]:
    """The Celery settings that make tasks, events and control messages signed-only."""
    if signing is None:
        return {}
    return {
        "task_serializer": SIGNED_SERIALIZER,
        "event_serializer": SIGNED_SERIALIZER,
        "accept_content": [SIGNED_SERIALIZER],
        "security_key": str(signing.key),
        "security_certificate": str(signing.cert),
        "security_cert_store": signing.cert_store,
        "security_digest": signing.digest,
        "security_key_password": (
            signing.key_password.get_secret_value().encode() if signing.key_password else None
        ),
    }


def enable_signing(app: Celery, signing: Signing | None) -> None:
    """Register the `auth` serializer for `app` (Celery's `setup_security`).

    JSON stays enabled in kombu's process-wide registry, for results and for other apps in
    the same process; what protects a worker is its `accept_content` of only `auth`.
    """
    if signing is not None:
        app.setup_security(allowed_serializers={"json"}, digest=signing.digest)
