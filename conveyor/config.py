"""Settings from CONVEYOR_* environment variables, validated once at start-up: the core ones
(`Settings`) and the helpers with which each feature loads its own (`settings_section`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.errors import ConfigError
from conveyor.pools import BUILTIN_POOLS, Pool
from conveyor.signing import Signing, check_signing
from conveyor.tls import TLS, check_tls

ENV_PREFIX = "CONVEYOR_"
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp")
DATABASE_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MIN_FLOWER_PASSWORD = 8
MAX_BEAT_INTERVAL = 366 * 86400
S = TypeVar("S", bound=BaseSettings)


def parse_json_setting(value: Any, *, blank_is_empty: bool = True) -> Any:
    """JSON text from the environment as data (blank text as `{}`, unless not allowed);
    anything else as is. Bad JSON is a ValueError naming where it breaks."""
    if not isinstance(value, str):
        return value
    if blank_is_empty and not value.strip():
        return {}
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from exc


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def is_redis_url(url: str | None) -> bool:
    """Whether `url` is Redis (redis://, rediss://, redis+socket://): the one place that
    answers "is the broker Redis?"."""
    return url is not None and _scheme(url).startswith("redis")


class Settings(BaseSettings):
    """Everything conveyor reads from the environment. Unset URLs mean the embedded default."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    broker_url: str | None = None
    database_url: str | None = None
    result_backend: str | None = None
    data_dir: Path = Path(".conveyor")
    agent_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    load_plugins: bool = True
    """Load the agents of installed plugins (the `conveyor.agents` entry points)."""
    queue_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,40}$")
    visibility_timeout: int = Field(default=3600, ge=1)
    soft_time_limit: float = Field(default=240.0, gt=0)
    time_limit: float = Field(default=300.0, gt=0)
    legacy_sweep_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How often a Redis worker moves messages that producers of an earlier conveyor still
    publish under its old key scheme (see `conveyor broker migrate`)."""
    record_retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    """How long a worker retries recording a run while PostgreSQL is unreachable; then the
    message goes back to the broker unacknowledged (never acked unrecorded)."""
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    """How long a warm shutdown of an asyncio worker waits for its runs in flight; then the
    rest are cancelled and handed back to the broker, still `started`, to run again. Keep it
    below the pod's terminationGracePeriodSeconds."""
    loop_stall_seconds: float = Field(default=1.0, ge=0, le=3600)
    """An asyncio worker warns (and sends a `worker-loop-stall` event) when its event loop
    is this late to run a callback: a blocking call in async code. 0 turns the check off."""
    pools: Annotated[dict[str, Pool], NoDecode] = Field(default_factory=lambda: dict(BUILTIN_POOLS))
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    cache_url: str | None = None
    """Redis for caches; unset means the broker when it is Redis, else no cache."""
    cache_ttl: float = Field(default=60.0, ge=0)
    flower_basic_auth: SecretStr | None = None
    """`user:password[,user2:password2]` for `conveyor flower`; required outside embedded mode."""
    rabbitmq_management_url: str | None = None
    """RabbitMQ management API (http://user:password@host:15672/): unacked counts and ages."""
    exporter_token: str | None = Field(default=None, min_length=16)
    """Bearer token the exporter requires on /metrics and /scale; unset means open."""
    beat_schedule: Annotated[dict[str, float | None], NoDecode] = Field(default_factory=dict)
    """Seconds between runs per agent, JSON, over beat's defaults; 0 or null disables one."""
    beat_lock_retry_seconds: float = Field(default=1.0, gt=0, le=60)
    """How often a standby `conveyor beat` tries to take the leader lock."""
    signing_key: Path | None = None
    """PEM RSA private key: every message is signed (Celery's `auth` serializer) and only
    signed ones are accepted. Needs signing_cert and signing_cert_store; docs/security.md."""
    signing_key_password: SecretStr | None = None
    signing_cert: Path | None = None
    signing_cert_store: str | None = None
    """Directory or glob of the PEM certificates whose signatures are accepted."""
    signing_digest: str = "sha256"
    tls_ca: Path | None = None
    """CA bundle that verifies rediss://, amqps:// and PostgreSQL sslmode=verify-* servers."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False
    """Skip TLS server verification (logged as a warning); never in production."""
    max_deliveries: int = Field(default=3, ge=1, le=100)
    """Deliveries of one attempt (a worker died running it) before the run is dead-lettered."""
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """A task message whose body is larger is dead-lettered (too_large) without running. The
    default admits the largest vector search (1000 queries of 4096 dims, ~22 MB)."""
    blob_ttl: int = Field(default=3600, ge=0, le=7 * 86400)
    """Seconds a large vector search batch (64 KiB of queries or more) may wait in the
    broker's Redis beside its message for a worker to read it; 0 keeps every batch inside
    its message. A run that starts later fails with an error saying so."""
    _signing: Signing | None = PrivateAttr(default=None)
    _embedded: bool = PrivateAttr(default=False)

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value is not None and _scheme(value) not in BROKER_SCHEMES:
            supported = ", ".join(BROKER_SCHEMES)
            raise ValueError(f"scheme {_scheme(value)!r} is not supported; use one of {supported}")
        return value

    @field_validator("cache_url")
    @classmethod
    def _check_cache(cls, value: str | None) -> str | None:
        if value is not None and not is_redis_url(value):
            raise ValueError(f"scheme {_scheme(value)!r} is not Redis; use redis://")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _scheme(value) not in DATABASE_SCHEMES:
            raise ValueError(f"scheme {_scheme(value)!r} is not PostgreSQL; use postgresql://")
        return "postgresql+psycopg://" + value.split("://", 1)[1]

    @field_validator("flower_basic_auth")
    @classmethod
    def _check_flower_auth(cls, value: SecretStr | None) -> SecretStr | None:
        """Every entry is user:password with a password of 8+ characters; never echoed."""
        if value is None:
            return None
        if not value.get_secret_value().strip():
            raise ValueError("is empty; unset it or give user:password[,user2:password2]")
        entries = [e.strip() for e in value.get_secret_value().split(",")]
        for number, entry in enumerate(entries, 1):
            user, colon, password = entry.partition(":")
            where = f"entry {number} of {len(entries)}"
            if not colon or not user.strip():
                raise ValueError(f"{where} is not user:password (entries are comma-separated)")
            if len(password) < MIN_FLOWER_PASSWORD:
                raise ValueError(
                    f"{where} has a password shorter than {MIN_FLOWER_PASSWORD} characters"
                )
        return SecretStr(",".join(entries))

    @field_validator("agent_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        for module in value:
            if not _MODULE_NAME.match(module):
                raise ValueError(f"{module!r} is not a dotted module name")
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _merge_pools(cls, value: Any) -> Any:
        """Overlay user pools (a JSON object of name -> settings) on the built-in ones."""
        value = parse_json_setting(value, blank_is_empty=False)
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object of pool name -> pool settings")
        merged: dict[str, Any] = {n: p.model_dump() for n, p in BUILTIN_POOLS.items()}
        for name, overrides in value.items():
            if isinstance(overrides, Pool):
                overrides = overrides.model_dump()
            if not isinstance(overrides, dict):
                raise ValueError(f"pool {name!r} must be an object of settings")
            merged[name] = {**merged.get(name, {}), **overrides, "name": name}
        return merged

    @field_validator("beat_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        """A JSON object of agent name -> seconds (> 0), or 0 / null to disable the entry."""
        value = parse_json_setting(value)
        if not isinstance(value, dict):
            raise ValueError(
                'must be a JSON object of agent name -> seconds: {"memory.sweep": 300}'
            )
        for name, seconds in value.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"entry {name!r}: the name must be an agent name")
            number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
            if seconds is not None and not (number and 0 <= seconds <= MAX_BEAT_INTERVAL):
                raise ValueError(
                    f"entry {name!r}: {seconds!r} is not seconds in 0..{MAX_BEAT_INTERVAL} "
                    "(0 or null disables it)"
                )
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(
                f"CONVEYOR_SOFT_TIME_LIMIT ({self.soft_time_limit}) must be below "
                f"CONVEYOR_TIME_LIMIT ({self.time_limit})"
            )
        return self

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        self._signing = check_signing(
            self.signing_key,
            self.signing_cert,
            self.signing_cert_store,
            self.signing_key_password,
            self.signing_digest,
        )
        check_tls(self.tls, self.service_urls)
        return self

    @property
    def signing(self) -> Signing | None:
        """The checked signing configuration, or None when messages are not signed."""
        return self._signing

    @property
    def tls(self) -> TLS:
        return TLS(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, insecure=self.tls_insecure)

    @property
    def service_urls(self) -> dict[str, str | None]:
        """The URLs of the services, by their setting's name."""
        return {
            f"{ENV_PREFIX}{name.upper()}": getattr(self, name)
            for name in ("broker_url", "result_backend", "cache_url", "database_url")
        }

    @property
    def redis_broker(self) -> bool:
        return is_redis_url(self.broker_url)

    @property
    def embedded(self) -> bool:
        """Whether a URL here is the embedded services' (`conveyor.app.resolve_services`)."""
        return self._embedded

    def with_embedded(self, **urls: str) -> Settings:
        """A copy with `urls`, the embedded services' ones, set, and marked embedded."""
        copy = self.model_copy(update=urls)
        copy._embedded = True
        return copy

    def pool(self, name: str) -> Pool:
        """The named pool, or a ConfigError listing the pools that exist."""
        try:
            return self.pools[name]
        except KeyError:
            raise ConfigError(
                f"unknown pool {name!r}; pools are {', '.join(sorted(self.pools))}"
            ) from None


def _describe(error: ValidationError, prefix: str) -> str:
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return f"invalid settings: {message}"
    name = f"{prefix}{str(first['loc'][0]).upper()}"
    detail = ", ".join(str(p) for p in first["loc"][1:])
    where = f" ({detail})" if detail else ""
    return f"invalid setting {name}{where}: {message}"


def load_section(cls: type[S], **overrides: Any) -> S:
    """Read and validate any settings class from its env prefix, turning any problem into a
    one-line ConfigError naming the variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix") or "")
        raise ConfigError(_describe(exc, prefix)) from None


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the core settings (CONVEYOR_*), problems as a ConfigError."""
    return load_section(Settings, **overrides)


_sections: dict[type[BaseSettings], BaseSettings | None] = {}
"""The features' settings classes declared so far, each with this process's value once read."""


def settings_section(cls: type[S]) -> type[S]:
    """Class decorator declaring a feature's own settings: `check_sections` (run by create_app)
    validates it at start-up and `section` reads it once per process."""
    _sections.setdefault(cls, None)
    return cls


def section(cls: type[S]) -> S:
    """This process's `cls`, read from the environment on first use (which does not change
    under a running process; `check_sections` reads it again)."""
    value = _sections.get(cls)
    if value is None:
        value = _sections[cls] = load_section(cls)
    return cast(S, value)


def check_sections() -> None:
    """Read every declared section from the environment anew, a bad value raising its
    ConfigError: the start-up check of the features' settings, run by create_app."""
    _sections.update({cls: load_section(cls) for cls in list(_sections)})
