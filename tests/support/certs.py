"""RSA keys and X.509 certificates made on the fly, for signing and TLS tests."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from celery import current_app
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kombu.serialization import registry


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written as PEM files."""

    cert: Path
    key: Path
    private: rsa.RSAPrivateKey
    certificate: x509.Certificate


def issue(
    directory: Path,
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    expired: bool = False,
    password: bytes | None = None,
) -> Issued:
    """A certificate for `name` (also its SAN, with 127.0.0.1), self-signed unless `issuer`."""
    directory.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=3), now - timedelta(days=1))
        if expired
        else (
            now - timedelta(minutes=5),
            now + timedelta(days=1),
        )
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(issuer.private if issuer else private, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return Issued(cert_path, key_path, private, certificate)


def signing_files(directory: Path, name: str = "producer") -> tuple[Issued, Path]:
    """A signing certificate and key, and a cert store directory that trusts it."""
    signer = issue(directory / "keys", name)
    store = directory / "trusted"
    store.mkdir(parents=True, exist_ok=True)
    (store / signer.cert.name).write_bytes(signer.cert.read_bytes())
    return signer, store


def signing_env(directory: Path) -> dict[str, str]:
    """CONVEYOR_SIGNING_* variables for a fresh key trusted by its own cert store."""
    signer, store = signing_files(directory)
    return {
        "CONVEYOR_SIGNING_KEY": str(signer.key),
        "CONVEYOR_SIGNING_CERT": str(signer.cert),
        "CONVEYOR_SIGNING_CERT_STORE": str(store),
    }


@contextmanager
def serializer_registry_restored() -> Iterator[None]:
    """Undo what Celery's setup_security does to kombu's process-wide serializer registry
    (the `auth` serializer becomes the default), and restore Celery's current app (create_app
    replaces it), so other tests in the process are unaffected."""
    saved = {k: copy.copy(v) for k, v in vars(registry).items()}
    app = current_app._get_current_object()
    try:
        yield
    finally:
        vars(registry).update(saved)
        app.set_current()
