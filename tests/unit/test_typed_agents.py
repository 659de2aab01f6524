"""Agent[P, R]: the signature survives @agent, and sending is typed end to end (mypy strict)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api
from pydantic import BaseModel

from conveyor import InvalidInput, agent


class Query(BaseModel):
    text: str
    at: datetime | None = None


@agent(name="typed.kw")
def kw(text: str, limit: int = 3, **extra: Any) -> list[str]:
    return [text] * limit


@agent(name="typed.model")
def with_model(query: Query) -> str:
    return query.text


def test_payload_binds_arguments_as_a_plain_client_sends_them() -> None:
    assert kw.payload("a") == {"text": "a"}
    assert kw.payload("a", 2, tag="x") == {"text": "a", "limit": 2, "tag": "x"}
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    assert with_model.payload(Query(text="q", at=moment)) == {
        "text": "q",
        "at": "2026-01-02T00:00:00Z",
    }
    assert with_model.payload({"text": "q"}) == {"text": "q"}  # type: ignore[arg-type]
    assert kw("b", limit=2) == ["b", "b"], "calling the agent calls the function"


def test_payload_of_arguments_that_do_not_bind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"typed\.kw"):
        kw.payload()  # type: ignore[call-arg]


SNIPPET = """
    from typing import reveal_type
    from pydantic import BaseModel
    from conveyor import Client, agent

    class Out(BaseModel):
        n: int

    @agent
    def summarise(text: str, limit: int = 3) -> Out:
        return Out(n=limit)

    @agent
    async def fetch(url: str) -> str:
        return url

    def use(client: Client) -> None:
        reveal_type(summarise)
        reveal_type(client.send(summarise, "x", limit=2))
        reveal_type(client.send(summarise, "x").result())
        reveal_type(client.send(fetch, "u").result())
        reveal_type(client.memory.remember("ns", "s", "hi"))
        reveal_type(client.memory.recall.submit("ns", "s", last=3))
        client.send(summarise, 3)
        client.send(summarise, "x", nope=1)
        client.memory.recall("ns", "s", last="x")
"""


WRONG = (
    "client.send(summarise, 3)",
    'client.send(summarise, "x", nope=1)',
    "client.memory.recall(",
)


def test_sending_is_checked_against_the_agents_signature(tmp_path: Path) -> None:
    module = tmp_path / "typed_use.py"
    module.write_text(textwrap.dedent(SNIPPET))
    out, _, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(module)]
    )
    revealed = [
        line.split('Revealed type is "')[1][:-1] for line in out.splitlines() if "Revealed" in line
    ]
    assert revealed == [
        "conveyor.agents.Agent[[text: str, limit: int =], typed_use.Out]",
        "conveyor.handle.RunHandle[typed_use.Out]",
        "typed_use.Out",
        "str",
        "conveyor.memory.schema.RememberResult",
        "conveyor.handle.RunHandle[conveyor.memory.schema.Window]",
    ]
    source = textwrap.dedent(SNIPPET).splitlines()
    wrong = {str(n) for n, line in enumerate(source, 1) if line.strip().startswith(WRONG)}
    flagged = {e.split(":")[1] for e in out.splitlines() if ": error:" in e}
    assert flagged == wrong and len(wrong) == 3, out
