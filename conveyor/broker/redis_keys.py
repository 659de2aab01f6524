"""kombu's Redis key scheme, which conveyor shares with every plain Celery client, and the
move of messages and bindings left under conveyor's earlier scheme.

kombu keeps a queue's priority-0 messages in a list named after the queue and each other
priority step's in `queue + sep + step`, with `sep` the transport's (by default
`\\x06\\x16`). Binding tables (`_kombu.binding.<exchange>`) hold `routing_key sep pattern sep
queue` members. Until this version conveyor set `sep` to `:`, so a plain client's priority
messages and binding entries were invisible to its workers and its exporter. Moving what the
old scheme left is atomic per queue (one Lua script) and idempotent, so any number of workers
may run it at once, at start and then every CONVEYOR_LEGACY_SWEEP_SECONDS (a rolling upgrade).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from pydantic import BaseModel

log = logging.getLogger(__name__)

PRIORITY_STEPS = list(range(10))
"""Every Redis priority level 0..9: a superset of kombu's default [0, 3, 6, 9], so a plain
client's priority lands in a list that conveyor's workers read."""
LEGACY_SEP = ":"
"""The separator conveyor's earlier versions gave kombu."""
BINDING_PREFIXES = ("_kombu.binding.", "_kombu.binding_permanent.")

MOVE_LISTS = """
local moved = {}
for i = 1, #ARGV, 2 do
  local old, new = ARGV[i], ARGV[i + 1]
  local length = redis.call('LLEN', old)
  if length > 0 then
    if redis.call('EXISTS', new) == 0 then
      redis.call('RENAME', old, new)
    else
      for _ = 1, length do redis.call('RPUSH', new, redis.call('LPOP', old)) end
    end
  end
  moved[#moved + 1] = length
end
return moved
"""
"""Moves each legacy list (ARGV: old, new, old, new...) behind the new one: kombu pushes on
the left and pops on the right, so the older, moved messages are taken first, in order."""


class LegacyMove(BaseModel):
    """What one pass of the upgrade moved."""

    messages: dict[str, int] = {}
    """Messages moved per new list key (without the global key prefix)."""
    bindings: int = 0
    """Binding entries rewritten to the current separator."""

    @property
    def empty(self) -> bool:
        return not self.messages and not self.bindings


def legacy_list_pairs(
    queues: Iterable[str], sep: str, steps: Iterable[int], prefix: str = ""
) -> list[tuple[str, str]]:
    """(legacy key, current key) for every priority sub-list above 0 of every queue."""
    return [
        (f"{prefix}{queue}{LEGACY_SEP}{step}", f"{prefix}{queue}{sep}{step}")
        for queue in sorted(set(queues))
        for step in sorted(set(steps))
        if step
    ]


def split_binding(member: str, sep: str) -> tuple[str, str, str] | None:
    """(routing key, pattern, queue) of a binding member in the current or the legacy
    scheme; None when it is neither."""
    parts = member.split(sep) if sep in member else member.split(LEGACY_SEP)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def rewrite_binding(member: str, sep: str) -> str | None:
    """The member in the current scheme, or None when it is not a legacy entry."""
    if sep in member:
        return None
    parts = split_binding(member, sep)
    return sep.join(parts) if parts else None


class RedisKeyUpgrade:
    """Moves what conveyor's earlier key scheme left in a Redis broker into kombu's own.

    `channel` is a kombu Redis channel: its sep, priority steps and global key prefix are
    the ones this process publishes and consumes with.
    """

    def __init__(self, channel: Any) -> None:
        self.sep: str = channel.sep
        self.steps: list[int] = [int(s) for s in channel.priority_steps]
        self.prefix: str = channel.global_keyprefix or ""
        self.client = redis.Redis(connection_pool=channel.client.connection_pool)
        self._move = self.client.register_script(MOVE_LISTS)

    def run(self, queues: Iterable[str], *, bindings: bool = True) -> LegacyMove:
        """Move the legacy lists of `queues`, and rewrite legacy binding entries."""
        result = LegacyMove(messages=self.move_messages(queues))
        if bindings:
            result.bindings = self.upgrade_bindings()
        if not result.empty:
            log.warning(
                "moved %d message(s) and %d binding entr(ies) from conveyor's earlier Redis "
                "key scheme (sep %r) to kombu's",
                sum(result.messages.values()),
                result.bindings,
                LEGACY_SEP,
            )
        return result

    def move_messages(self, queues: Iterable[str]) -> dict[str, int]:
        pairs = legacy_list_pairs(queues, self.sep, self.steps, self.prefix)
        if not pairs:
            return {}
        counts = self._move(keys=[], args=[key for pair in pairs for key in pair])
        return {
            new.removeprefix(self.prefix): int(n)
            for (_, new), n in zip(pairs, counts, strict=True)
            if n
        }

    def pending(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in legacy lists, per legacy key; nothing is moved."""
        pairs = legacy_list_pairs(queues, self.sep, self.steps, self.prefix)
        with self.client.pipeline(transaction=False) as pipe:
            for old, _ in pairs:
                pipe.llen(old)
            lengths = pipe.execute()
        return {
            old.removeprefix(self.prefix): n
            for (old, _), n in zip(pairs, lengths, strict=True)
            if n
        }

    def upgrade_bindings(self, *, dry_run: bool = False) -> int:
        """Rewrite the legacy members of every binding table; returns how many there were."""
        rewritten = 0
        for key in self._binding_keys():
            members = [m.decode(errors="replace") for m in self.client.smembers(key)]
            changes = {m: new for m in members if (new := rewrite_binding(m, self.sep))}
            if changes and not dry_run:
                with self.client.pipeline(transaction=True) as pipe:
                    pipe.srem(key, *changes)
                    pipe.sadd(key, *changes.values())
                    pipe.execute()
            rewritten += len(changes)
        return rewritten

    def _binding_keys(self) -> list[bytes]:
        keys: list[bytes] = []
        for prefix in BINDING_PREFIXES:
            keys += self.client.scan_iter(match=f"{_glob_escape(self.prefix + prefix)}*", count=500)
        return keys


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
