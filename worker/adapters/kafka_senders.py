"""Senders: segment changes, dead letters, training samples, drift and campaign triggers.

Every send returns only once the broker acknowledged every message
(``worker.ports.Sender``, ``TriggerSender``, ``DriftSender``). What goes to which topic
with which key is written once, in ``KafkaSender``; ``FaustSender`` sends through the
running Faust app's producer (the worker), ``ProducerSender`` through an aiokafka producer
of its own (the operator commands, tests and benches).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.exceptions import NotReady

from worker.adapters.kafka_options import kafka_client_options
from worker.config.settings import Settings
from worker.core.events import (
    CampaignTriggerDeadLetter,
    CampaignTriggered,
    DeadLetter,
    SegmentChanged,
    SegmentDrift,
)
from worker.core.samples import encode_samples

Message = tuple[bytes, bytes]


class ProducerUnavailable(ConnectionError):
    """The producer is not running (the worker is starting or stopping): retried later."""


class KafkaSender(ABC):
    """The worker's outgoing messages: topics from the settings, keys by account."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None:
        await self._send_all(
            self.settings.topic_segment_changes,
            [(c.account_id.encode(), c.model_dump_json().encode()) for c in changes],
        )

    async def send_samples(self, samples: Sequence[dict[str, Any]]) -> None:
        await self._send_all(
            self.settings.topic_cluster_samples,
            [(b"samples", message) for message in encode_samples(samples)],
        )

    async def send_drift(self, event: SegmentDrift) -> None:
        await self._send_all(
            self.settings.topic_segment_drift, [(b"drift", event.model_dump_json().encode())]
        )

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        await self._send_all(
            self.settings.topic_dead_letters,
            [
                (f"{d.source_topic}:{d.source_partition}".encode(), d.model_dump_json().encode())
                for d in letters
            ],
        )

    async def send_triggers(self, triggers: Sequence[CampaignTriggered]) -> None:
        await self._send_all(
            self.settings.topic_campaign_triggers,
            [(t.account_id.encode(), t.model_dump_json().encode()) for t in triggers],
        )

    async def send_trigger_dead_letters(
        self, letters: Sequence[tuple[CampaignTriggered, str]]
    ) -> None:
        await self._send_all(
            self.settings.topic_trigger_dead_letters,
            [
                (
                    trigger.account_id.encode(),
                    CampaignTriggerDeadLetter(reason=reason, trigger=trigger)
                    .model_dump_json()
                    .encode(),
                )
                for trigger, reason in letters
            ],
        )

    @abstractmethod
    async def _send_all(self, topic: str, messages: list[Message]) -> None:
        """Send ``(key, value)`` messages to ``topic``; return once all are acknowledged."""


class FaustSender(KafkaSender):
    """Sends through the Faust app's producer and waits for the broker's acknowledgement.

    ``app.producer.send`` directly, not ``topic.send``: the topic path costs about
    2.4x more per message, and it holds messages back when publish-on-commit is on.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        super().__init__(settings)
        self.app = app

    async def _send_all(self, topic: str, messages: list[Message]) -> None:
        producer = self.app.producer
        try:
            pending = [
                await producer.send(topic, key, value, None, None, None) for key, value in messages
            ]
        except NotReady as error:
            # The producer stops before the app's background tasks do: a pass that sends
            # while the worker shuts down must wait to be cancelled (its changes are in
            # the outbox), not crash the worker with exit code 1.
            raise ProducerUnavailable(f"the producer is not running: {error}") from error
        await asyncio.gather(*pending)


class ProducerSender(KafkaSender):
    """A sender of its own for command-line tools: an aiokafka producer, acks from all."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=5,
            **kafka_client_options(settings),
        )

    async def __aenter__(self) -> ProducerSender:
        try:
            await self.producer.start()
        except BaseException:
            await self.producer.stop()  # a failed start leaves its connections open
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.producer.stop()

    async def _send_all(self, topic: str, messages: list[Message]) -> None:
        pending = [await self.producer.send(topic, key=key, value=value) for key, value in messages]
        await asyncio.gather(*pending)
