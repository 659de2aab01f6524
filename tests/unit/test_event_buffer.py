"""The worker's consumer buffers task events in big batches (see EVENT_BUFFER_LIMIT)."""

from __future__ import annotations

from types import SimpleNamespace

from celery.bootsteps import Blueprint

from conveyor.workers.consumer import EVENT_BUFFER_LIMIT, Consumer, EventBuffer


def test_the_consumer_runs_the_event_buffer_step_after_celerys_events_step() -> None:
    blueprint: Blueprint = Consumer.Blueprint()
    names = [step.name for step in blueprint._finalize_steps(blueprint.claim_steps())]
    assert names.index(EventBuffer.name) > names.index("celery.worker.consumer.events.Events")


def test_the_event_buffer_raises_celerys_limit_of_24_on_each_new_dispatcher() -> None:
    dispatcher = SimpleNamespace(buffer_limit=24)
    EventBuffer(SimpleNamespace()).start(SimpleNamespace(event_dispatcher=dispatcher))
    assert dispatcher.buffer_limit == EVENT_BUFFER_LIMIT > 24
    EventBuffer(SimpleNamespace()).start(SimpleNamespace(event_dispatcher=None))
