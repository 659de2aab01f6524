"""conveyor: AI agents as Celery tasks on dedicated worker pools, with run history in PostgreSQL.

from conveyor import agent, Client

@agent(pool="default")
def summarise(text: str) -> str: ...

with Client() as client:
    print(client.send(summarise, text="...").result())  # typed: a str
    print(client.result(client.submit("mymodule.summarise", {"text": "..."})))  # by name
"""

from conveyor.agents import Agent, agent, registry
from conveyor.app import create_app, resolve_services
from conveyor.celery_app import ConveyorApp
from conveyor.client import Client
from conveyor.config import Settings, load_settings
from conveyor.context import RunContext, current_run
from conveyor.effects import effect_once
from conveyor.errors import (
    ConfigError,
    ConveyorError,
    InvalidInput,
    NotMigrated,
    RunFailed,
    RunTimeout,
    ServiceUnavailable,
    TransientError,
    UnknownAgent,
)
from conveyor.handle import RunHandle
from conveyor.pools import Pool
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus

__all__ = [
    "Agent",
    "Client",
    "ConfigError",
    "ConveyorApp",
    "ConveyorError",
    "InvalidInput",
    "NotMigrated",
    "Pool",
    "Run",
    "RunContext",
    "RunFailed",
    "RunHandle",
    "RunStatus",
    "RunTimeout",
    "ServiceUnavailable",
    "Settings",
    "TransientError",
    "UnknownAgent",
    "agent",
    "create_app",
    "current_run",
    "effect_once",
    "load_settings",
    "registry",
    "resolve_services",
]
