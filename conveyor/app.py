"""The Celery app factory: settings -> Celery config, queues, routes and bound agents.

`create_app` builds the app from the settings it is given and nothing else. Starting the
embedded services for unset URLs and migrating their database is the explicit step before
it, `resolve_services`, taken by the CLI, `Client()` and `conveyor.app:app`.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from celery.signals import before_task_publish
from kombu import Queue

from conveyor.agents import Registry, discover_agents
from conveyor.broker.redis_keys import PRIORITY_STEPS
from conveyor.broker.transport import install_redis_transport
from conveyor.celery_app import ConveyorApp
from conveyor.config import Settings, check_sections, is_redis_url, load_settings
from conveyor.embedded import Embedded
from conveyor.errors import ConfigError
from conveyor.models.migrate import upgrade
from conveyor.outages import is_tcp_redis, outage_config, redis_transport_options
from conveyor.pools import CATCH_ALL_QUEUE
from conveyor.redaction import redact_celery_logs
from conveyor.results import OVERRIDES as RESULT_BACKEND_OVERRIDES
from conveyor.runs.headers import HEADER_ENQUEUED_AT
from conveyor.runs.visibility import DEFAULT_VISIBILITY_TIMEOUT, redelivery_options
from conveyor.signing import enable_signing, signing_config
from conveyor.tls import database_url_with_tls, tls_celery_config, warn_if_insecure
from conveyor.workers.task import bind_agent, connect_task_receivers

__all__ = ["ConveyorApp", "celery_config", "celery_settings", "create_app", "resolve_services"]
log = logging.getLogger(__name__)
QUEUE_MAX_PRIORITY = 10
"""RabbitMQ's x-max-priority on every queue conveyor declares: the value Celery's docs give
`task_queue_max_priority`, so a plain client configured that way declares the same queue."""
OVERRIDES_MODULE = "celeryconfig"


def _stamp_enqueue_time(
    headers: dict[str, Any] | None = None, properties: dict[str, Any] | None = None, **_: Any
) -> None:
    """Every message published from here carries its enqueue time: a header for queue age
    and queue wait, and the AMQP timestamp property that RabbitMQ's management API reads."""
    if headers is not None and not headers.get(HEADER_ENQUEUED_AT):
        headers[HEADER_ENQUEUED_AT] = datetime.now(UTC).isoformat()
    if properties is not None:
        properties.setdefault("timestamp", int(time.time()))


def _connect_receivers() -> None:
    """conveyor's signal receivers, connected once however many apps are built."""
    before_task_publish.connect(
        _stamp_enqueue_time, weak=False, dispatch_uid="conveyor.app.stamp_enqueue_time"
    )
    redact_celery_logs()
    connect_task_receivers()


REDIS_BODY_ENCODING = "utf-8"
"""Task bodies (JSON text) travel in kombu's Redis envelope as they are, not base64-encoded
again (kombu's default): a third smaller, and no encode and decode of every message. Each
message names its encoding, so workers still read plain Celery clients' base64 bodies."""


def resolve_services(settings: Settings | None = None) -> Settings:
    """The step before `create_app` when a URL may be unset: start the embedded services
    for an unset broker or database URL (migrating the embedded database) and return the
    settings (by default the environment's) with their URLs, marked embedded. Configured
    settings come back unchanged."""
    settings = settings or load_settings()
    if settings.broker_url is not None and settings.database_url is not None:
        return settings
    state = Embedded(settings.data_dir).ensure()
    urls: dict[str, str] = {}
    if settings.broker_url is None:
        urls["broker_url"] = state.redis_url
    if settings.database_url is None:
        urls["database_url"] = state.postgres_url
        upgrade(state.postgres_url)
    return settings.with_embedded(**urls)


def _with_defaults(settings: Settings) -> Settings:
    """Result backend and cache follow a Redis broker (else rpc://, no cache); the database
    URL gets the TLS files. Pure: no service is reached."""
    updates: dict[str, Any] = {}
    if settings.result_backend is None:
        updates["result_backend"] = settings.broker_url if settings.redis_broker else "rpc://"
    if settings.cache_url is None and settings.redis_broker:
        updates["cache_url"] = settings.broker_url
    database = settings.database_url
    if (secured := database_url_with_tls(settings.tls, database)) != database:
        updates["database_url"] = secured
    return settings.model_copy(update=updates) if updates else settings


def celery_config(settings: Settings, agents: Registry) -> dict[str, Any]:
    """The Celery settings conveyor needs: JSON only, late acks, one queue per pool."""
    prefix = settings.queue_prefix
    names = [pool.queue(prefix) for pool in settings.pools.values()] + [CATCH_ALL_QUEUE]
    queues = [Queue(name, routing_key=name, max_priority=QUEUE_MAX_PRIORITY) for name in names]
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_consumer": "conveyor.workers.consumer:Consumer",
        "result_extended": False,
        "result_expires": 86400,
        "task_queues": queues,
        "task_default_queue": settings.pool("default").queue(prefix),
        "task_routes": {a.name: {"queue": settings.pool(a.pool).queue(prefix)} for a in agents},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }
    if prefix:
        config["event_exchange"] = f"{prefix}celeryev"
        config["control_exchange"] = f"{prefix}celery"
    if settings.redis_broker:
        config["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            "priority_steps": PRIORITY_STEPS,
            "queue_order_strategy": "priority",
            "body_encoding": REDIS_BODY_ENCODING,
            **redelivery_options(settings.visibility_timeout),
        }
        if is_tcp_redis(settings.broker_url):
            config["broker_transport_options"] |= redis_transport_options()
    config |= outage_config(settings.broker_url, settings.result_backend)
    config |= tls_celery_config(settings.tls, settings.broker_url, settings.result_backend)
    return config | signing_config(settings.signing)


def _user_overrides() -> dict[str, Any]:
    """Celery settings from a `celeryconfig` module on the import path, if there is one."""
    try:
        module = importlib.import_module(OVERRIDES_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != OVERRIDES_MODULE:
            raise
        return {}
    return {
        k: v
        for k, v in vars(module).items()
        if not k.startswith("_") and k.islower() and not callable(v) and not isinstance(v, type(os))
    }


def check_config(config: dict[str, Any], settings: Settings, agents: Registry) -> None:
    """Refuse settings that would lose or duplicate work, or accept pickle."""
    for key in ("accept_content", "result_accept_content"):
        if any("pickle" in str(c) for c in config.get(key) or ()):
            raise ConfigError(f"invalid Celery setting {key}: pickle is refused, use json")
    for key in ("task_serializer", "result_serializer", "event_serializer"):
        if "pickle" in str(config.get(key)):
            raise ConfigError(f"invalid Celery setting {key}: pickle is refused, use json")
    if not is_redis_url(str(config.get("broker_url"))):
        return
    visibility = (config.get("broker_transport_options") or {}).get(
        "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT
    )
    limits = [(settings.time_limit, "default (CONVEYOR_TIME_LIMIT)")]
    limits += [(a.time_limit, f"agent {a.name}") for a in agents if a.time_limit]
    longest, who = max(limits, key=lambda limit: limit[0])
    if visibility <= longest:
        raise ConfigError(
            f"invalid setting CONVEYOR_VISIBILITY_TIMEOUT: {visibility}s must be larger than "
            f"the largest hard time limit ({longest:g}s, {who}); otherwise Redis "
            "redelivers a task that is still running and it runs twice"
        )


def _require_services(settings: Settings) -> Settings:
    """`settings`, or a ConfigError naming the unset broker or database URL."""
    urls = {
        "CONVEYOR_BROKER_URL": settings.broker_url,
        "CONVEYOR_DATABASE_URL": settings.database_url,
    }
    if unset := [name for name, url in urls.items() if url is None]:
        raise ConfigError(
            f"{' and '.join(unset)} unset: create_app starts no service; set them, or take "
            "conveyor.app.resolve_services(settings) first for the embedded services"
        )
    return settings


def celery_settings(settings: Settings, agents: Registry) -> dict[str, Any]:
    """The app's Celery settings: conveyor's, with a `celeryconfig` module's over them,
    checked."""
    config = celery_config(settings, agents) | _user_overrides()
    check_config(config, settings, agents)
    return config


def create_app(settings: Settings | None = None) -> ConveyorApp:
    """Build the Celery app from `settings` alone: load agents, check the settings their
    features declare (`check_sections`), configure, bind agents as tasks. Nothing is started
    or migrated; unset URLs need `resolve_services` first."""
    settings = _with_defaults(_require_services(settings or load_settings()))
    agents = discover_agents(settings.agent_modules, plugins=settings.load_plugins)
    check_sections()
    for spec in agents:
        if spec.pool not in settings.pools:
            raise ConfigError(
                f"agent {spec.name}: unknown pool {spec.pool!r}; pools are "
                f"{', '.join(sorted(settings.pools))}"
            )
    config = celery_settings(settings, agents)
    _connect_receivers()
    install_redis_transport()
    app = ConveyorApp(settings, agents, set_as_current=True)
    app.loader.override_backends = dict(RESULT_BACKEND_OVERRIDES)
    app.config_from_object(config)
    enable_signing(app, settings.signing)
    warn_if_insecure(settings.tls, settings.service_urls)
    for spec in agents:
        bind_agent(app, spec)
    return app


_default: ConveyorApp | None = None


def __getattr__(name: str) -> Any:
    """`conveyor.app:app` for `celery -A conveyor.app` and Flower, built on first access
    (the embedded services started for unset URLs, as the CLI does)."""
    global _default
    if name == "app":
        if _default is None:
            _default = create_app(resolve_services())
        return _default
    raise AttributeError(name)
