"""Faust's Kafka transport as the worker needs it: credentials, and a fetch wait it sets.

faust-streaming has no setting for its worker consumer's fetch max wait (it hard-codes
1500 ms) and builds its SSL/SASL credentials from objects of its own; both are made here
from the settings, so the runtime names no Kafka client.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from yarl import URL

from worker.config.settings import Settings


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SASL/SSL, or None for plaintext."""
    import ssl

    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username or "",
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context if settings.kafka_security_protocol == "SASL_SSL" else None,
    )


def set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, fetch_max_wait_ms: int) -> None:
    """Set the fetch max wait of a not yet started aiokafka consumer.

    aiokafka takes it as a constructor argument only and hands it to the fetcher that
    ``start()`` creates; faust passes 1500 and has no setting for it. Fails loudly if a
    new aiokafka keeps it elsewhere, rather than silently keeping 1500.
    """
    if getattr(consumer, "_fetcher", None) is not None:
        raise RuntimeError("the consumer is already started")
    if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
        raise RuntimeError(f"aiokafka {aiokafka.__version__}: no _fetch_max_wait_ms to set")
    consumer._fetch_max_wait_ms = fetch_max_wait_ms


class WorkerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        set_fetch_max_wait(consumer, cast(KafkaTransport, transport).fetch_max_wait_ms)
        return consumer


class WorkerConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return WorkerConsumerThread(self, loop=self.loop, beacon=self.beacon)


class KafkaTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport, with the worker consumer's fetch max wait configurable.

    faust-streaming 0.15 hard-codes ``fetch_max_wait_ms=1500`` for it. Kafka answers a
    fetch as soon as data arrives, so there this only sets how often an idle consumer
    asks again; a broker that waits out the time (the embedded one often does) adds up to
    that much latency to every hop. Only the worker consumer changes: a client-only app's
    consumer and the producer are faust's.
    """

    Consumer = WorkerConsumer

    def __init__(self, url: list[URL], app: faust.App, *, fetch_max_wait_ms: int) -> None:
        super().__init__(url, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
