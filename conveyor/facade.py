"""Typed Python calls generated from agents: one definition per call, sync and submit forms.

A feature describes each call once, as a method that turns friendly arguments into the
agent's payload, decorated with `@operation(its_agent)`. On an instance, the call runs the
agent and returns its typed output; `.submit(...)` returns a `RunHandle` at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from conveyor.agents import Agent
from conveyor.config import Settings
from conveyor.handle import RunHandle

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound="Facade")


class Sender(Protocol):
    """What a facade submits through: the client."""

    @property
    def settings(self) -> Settings: ...

    def send_payload(
        self, agent: Agent[Any, R], payload: dict[str, Any], *, celery_result: bool = True
    ) -> RunHandle[R]: ...


@dataclass
class Request:
    """A payload with how to send it: `celery_result=False` keeps a bulky output out of
    Celery's result backend; `on_error` undoes what building the payload left behind."""

    payload: dict[str, Any]
    celery_result: bool = True
    on_error: Callable[[], None] | None = field(default=None)


class Facade:
    """A feature's calls on a client (`client.memory`); `timeout` bounds each sync call."""

    timeout: float | None = 60.0

    def __init__(self, sender: Sender, timeout: float | None = None) -> None:
        self.sender = sender
        if timeout is not None:
            self.timeout = timeout


class BoundOperation(Generic[P, R]):
    """An operation on one facade: call it for the output, or `.submit()` for a handle."""

    def __init__(
        self,
        facade: Facade,
        agent: Agent[Any, R],
        build: Callable[P, dict[str, Any] | Request],
    ) -> None:
        self.facade = facade
        self.agent = agent
        self.build = build

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]:
        built = self.build(*args, **kwargs)
        request = built if isinstance(built, Request) else Request(built)
        try:
            return self.facade.sender.send_payload(
                self.agent, request.payload, celery_result=request.celery_result
            )
        except BaseException:
            if request.on_error is not None:
                request.on_error()
            raise

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.submit(*args, **kwargs).result(timeout=self.facade.timeout)


class Operation(Generic[F, P, R]):
    """The descriptor `@operation` makes: a facade method bound to its agent."""

    def __init__(
        self, agent: Agent[Any, R], build: Callable[Concatenate[F, P], dict[str, Any] | Request]
    ) -> None:
        self.agent = agent
        self.build = build
        self.__doc__ = build.__doc__ or agent.fn.__doc__

    @overload
    def __get__(self, facade: None, owner: type[F]) -> Operation[F, P, R]: ...

    @overload
    def __get__(self, facade: F, owner: type[F]) -> BoundOperation[P, R]: ...

    def __get__(
        self, facade: F | None, owner: type[F]
    ) -> Operation[F, P, R] | BoundOperation[P, R]:
        if facade is None:
            return self
        build = self.build

        def bound(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any] | Request:
            return build(facade, *args, **kwargs)

        return BoundOperation(facade, self.agent, bound)


def operation(
    agent: Agent[Any, R],
) -> Callable[[Callable[Concatenate[F, P], dict[str, Any] | Request]], Operation[F, P, R]]:
    """Make a facade method (friendly arguments -> payload) a typed call of `agent`."""

    def wrap(build: Callable[Concatenate[F, P], dict[str, Any] | Request]) -> Operation[F, P, R]:
        return Operation(agent, build)

    return wrap
