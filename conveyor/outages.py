"""Connection settings that let workers and producers ride out a broker outage.

Celery reconnects and kombu retries by themselves (`broker_connection_retry`, publish
`retry_policy`); what they need is to notice a dead connection in bounded time. A broker
that restarts closes its sockets and is noticed at once, but one behind a dead network
(a blackhole, a failover, a NAT that forgot the connection) leaves reads and writes hanging
until TCP gives up, minutes later. These bounds make both sides fail fast and reconnect:

- Redis (broker and result backend): a command (a publish, an ack, a result) times out
  after SOCKET_TIMEOUT and a connect after CONNECT_TIMEOUT, so a submit into a dead network
  raises ServiceUnavailable after Celery's publish retries (about 15 s) instead of hanging;
  kombu drops a BRPOP whose reply is overdue by HEALTH_CHECK seconds and pings the pub/sub
  connection as often; TCP keepalive is on.
- AMQP keeps Celery's heartbeat (120 s asked, the server's 60 s by default): lowering it
  makes RabbitMQ drop idle producer connections, which send no heartbeats.
- On AMQP a worker's control (pidbox) queue is not exclusive: after a blackhole the broker
  still holds the worker's dead connection until heartbeats time it out, and an exclusive
  queue owned by that connection refused the reconnecting worker (RESOURCE_LOCKED), so it
  consumed nothing until then. Control replies may go to the dead consumer meanwhile.
- A worker that loses the broker lets its running tasks finish: their outcome is recorded
  in PostgreSQL before the ack, and the broker redelivers the messages it could not take
  back, which the run's claim then skips (Celery's future default would cancel them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

HEALTH_CHECK = 5
SOCKET_TIMEOUT = 5
"""Above the BRPOP timeout (1 s), which kombu's consumer waits on the socket."""
CONNECT_TIMEOUT = 3


def is_tcp_redis(url: str | None) -> bool:
    """redis:// or rediss://: the options below are for TCP, not the embedded unix socket."""
    return urlsplit(str(url)).scheme in ("redis", "rediss")


def redis_transport_options() -> dict[str, Any]:
    """kombu Redis transport options (broker_transport_options) for outages."""
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK,
    }


def outage_config(broker_url: str | None, result_backend: str | None) -> dict[str, Any]:
    """Celery settings for outages of the broker and of a Redis result backend."""
    config: dict[str, Any] = {
        "broker_connection_retry": True,
        "broker_connection_timeout": CONNECT_TIMEOUT,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
    if urlsplit(str(broker_url)).scheme in ("amqp", "amqps", "pyamqp"):
        config["control_queue_exclusive"] = False
    if is_tcp_redis(result_backend):
        config |= {
            "redis_socket_timeout": SOCKET_TIMEOUT,
            "redis_socket_connect_timeout": CONNECT_TIMEOUT,
            "redis_socket_keepalive": True,
            "redis_backend_health_check_interval": HEALTH_CHECK,
        }
    return config
