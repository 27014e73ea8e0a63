"""The trigger router's agents in the Faust app (with ``SEGWORKER_TRIGGERS_ENABLED``).

- ``triggers`` reads ``segment-changes`` in batches and routes them
  (``TriggerRouter.route``): the records are acked once their triggers are recorded and
  the immediate ones acknowledged by Kafka. A record that is no ``SegmentChanged`` goes
  to the dead-letter topic.
- a timer sends the triggers quiet hours delayed once they are due, and those a dead
  worker left in the outbox;
- ``webhooks`` reads ``campaign-triggers`` and POSTs every trigger that names a
  destination (``WebhookDelivery``), acking each once delivered or dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import faust
from faust.types import EventT
from pydantic import BaseModel, ValidationError

from worker.adapters.factory import trigger_store, webhook_client
from worker.adapters.kafka_senders import FaustSender
from worker.config.settings import Settings
from worker.config.triggers import load_configured_triggers
from worker.core.decoding import dead_letter
from worker.core.definitions import Definitions
from worker.core.events import CampaignTriggered, DeadLetter, SegmentChanged
from worker.ports import StateStore
from worker.runtime.batching import record_of, take_batches
from worker.runtime.metrics import Metrics
from worker.runtime.triggers import TriggerRouter, WebhookDelivery

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
#: How often delayed and stale outbox triggers are looked for (seconds).
DUE_INTERVAL = 1.0


def register_trigger_agents(
    app: faust.App,
    settings: Settings,
    definitions: Definitions,
    segmentation: StateStore,
    sender: FaustSender,
    metrics: Metrics,
    timer: Callable[[float], Callable[[Any], Any]],
) -> TriggerRouter:
    """Add the router's agents and timer to ``app``; returns the router."""
    config = load_configured_triggers(settings, definitions)
    store = trigger_store(settings)
    router = TriggerRouter(config, segmentation, store, sender, metrics)
    changes = app.topic(
        settings.topic_segment_changes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(changes, name="triggers")
    async def route_triggers(stream: faust.StreamT) -> None:
        async for batch in take_batches(
            stream.noack(),  # type: ignore[attr-defined]
            settings.batch_size,
            settings.batch_within_seconds,
            settings.batch_settle_seconds,
        ):
            decoded, letters = _decode(batch, SegmentChanged)
            await _dead_letters(sender, metrics, letters)
            # Sequential on purpose: sending one batch while deciding the next, as the
            # segmentation agent does, measured no better (bench/triggers.py, 30 s at
            # 1,000 changes/s: p99 571 ms with it, 394 ms without; the time goes to the
            # first hop and the batch wait, not to the broker's acknowledgement).
            await router.route(decoded)
            for event in batch:
                await stream.ack(event)

    @timer(DUE_INTERVAL)
    async def send_due_triggers() -> None:
        await router.send_due(stale_after=settings.outbox_resend_after_seconds)

    if config.destinations:
        delivery = WebhookDelivery(
            config,
            webhook_client(),
            store,
            sender,
            metrics,
            retry_max_seconds=settings.retry_max_seconds,
        )
        triggered = app.topic(
            settings.topic_campaign_triggers, key_serializer="raw", value_serializer="raw"
        )

        @app.agent(triggered, name="webhooks")
        async def deliver_webhooks(stream: faust.StreamT) -> None:
            async for batch in take_batches(
                stream.noack(),  # type: ignore[attr-defined]
                settings.batch_size,
                settings.batch_within_seconds,
                settings.batch_settle_seconds,
            ):
                decoded, letters = _decode(batch, CampaignTriggered)
                await _dead_letters(sender, metrics, letters)
                for trigger in decoded:
                    await delivery.deliver(trigger)
                for event in batch:
                    await stream.ack(event)

    return router


async def _dead_letters(sender: FaustSender, metrics: Metrics, letters: list[DeadLetter]) -> None:
    if letters:
        await sender.send_dead_letters(letters)
        for letter in letters:
            metrics.dead_letters.labels(letter.error_kind).inc()
            log.warning("dead letter from %s: %s", letter.source_topic, letter.reason)


def _decode(batch: Sequence[EventT], model: type[M]) -> tuple[list[M], list[DeadLetter]]:
    """The records of ``batch`` as ``model`` instances, and dead letters for the others."""
    decoded: list[M] = []
    letters: list[DeadLetter] = []
    for event in batch:
        try:
            decoded.append(model.model_validate_json(event.message.value or b""))
        except ValidationError as error:
            reason = f"not a {model.__name__}: {error.errors()[0]['msg']}"
            letters.append(dead_letter(record_of(event), "invalid_event", reason))
    return decoded, letters
