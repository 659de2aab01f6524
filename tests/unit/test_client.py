"""Client.submit refuses unknown agents and invalid payloads before any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import Client
from conveyor.agents import agent
from conveyor.app import ConveyorApp
from conveyor.errors import InvalidInput, UnknownAgent


@pytest.fixture
def client(fake_app: ConveyorApp, monkeypatch: pytest.MonkeyPatch) -> Client:
    """A client whose database writes and broker publishes fail the test if reached."""
    client = Client(fake_app)

    def no_io(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("submit reached the database or the broker")

    monkeypatch.setattr(client.runs, "enqueue", no_io)
    monkeypatch.setattr(fake_app, "send_task", no_io)
    monkeypatch.setattr(fake_app, "producer_or_acquire", no_io)
    return client


@pytest.fixture
def summarise() -> None:
    @agent(name="unit.client.summarise")
    def summarise(text: str, max_words: int = 50) -> str:
        return text


def test_unknown_agent_names_the_close_match(client: Client) -> None:
    with pytest.raises(UnknownAgent) as caught:
        client.submit("conveyor.pnig", {})
    assert caught.value.name == "conveyor.pnig"
    assert caught.value.close_matches[0] == "conveyor.ping"
    assert "conveyor.ping" in str(caught.value)


def test_unknown_agent_in_submit_many(client: Client) -> None:
    with pytest.raises(UnknownAgent):
        client.submit_many("unit.client.nope", [{}, {}])


@pytest.mark.usefixtures("summarise")
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "text"),
        ({"text": "t", "max_words": "lots"}, "max_words"),
        ({"text": "t", "colour": "red"}, "colour"),
    ],
)
def test_invalid_payload_raises_before_io(
    client: Client, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        client.submit("unit.client.summarise", payload)
    assert caught.value.agent == "unit.client.summarise"
    assert field in str(caught.value)


@pytest.mark.usefixtures("summarise")
def test_one_invalid_payload_rejects_the_whole_batch(client: Client) -> None:
    with pytest.raises(InvalidInput, match="text"):
        client.submit_many("unit.client.summarise", [{"text": "a"}, {"text": "b"}, {}])


@pytest.mark.usefixtures("summarise")
def test_idempotency_keys_must_match_the_payloads(client: Client) -> None:
    with pytest.raises(ValueError, match="idempotency_keys"):
        client.submit_many(
            "unit.client.summarise", [{"text": "a"}, {"text": "b"}], idempotency_keys=["only-one"]
        )


@pytest.mark.parametrize("priority", [-1, 10])
def test_out_of_range_priority_raises_before_io(client: Client, priority: int) -> None:
    with pytest.raises(ValueError, match="priority"):
        client.submit("conveyor.ping", {}, priority=priority)


def test_signature_of_an_unknown_agent(client: Client) -> None:
    with pytest.raises(UnknownAgent):
        client.signature("conveyor.pnig")


def test_signature_is_routed_to_the_agents_queue(client: Client) -> None:
    signature = client.signature("conveyor.ping", {"x": 1})
    assert signature.task == "conveyor.ping"
    assert signature.kwargs == {"x": 1}
    assert signature.options["queue"] == "default"
