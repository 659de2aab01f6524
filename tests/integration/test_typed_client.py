"""The typed agent API end to end: `Client.send` on real workers, typed handles, async forms."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Client, ConveyorApp, RunFailed, RunStatus
from tests.support import agents


def test_send_returns_a_handle_whose_result_is_the_return_type(client: Client) -> None:
    handle = client.send(agents.double, 21)
    assert handle.agent == "tests.double"
    result = handle.result(timeout=60)
    assert isinstance(result, agents.Doubled) and result.value == 42
    assert client.get(handle.id).input == {"value": 21}  # type: ignore[union-attr]


def test_send_binds_keywords_and_async_agents_resolve_to_their_value(client: Client) -> None:
    assert client.send(agents.add, 2, b=3).result(timeout=60) == 5
    info = client.send(agents.async_info).result(timeout=60)
    assert set(info) >= {"pid"}


def test_a_failed_run_raises_from_result_and_wait_returns_it(client: Client) -> None:
    handle = client.send(agents.boom, "no")
    assert handle.wait(timeout=60).status is RunStatus.FAILED
    with pytest.raises(RunFailed, match="no"):
        handle.result(timeout=60)


def test_many_handles_awaited_at_once_share_one_client(client: Client) -> None:
    handles = [client.send(agents.add, i, 1) for i in range(20)]

    async def gather() -> list[int]:
        return await asyncio.gather(*(h.result_async(timeout=60) for h in handles))

    assert asyncio.run(gather()) == [i + 1 for i in range(20)]
    runs = asyncio.run(handles[0].wait_async(timeout=60))
    assert runs.status is RunStatus.SUCCEEDED


def test_threads_waiting_on_one_client_each_hear_runs_published_elsewhere(
    client: Client, redis_app: ConveyorApp
) -> None:
    """A client that did not publish the runs (so heard nothing of them before) serves
    several awaiting threads at once: a notification one thread reads reaches the other."""
    with Client(redis_app) as other:
        handles = [
            other.handle(agents.sleep, client.send(agents.sleep, 0.3 * i).id) for i in range(6)
        ]

        async def gather() -> list[float]:
            return await asyncio.gather(*(h.result_async(timeout=30) for h in handles))

        assert asyncio.run(gather()) == [0.3 * i for i in range(6)]


def test_facade_calls_and_submit_return_the_same_typed_output(client: Client) -> None:
    stats = client.memory.stats("typed-ns")
    handle = client.memory.stats.submit("typed-ns")
    assert handle.result(timeout=60) == stats
    assert client.get(handle.id).agent == "memory.stats"  # type: ignore[union-attr]
