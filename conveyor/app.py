"""The Celery app factory: settings -> Celery config, queues, routes and bound agents."""

from __future__ import annotations

import importlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu import Queue

import conveyor.redaction  # noqa: F401  (its Celery logging signals mask passwords)
from conveyor.agents import Agent, Registry, discover_agents
from conveyor.broker.redis_keys import PRIORITY_STEPS
from conveyor.broker.transport import install_redis_transport
from conveyor.config import Settings, load_settings
from conveyor.dlq.store import DeadLetterStore
from conveyor.embedded import Embedded
from conveyor.errors import ConfigError
from conveyor.forksafe import ProcessLocal
from conveyor.models.db import engine_for
from conveyor.models.migrate import upgrade
from conveyor.outages import is_tcp_redis, outage_config, redis_transport_options
from conveyor.results import OVERRIDES as RESULT_BACKEND_OVERRIDES
from conveyor.runs.headers import HEADER_ENQUEUED_AT
from conveyor.runs.repository import RunRepository
from conveyor.runs.visibility import DEFAULT_VISIBILITY_TIMEOUT, redelivery_options
from conveyor.signing import enable_signing, signing_config
from conveyor.tls import database_url_with_tls, tls_celery_config, warn_if_insecure
from conveyor.workers.pools import CATCH_ALL_QUEUE
from conveyor.workers.recorder import RunRecorder

log = logging.getLogger(__name__)
MAX_PRIORITY = 9
QUEUE_MAX_PRIORITY = 10
"""RabbitMQ's x-max-priority on every queue conveyor declares: the value Celery's docs give
`task_queue_max_priority`, so a plain client configured that way declares the same queue."""
OVERRIDES_MODULE = "celeryconfig"


@before_task_publish.connect
def _stamp_enqueue_time(
    headers: dict[str, Any] | None = None, properties: dict[str, Any] | None = None, **_: Any
) -> None:
    """Every message published from here carries its enqueue time: a header for queue age
    and queue wait, and the AMQP timestamp property that RabbitMQ's management API reads."""
    if headers is not None and not headers.get(HEADER_ENQUEUED_AT):
        headers[HEADER_ENQUEUED_AT] = datetime.now(UTC).isoformat()
    if properties is not None:
        properties.setdefault("timestamp", int(time.time()))


class ConveyorApp(Celery):
    """A Celery app that also knows conveyor's settings, agents and run store."""

    settings: Settings
    agents: Registry

    def __init__(
        self, settings: Settings, agents: Registry, *, embedded: bool = False, **kwargs: Any
    ) -> None:
        install_redis_transport()
        super().__init__("conveyor", **kwargs)
        self.settings = settings
        self.agents = agents
        self.embedded = embedded
        self.pool_name: str | None = None
        """The pool this process works for, when it is a worker."""
        self._store = ProcessLocal(self._open_run_store)

    def _open_run_store(self) -> tuple[RunRepository, RunRecorder]:
        assert self.settings.database_url is not None
        runs = RunRepository(engine_for(self.settings.database_url))
        return runs, RunRecorder(runs, self.settings.record_retry_seconds)

    def _run_store(self) -> tuple[RunRepository, RunRecorder]:
        """This process's repository and recorder; a forked child builds its own."""
        return self._store.get()

    @property
    def validation_context(self) -> dict[str, Any]:
        """What agent input validators see: the settings, for configured limits."""
        return {"settings": self.settings}

    @property
    def runs(self) -> RunRepository:
        return self._run_store()[0]

    @property
    def recorder(self) -> RunRecorder:
        return self._run_store()[1]

    @property
    def dead_letters(self) -> DeadLetterStore:
        """This process's dead-letter store (engines are per process)."""
        assert self.settings.database_url is not None
        return DeadLetterStore(engine_for(self.settings.database_url))

    @property
    def uses_redis(self) -> bool:
        return str(self.conf.broker_url).startswith("redis")

    def broker_priority(self, priority: int) -> int:
        """Translate 0..9 (9 most urgent) to the broker's own scale (Redis: 0 is first)."""
        if not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be 0..{MAX_PRIORITY}, got {priority}")
        return MAX_PRIORITY - priority if self.uses_redis else priority

    def agent_queue(self, spec: Agent) -> str:
        return self.settings.pool(spec.pool).queue(self.settings.queue_prefix)


REDIS_BODY_ENCODING = "utf-8"
"""Task bodies (JSON text) travel in kombu's Redis envelope as they are, not base64-encoded
again (kombu's default): a third smaller, and no encode and decode of every message. Each
message names its encoding, so workers still read plain Celery clients' base64 bodies."""


def resolve_services(settings: Settings) -> Settings:
    """Fill unset broker, database and result backend URLs from the embedded services."""
    updates: dict[str, Any] = {}
    if settings.broker_url is None or settings.database_url is None:
        state = Embedded(settings.data_dir).ensure()
        if settings.broker_url is None:
            updates["broker_url"] = state.redis_url
        if settings.database_url is None:
            updates["database_url"] = state.postgres_url
            upgrade(state.postgres_url)
    broker = updates.get("broker_url", settings.broker_url)
    if settings.result_backend is None:
        updates["result_backend"] = broker if str(broker).startswith("redis") else "rpc://"
    if settings.cache_url is None and str(broker).startswith("redis"):
        updates["cache_url"] = broker
    database = updates.get("database_url", settings.database_url)
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
    if str(settings.broker_url).startswith("redis"):
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
    if not str(config.get("broker_url")).startswith("redis"):
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


def create_app(settings: Settings | None = None) -> ConveyorApp:
    """Build the Celery app: resolve services, load agents, configure, bind agents as tasks."""
    from conveyor.workers.task import bind_agent

    given = settings or load_settings()
    settings = resolve_services(given)
    agents = discover_agents(settings.agent_modules, plugins=settings.load_plugins)
    for spec in agents:
        if spec.pool not in settings.pools:
            raise ConfigError(
                f"agent {spec.name}: unknown pool {spec.pool!r}; pools are "
                f"{', '.join(sorted(settings.pools))}"
            )
    config = celery_config(settings, agents) | _user_overrides()
    check_config(config, settings, agents)
    embedded = given.broker_url is None or given.database_url is None
    app = ConveyorApp(settings, agents, embedded=embedded, set_as_current=True)
    app.loader.override_backends = dict(RESULT_BACKEND_OVERRIDES)
    app.config_from_object(config)
    enable_signing(app, settings.signing)
    warn_if_insecure(settings.tls, settings.service_urls)
    for spec in agents:
        bind_agent(app, spec)
    return app


_default: ConveyorApp | None = None


def __getattr__(name: str) -> Any:
    """`conveyor.app:app` for `celery -A conveyor.app` and Flower, built on first access."""
    global _default
    if name == "app":
        if _default is None:
            _default = create_app()
        return _default
    raise AttributeError(name)
