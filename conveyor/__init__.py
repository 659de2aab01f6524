"""conveyor: AI agents as Celery tasks on dedicated worker pools, with run history in PostgreSQL.

from conveyor import agent, Client

@agent(pool="default")
def summarise(text: str) -> str: ...

with Client() as client:
    print(client.result(client.submit("mymodule.summarise", {"text": "..."})))
"""

from conveyor.agents import Agent, agent, registry
from conveyor.app import ConveyorApp, create_app
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
from conveyor.runs.records import Run
from conveyor.runs.status import RunStatus
from conveyor.workers.pools import Pool

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
]
