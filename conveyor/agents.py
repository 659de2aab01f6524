"""@agent: declare a unit of work with typed input and output, and the registry of agents."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import (
    Any,
    Generic,
    Literal,
    ParamSpec,
    TypeAlias,
    TypedDict,
    TypeVar,
    Unpack,
    get_type_hints,
    overload,
)

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import to_jsonable_python

from conveyor.errors import ConfigError, InvalidInput, TransientError, UnknownAgent

ENTRY_POINT_GROUP = "conveyor.agents"
DEFAULT_RETRY_ON: tuple[type[Exception], ...] = (TransientError, ConnectionError, TimeoutError)
OMITTED = "$omitted"
log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Agent(Generic[P, R]):
    """A registered agent: the function, its typed boundary and its policies.

    Generic in the function's parameters and return type, so calling it, and sending it
    through `Client.send`, are checked against the function's own signature.
    """

    name: str
    fn: Callable[P, R]
    input_model: type[BaseModel]
    output_adapter: TypeAdapter[Any]
    model_param: str | None
    pool: str = "default"
    retries: int = 3
    retry_on: tuple[type[Exception], ...] = DEFAULT_RETRY_ON
    retry_backoff: int = 1
    retry_backoff_max: int = 600
    soft_time_limit: float | None = None
    time_limit: float | None = None
    rate_limit: str | None = None
    priority: int | None = None
    idempotent: bool = False
    record_input: bool = True

    def recorded_input(self, payload: dict[str, Any]) -> dict[str, Any]:
        """What agent_runs keeps of a payload: all of it, or a marker for bulky inputs."""
        return payload if self.record_input else {OMITTED: "input not recorded for this agent"}

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def payload(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """The JSON payload of a call with these arguments, as a plain Celery client sends it:
        keyword fields, or the fields of the one model parameter."""
        try:
            bound = inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidInput(self.name, [{"loc": (), "msg": str(exc)}]) from None
        if self.model_param is not None:
            given = bound.arguments[self.model_param]
            if isinstance(given, BaseModel):
                return dict(given.model_dump(mode="json", by_alias=True, exclude_unset=True))
            return dict(to_jsonable_python(given))
        fields: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if bound.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                fields.update(value)
            else:
                fields[name] = value
        return dict(to_jsonable_python(fields))

    def limits(self, default_soft: float, default_hard: float) -> tuple[float, float]:
        """The (soft, hard) time limits that apply, given the settings' defaults.

        With only a hard limit set, the soft one is kept below it (at 80%) so it can fire.
        """
        hard = self.time_limit or default_hard
        if self.soft_time_limit is not None:
            soft = self.soft_time_limit
        else:
            soft = default_soft if default_soft < hard else hard * 0.8
        if soft >= hard:
            raise ConfigError(
                f"agent {self.name}: soft time limit {soft:g}s must be below "
                f"the hard limit {hard:g}s"
            )
        return soft, hard

    def validate_input(
        self, data: dict[str, Any], context: dict[str, Any] | None = None
    ) -> BaseModel:
        """Validate a JSON payload into the input model, or raise InvalidInput.

        `context` reaches the model's validators; conveyor passes {"settings": ...} so that
        limits configured in the environment apply on the client and the worker alike.
        """
        try:
            return self.input_model.model_validate(data, context=context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise InvalidInput(self.name, [dict(e) for e in errors]) from None

    def invoke(self, model: BaseModel) -> Any:
        """Call the function with the validated input; a coroutine is returned as is."""
        call: Callable[..., Any] = self.fn
        if self.model_param is not None:
            return call(model)
        fields = {name: getattr(model, name) for name in type(model).model_fields}
        return call(**fields, **(model.model_extra or {}))

    def dump_output(self, value: Any) -> Any:
        """The output as JSON-compatible data, validated against the return annotation."""
        return self.output_adapter.dump_python(
            self.output_adapter.validate_python(value), mode="json"
        )


def _type_hints(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except NameError as exc:
        raise ConfigError(f"agent {name}: cannot resolve an annotation ({exc})") from exc


def _input_model(name: str, fn: Callable[..., Any]) -> tuple[type[BaseModel], str | None]:
    hints = _type_hints(name, fn)
    params = list(inspect.signature(fn).parameters.values())
    if len(params) == 1 and isinstance(hints.get(params[0].name), type):
        only = hints[params[0].name]
        if issubclass(only, BaseModel):
            return only, params[0].name
    fields: dict[str, Any] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            extra = "allow"
        elif p.kind is p.VAR_POSITIONAL or p.kind is p.POSITIONAL_ONLY:
            raise ConfigError(f"agent {name}: parameter {p.name!r} must be passable by keyword")
        else:
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (hints.get(p.name, Any), default)
    model_name = "".join(part.title() for part in name.replace("-", "_").split(".")) + "Input"
    model = create_model(model_name, __config__=ConfigDict(extra=extra), **fields)
    return model, None


AnyAgent: TypeAlias = Agent[..., Any]
"""An agent whatever its signature: what the registry and the worker handle."""


class Registry:
    """Agents by name. One process-wide instance, `registry`, is what @agent fills."""

    def __init__(self) -> None:
        self._agents: dict[str, AnyAgent] = {}

    def add(self, spec: AnyAgent) -> None:
        existing = self._agents.get(spec.name)
        same = existing is not None and (existing.fn.__module__, existing.fn.__qualname__) == (
            spec.fn.__module__,
            spec.fn.__qualname__,
        )
        if existing is not None and not same:
            raise ConfigError(
                f"agent name {spec.name!r} is taken by {existing.fn.__module__}."
                f"{existing.fn.__qualname__}"
            )
        self._agents[spec.name] = spec

    def get(self, name: str) -> AnyAgent:
        """The named agent, or UnknownAgent listing close matches."""
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgent(name, difflib.get_close_matches(name, self._agents, n=3)) from None

    def __iter__(self) -> Iterator[AnyAgent]:
        return iter(list(self._agents.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def names(self) -> list[str]:
        return sorted(self._agents)


registry = Registry()


class AgentOptions(TypedDict, total=False):
    """What `@agent(...)` accepts: `name` (default: module.qualname) and the policies of
    `Agent`, whose defaults apply."""

    name: str
    pool: str
    retries: int
    retry_on: Iterable[type[Exception]]
    retry_backoff: int
    retry_backoff_max: int
    soft_time_limit: float | None
    time_limit: float | None
    rate_limit: str | None
    priority: int | None
    idempotent: bool
    record_input: bool


@overload
def agent(fn: Callable[P, R], /) -> Agent[P, R]: ...


@overload
def agent(**options: Unpack[AgentOptions]) -> Callable[[Callable[P, R]], Agent[P, R]]: ...


def agent(
    fn: Callable[P, R] | None = None, /, **options: Unpack[AgentOptions]
) -> Agent[P, R] | Callable[[Callable[P, R]], Agent[P, R]]:
    """Declare an agent and register it. Works bare (`@agent`) or with options
    (`@agent(pool="memory")`; see `declare`)."""

    def register(func: Callable[P, R]) -> Agent[P, R]:
        spec = declare(func, **options)
        registry.add(spec)
        return spec

    return register(fn) if fn is not None else register


def declare(fn: Callable[P, R], **options: Unpack[AgentOptions]) -> Agent[P, R]:
    """The agent of `fn`, its typed boundary derived from the signature, not yet registered.

    Retries apply only to exceptions in `retry_on` (transient errors): the n-th waits a random
    0..min(retry_backoff * 2**n, retry_backoff_max) seconds. `priority` is 0..9, 9 most urgent.

    By default a worker claims each run in PostgreSQL before running it, so a redelivered or
    resubmitted run never repeats its effect. `idempotent=True` declares that running twice
    is harmless (a pure function, say): the claim is skipped, saving a round trip per run,
    and the run is written once, at its final state. `record_input=False` keeps only a
    marker in agent_runs.input, for agents whose inputs are bulky and kept elsewhere.
    """
    policies: dict[str, Any] = dict(options)
    name = policies.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
    if "retry_on" in policies:
        policies["retry_on"] = tuple(policies["retry_on"])
    retries, priority = policies.get("retries", 0), policies.get("priority")
    soft, hard = policies.get("soft_time_limit"), policies.get("time_limit")
    if retries < 0:
        raise ConfigError(f"agent {name}: retries must be >= 0, got {retries}")
    if priority is not None and not 0 <= priority <= 9:
        raise ConfigError(f"agent {name}: priority must be 0..9, got {priority}")
    if soft and hard and soft >= hard:
        raise ConfigError(f"agent {name}: soft_time_limit must be below time_limit")
    model, model_param = _input_model(name, fn)
    returns = _type_hints(name, fn).get("return", Any)
    return Agent(
        name=name,
        fn=fn,
        input_model=model,
        output_adapter=TypeAdapter(Any if returns is type(None) else returns),
        model_param=model_param,
        **policies,
    )


def discover_agents(modules: Iterable[str] = (), *, plugins: bool = True) -> Registry:
    """Import the agents of the `conveyor.agents` entry points, then the given modules.

    The built-in features (ping, memory, vector, analytics: entry points whose module is in
    the `conveyor` package) are plugins like any other but always load; `plugins=False`
    (CONVEYOR_LOAD_PLUGINS=false) switches off the third-party ones only.

    A plugin that fails to import is a ConfigError, except one whose own top-level package
    is absent (metadata left behind: the image installs conveyor without `examples/`, whose
    entry point it still declares), which is skipped with a warning.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not plugins and ep.module.split(".")[0] != "conveyor":
            continue
        try:
            ep.load()
        except ModuleNotFoundError as exc:
            if exc.name != ep.module.split(".")[0]:
                raise ConfigError(
                    f"agent plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                ) from exc
            log.warning(
                "agent plugin %r skipped: its package %r is not installed", ep.name, exc.name
            )
        except Exception as exc:
            raise ConfigError(
                f"agent plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
            ) from exc
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"invalid setting CONVEYOR_AGENT_MODULES: {exc}") from exc
    return registry
