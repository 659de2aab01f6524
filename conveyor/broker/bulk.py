"""Many task messages published at once, each one as `app.send_task` publishes it.

Only the transport step is batched. Celery builds each message
(`app.amqp.create_task_message`, with the options `send_task` works out for the task), and
each goes through what `app.amqp.send_task_message` and kombu's `Producer.publish` do to a
message for a queue on its direct exchange: conveyor's headers added, `before_task_publish`
sent, the body serialized by kombu's serializer (which signs on an app that signs),
`channel.prepare_message`. kombu's Redis transport would then LPUSH each message, a JSON
envelope, to its queue's list or to the list of its priority (`queue\\x06\\x16N`); here a
batch's envelopes go to Redis in one pipeline, one LPUSH per list with its messages in publish
order, which a worker pops in the same order as from one LPUSH each. `after_task_publish` is
sent for each message once the pipeline has run. Two steps write the same text faster:
Celery's `kwargsrepr` of a flat payload (`flat_saferepr`) and kombu's JSON (`json_writer`).

Elsewhere each run is sent by `app.send_task` on one producer, as one submit sends it: on
another broker (RabbitMQ), and on Redis for what this does not cover: a route through a named
or non-direct exchange, an expiring queue or message, task-sent events, a publish from a
running task (whose parent Celery records). The tests compare both paths' messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any, cast

from celery import Celery, signals
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu import Queue
from kombu import serialization as kombu_serialization
from kombu.exceptions import EncodeError
from kombu.transport.redis import Channel as RedisChannel
from kombu.utils import json as kombu_json

MAX_VALUES_PER_PUSH = 1000
"""Envelopes per LPUSH command; a batch's commands share one pipeline."""
_SEND_PARAMS = frozenset(
    ("exchange", "routing_key", "queue", "event_dispatcher", "retry", "retry_policy",
     "serializer", "delivery_mode", "compression", "declare", "headers", "exchange_type",
     "timeout", "confirm_timeout")
)  # fmt: skip
"""`send_task_message`'s own parameters; the other options become message properties."""
_JSON = kombu_json.JSONEncoder()
"""kombu's JSON encoder: `kombu.utils.json.dumps(value)` is `json.dumps(value,
cls=JSONEncoder)`, which makes this encoder for each value."""


def json_writer() -> Callable[[Any], str]:
    """`kombu.utils.json.dumps`, the same text, for many values in one thread: the C encoder
    `JSONEncoder.encode` makes for each value (with the same arguments), made once."""
    if c_make_encoder is None:  # the pure-Python json: its encode as is
        return _JSON.encode
    encoder = _JSON
    write = c_make_encoder(
        {} if encoder.check_circular else None, encoder.default, encode_basestring_ascii,
        encoder.indent, encoder.key_separator, encoder.item_separator, encoder.sort_keys,
        encoder.skipkeys, encoder.allow_nan,
    )  # fmt: skip
    return lambda value: "".join(write(value, 0))


@dataclass
class Prepared:
    """A batch's messages, ready for the transport."""

    pushes: list[tuple[str, str]] = field(default_factory=list)
    """(Redis list, envelope) in publish order, for the pipeline."""
    published: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    """(headers, body) of each message, for `after_task_publish` receivers."""
    runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """(task id, kwargs, headers) of each run that `app.send_task` sends itself."""

    def __len__(self) -> int:
        return len(self.pushes) + len(self.runs)


def uuid4_texts(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as `str(uuid.uuid4())` writes them, from one read of
    the system's random source: a fifth of the time of `uuid4()` each."""
    hexes = os.urandom(16 * count).hex()
    texts = []
    for start in range(0, 32 * count, 32):
        h = hexes[start : start + 32]
        texts.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return texts


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The RFC 4122 variant (binary 10xx) in place of a random hex digit."""


def _published_message(
    producer: Any,
    channel: Any,
    json_text: Callable[[Any], str] | None,
    body: Any,
    routing_key: str | None = None,
    delivery_mode: Any = None,
    mandatory: bool = False,
    immediate: bool = False,
    priority: int = 0,
    content_type: str | None = None,
    content_encoding: str | None = None,
    serializer: str | None = None,
    headers: dict[str, Any] | None = None,
    compression: str | None = None,
    exchange: Any = None,
    retry: bool = False,
    retry_policy: dict[str, Any] | None = None,
    declare: Any = None,
    expiration: float | None = None,
    timeout: float | None = None,
    confirm_timeout: float | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """The message kombu's `Producer.publish` (of this signature) hands the channel's
    `basic_publish`. Given `json_text` (kombu's `json` serializer, when it is kombu's own), a
    JSON body is written by it, else by `producer._prepare`."""
    headers = {} if headers is None else headers
    compression = producer.compression if compression is None else compression
    _, properties["delivery_mode"] = producer._delivery_details(
        exchange or producer.exchange, delivery_mode
    )
    if expiration is not None:
        properties["expiration"] = str(int(expiration * 1000))
    if json_text is not None and serializer == "json" and not content_type and not compression:
        try:
            body, content_type, content_encoding = json_text(body), "application/json", "utf-8"
        except Exception as exc:  # as kombu's registry raises it
            raise EncodeError(exc) from exc
    else:
        body, content_type, content_encoding = producer._prepare(
            body, serializer, content_type, content_encoding, compression, headers
        )
    message: dict[str, Any] = channel.prepare_message(
        body, priority, content_type, content_encoding, headers, properties
    )
    if isinstance(reply_to := properties.get("reply_to"), Queue):
        properties["reply_to"] = reply_to.name
    return message


def flat_saferepr(kwargs: dict[str, Any], maxlen: int | None, maxlevels: int) -> str:
    """`celery.utils.saferepr.saferepr(kwargs, maxlen, maxlevels=maxlevels)`, Celery's
    `kwargsrepr` header, at a third of its cost for the usual payload: a flat dict of text
    keys and text, number, boolean or null values whose repr fits `maxlen` (so nothing of
    it is cut). saferepr writes such a dict as this does (a string quoted with only its `'`
    escaped, a number as `str()` writes it); any other dict goes to saferepr itself."""
    parts = []
    try:
        for key, value in kwargs.items():
            kind = type(value)
            if type(key) is not str:
                break
            if kind is str:
                text = "'" + value.replace("'", "\\'") + "'"
            elif kind is int or kind is float or kind is bool:
                text = str(value)
            elif value is None:
                text = "None"
            else:
                break
            parts.append("'" + key.replace("'", "\\'") + "': " + text)
        else:
            written = "{" + ", ".join(parts) + "}"
            if maxlen is None or len(written) < maxlen:
                return written
    except ValueError:  # an int too long for str(): saferepr says so itself
        pass
    return str(saferepr(kwargs, maxlen, maxlevels=maxlevels))


def _json_is_kombus() -> bool:
    """Whether kombu's `json` serializer is its own (an application may register another)."""
    registered = cast(Any, kombu_serialization).registry._encoders.get("json")
    return registered is not None and tuple(registered) == (
        "application/json", "utf-8", kombu_json.dumps,
    )  # fmt: skip


class BulkPublisher:
    """Publishes runs of one task with the same options through `producer`, each message as
    `app.send_task(name, kwargs=..., task_id=..., queue=queue, priority=priority,
    countdown=countdown, ignore_result=ignore_result, headers=..., producer=producer)`
    would. `build` prepares a batch (`before_task_publish` is sent there), `send` publishes
    it; they may be called from different threads, not at once."""

    def __init__(
        self,
        app: Celery,
        producer: Any,
        name: str,
        *,
        queue: str,
        priority: int | None = None,
        countdown: float | None = None,
        ignore_result: bool = False,
    ) -> None:
        self.app = app
        self.producer = producer
        self.name = name
        self.queue = queue
        self.countdown = countdown
        self.ignore_result = ignore_result
        self.options: dict[str, Any] = {"queue": queue, "priority": priority}
        """What `send_task` is given besides the run's own arguments."""
        self._resolved: dict[str, Any] = {}
        self._limits: tuple[float | None, float | None] = (None, None)
        self._expires: Any = None
        self._batched: bool | None = None
        self._declared = False

    @property
    def batched(self) -> bool:
        """Whether messages go to Redis in pipelines (decided on first use: it connects)."""
        if self._batched is None:
            with self.producer.connection._reraise_as_library_errors():
                self._batched = self._can_batch()
        return self._batched

    def _can_batch(self) -> bool:
        conf = self.app.conf
        if conf.task_send_sent_event or signals.task_sent.receivers:
            return False
        if self.app.current_worker_task is not None:
            return False
        channel = self.producer.channel
        expiring = getattr(channel, "_expires", None) or {}
        if not isinstance(channel, RedisChannel) or self.queue in expiring:
            return False
        resolved = self._resolved = self._resolve_options()
        exchange_type = resolved.get("exchange_type") or resolved["queue"].exchange.type
        default_exchange = not resolved.get("exchange") or not resolved.get("routing_key")
        return bool(exchange_type == "direct" and default_exchange and self._expires is None)

    def _resolve_options(self) -> dict[str, Any]:
        """The options `app.send_task` works out for this task and these explicit options
        (Celery 5.7): the task's execution options under them, then the router's. The router
        is asked once, by task name, as conveyor's routes (a map of names) answer."""
        options = dict(self.options, ignore_result=self.ignore_result)
        task = cast(Any, self.app)._tasks.get(self.name)  # as send_task: not finalizing the app
        exec_options = getattr(task, "_get_exec_options", None)
        if exec_options is not None:
            defaults = {k: v for k, v in (exec_options() or {}).items() if v is not None}
            options = dict(defaults, **options)
        self._limits = (options.pop("time_limit", None), options.pop("soft_time_limit", None))
        self._expires = options.pop("expires", None)
        options.pop("ignore_result", None)
        options = self.app.amqp.router.route(options, self.name, (), {}, task)
        for stamp in options.pop("stamped_headers", None) or ():
            options.pop(stamp, None)
        return dict(options)

    def _send_kwargs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What `send_task_message` makes of the options for a queue on its direct exchange:
        the keywords of `Producer.publish`, and the message properties it adds."""
        conf, options = self.app.conf, self._resolved
        queue = options["queue"]
        delivery_mode = options.get("delivery_mode")
        if delivery_mode is None:
            delivery_mode = queue.exchange.delivery_mode
        retry = options.get("retry")
        publish = {
            "exchange": "",
            "routing_key": queue.name,
            "serializer": options.get("serializer") or conf.task_serializer,
            "compression": options.get("compression") or conf.task_compression,
            "retry": conf.task_publish_retry if retry is None else retry,
            "retry_policy": dict(
                conf.task_publish_retry_policy, **options.get("retry_policy") or {}
            ),
            "delivery_mode": delivery_mode or conf.task_default_delivery_mode,
            "declare": [queue],
            "timeout": options.get("timeout"),
            "confirm_timeout": options.get("confirm_timeout"),
        }
        return publish, {k: v for k, v in options.items() if k not in _SEND_PARAMS}

    def build(
        self,
        task_ids: Sequence[str],
        kwargs: Sequence[dict[str, Any]],
        headers: Sequence[dict[str, Any]],
    ) -> Prepared:
        """The messages of these runs, built and serialized (Redis), or the runs as
        `send_task` will take them."""
        runs = zip(task_ids, kwargs, headers, strict=True)
        if not self.batched:
            return Prepared(runs=list(runs))
        app, amqp, name, producer = self.app, self.app.amqp, self.name, self.producer
        channel = producer.channel
        create, before = amqp.create_task_message, signals.before_task_publish.send
        maxlevels = app.conf.task_repr_maxlevels
        argsrepr = saferepr((), amqp.argsrepr_maxsize, maxlevels=maxlevels)
        repr_size = amqp.kwargsrepr_maxsize
        origin, reply_to = anon_nodename(), app.thread_oid
        countdown, ignore_result = self.countdown, self.ignore_result
        (time_limit, soft_time_limit), options = self._limits, self._resolved
        publish, extra = self._send_kwargs()
        queue, retry_policy = publish["routing_key"], publish["retry_policy"]
        on_task_call = None if ignore_result else app.backend.on_task_call
        keep, json_text = bool(signals.after_task_publish.receivers), json_writer()
        body_text = json_text if _json_is_kombus() else None
        prepared = Prepared()
        tags = iter(uuid4_texts(len(task_ids)))
        for task_id, task_kwargs, task_headers in runs:
            message_headers, properties, body, _ = create(
                task_id, name, (), task_kwargs, countdown, None, None, None, None, 0, None,
                None, None, reply_to, time_limit, soft_time_limit, False, None, None, None,
                None, ignore_result=ignore_result, replaced_task_nesting=0,
                argsrepr=argsrepr, kwargsrepr=flat_saferepr(task_kwargs, repr_size, maxlevels),
                origin=origin, **options,
            )  # fmt: skip
            if on_task_call is not None:
                on_task_call(producer, task_id)
            message_headers.update(task_headers)
            properties.update(extra)
            before(
                sender=name, body=body, exchange="", routing_key=queue, declare=[options["queue"]],
                headers=message_headers, properties=properties, retry_policy=dict(retry_policy),
            )  # fmt: skip
            message = _published_message(
                producer, channel, body_text, body, **publish, headers=message_headers, **properties
            )
            key = _route(channel, message, queue, next(tags))
            prepared.pushes.append((key, json_text(message)))
            if keep:
                prepared.published.append((message_headers, body))
        return prepared

    def send(self, prepared: Prepared) -> None:
        """Publish a prepared batch: one pipeline on Redis, else `send_task` for each run.
        Broker errors are raised as kombu's OperationalError."""
        for task_id, task_kwargs, task_headers in prepared.runs:
            self.app.send_task(
                self.name,
                kwargs=task_kwargs,
                task_id=task_id,
                producer=self.producer,
                countdown=self.countdown,
                ignore_result=self.ignore_result,
                headers=task_headers,
                **self.options,
            )
        if not prepared.pushes:
            return
        channel = self.producer.channel
        with self.producer.connection._reraise_as_library_errors():
            if not self._declared:  # once, as each `send_task` would (kombu remembers it)
                self.producer.maybe_declare(self._resolved["queue"])
                self._declared = True
            with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
                for key, envelopes in _pushes(prepared.pushes):
                    pipe.lpush(key, *envelopes)
                pipe.execute()
        after, queue = signals.after_task_publish.send, self._resolved["queue"].name
        for headers, body in prepared.published:
            after(sender=self.name, body=body, headers=headers, exchange="", routing_key=queue)


def _route(channel: Any, message: dict[str, Any], queue: str, tag: str) -> str:
    """kombu's virtual `basic_publish` of a message to the default exchange:
    `_inplace_augment_message` (with a delivery tag made for the batch), then the Redis
    transport's list for the queue and the message's priority, as its `_put` picks it."""
    message["body"], encoding = channel.encode_body(message["body"], channel.body_encoding)
    properties = message["properties"]
    properties.update(body_encoding=encoding, delivery_tag=tag)
    properties["delivery_info"].update(exchange="", routing_key=queue)
    return str(channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False)))


def _pushes(pushes: list[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """One LPUSH per run of envelopes to the same list, of at most MAX_VALUES_PER_PUSH."""
    for key, run in groupby(pushes, key=itemgetter(0)):
        envelopes = [envelope for _, envelope in run]
        for start in range(0, len(envelopes), MAX_VALUES_PER_PUSH):
            yield key, envelopes[start : start + MAX_VALUES_PER_PUSH]
