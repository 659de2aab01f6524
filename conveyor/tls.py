"""TLS to Redis, RabbitMQ and PostgreSQL: certificate verification unless explicitly relaxed.

A `rediss://` or `amqps://` URL is verified against CONVEYOR_TLS_CA (else the system trust
store) with `ssl.CERT_REQUIRED`; a PostgreSQL URL asking for TLS must ask for
`sslmode=verify-full` or `verify-ca`. Anything weaker is a ConfigError, unless
CONVEYOR_TLS_INSECURE=true, which is logged as a warning at every start.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)
VERIFIED_SSLMODES = ("verify-ca", "verify-full")
UNVERIFIED_SSLMODES = ("allow", "prefer", "require")
UNVERIFIED_CERT_REQS = ("none", "optional", "cert_none", "cert_optional")
INSECURE = "CONVEYOR_TLS_INSECURE"


class TLS(BaseModel):
    """Where to find the CA and the client certificate, and whether verification is off."""

    model_config = ConfigDict(frozen=True)

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    @property
    def cert_reqs(self) -> ssl.VerifyMode:
        return ssl.CERT_NONE if self.insecure else ssl.CERT_REQUIRED


def _query(url: str) -> dict[str, str]:
    return {k.lower(): v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _scheme(url: str | None) -> str:
    return urlsplit(url).scheme.lower() if url else ""


def check_tls(tls: TLS, urls: dict[str, str | None]) -> None:
    """Refuse TLS settings that would not verify the server. `urls` maps setting -> URL.

    Raises ValueError naming the setting and the way out.
    """
    for name, path in (("CA", tls.ca), ("CERT", tls.cert), ("KEY", tls.key)):
        if path is not None and not path.is_file():
            raise ValueError(f"CONVEYOR_TLS_{name}: {path} is not a readable file")
    if (tls.cert is None) != (tls.key is None):
        raise ValueError("CONVEYOR_TLS_CERT and CONVEYOR_TLS_KEY go together (mutual TLS)")
    if tls.insecure:
        return
    for setting, url in urls.items():
        if url is None:
            continue
        query = _query(url)
        if _scheme(url) == "rediss" and query.get("ssl_cert_reqs", "required").lower() in (
            UNVERIFIED_CERT_REQS
        ):
            raise ValueError(
                f"{setting}: ssl_cert_reqs={query['ssl_cert_reqs']} does not verify the "
                f"server; remove it (CERT_REQUIRED is the default) or set {INSECURE}=true"
            )
        if _scheme(url).startswith("postgres"):
            sslmode = query.get("sslmode", "")
            if sslmode in UNVERIFIED_SSLMODES:
                raise ValueError(
                    f"{setting}: sslmode={sslmode} does not verify the server; use "
                    f"sslmode=verify-full (or verify-ca) or set {INSECURE}=true"
                )
            if sslmode in VERIFIED_SSLMODES and tls.ca is None and "sslrootcert" not in query:
                raise ValueError(
                    f"{setting}: sslmode={sslmode} needs a CA: set CONVEYOR_TLS_CA, or "
                    "sslrootcert=<file> (or sslrootcert=system) in the URL"
                )


def warn_if_insecure(tls: TLS, urls: dict[str, str | None]) -> None:
    """Say loudly, at start-up, that server certificates are not verified."""
    uses_tls = any(
        _scheme(u) in ("rediss", "amqps") or "sslmode" in _query(u or "") for u in urls.values()
    )
    if tls.insecure and uses_tls:
        log.warning("%s=true: TLS server certificates are NOT verified", INSECURE)


def amqp_ssl(tls: TLS) -> dict[str, Any]:
    """py-amqp's SSL options, for broker_use_ssl with an amqps:// broker."""
    options: dict[str, Any] = {"cert_reqs": tls.cert_reqs}
    if tls.ca is not None:
        options["ca_certs"] = str(tls.ca)
    if tls.cert is not None and tls.key is not None:
        options |= {"certfile": str(tls.cert), "keyfile": str(tls.key)}
    return options


def redis_ssl(tls: TLS) -> dict[str, Any]:
    """redis-py's SSL options (py-amqp's, prefixed `ssl_`): Celery's broker_use_ssl and
    redis_backend_use_ssl, and the cache client."""
    return {f"ssl_{key}": value for key, value in amqp_ssl(tls).items()}


def tls_celery_config(
    tls: TLS, broker_url: str | None, result_backend: str | None
) -> dict[str, Any]:
    """broker_use_ssl and redis_backend_use_ssl for the TLS URLs among broker and results."""
    config: dict[str, Any] = {}
    broker = _scheme(broker_url)
    if broker == "rediss":
        config["broker_use_ssl"] = redis_ssl(tls)
    elif broker == "amqps":
        config["broker_use_ssl"] = amqp_ssl(tls)
    if _scheme(result_backend) == "rediss":
        config["redis_backend_use_ssl"] = redis_ssl(tls)
    return config


def cache_ssl(tls: TLS, cache_url: str | None) -> dict[str, Any]:
    """Keyword arguments for the Redis cache client: SSL options for a rediss:// URL."""
    return redis_ssl(tls) if _scheme(cache_url) == "rediss" else {}


def database_url_with_tls(tls: TLS, url: str | None) -> str | None:
    """The database URL with the CA and client certificate as libpq parameters, for a URL
    that verifies the server and names no sslrootcert of its own."""
    query = _query(url or "")
    if url is None or query.get("sslmode") not in VERIFIED_SSLMODES:
        return url
    extra = {}
    if tls.ca is not None and "sslrootcert" not in query:
        extra["sslrootcert"] = str(tls.ca)
    if tls.cert is not None and tls.key is not None and "sslcert" not in query:
        extra |= {"sslcert": str(tls.cert), "sslkey": str(tls.key)}
    if not extra:
        return url
    parts = urlsplit(url)
    joined = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(query=joined))
