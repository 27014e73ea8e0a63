"""The Faust application: topics, the one segmentation agent, timers, web views.

The only module that creates clients. The agent reads all input topics (they are
co-partitioned by account id), takes batches, hands them to ``BatchProcessor``
and acks the records only after the batch is durable and its changes delivered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any, cast

import aiokafka
import faust
import redis.asyncio as aioredis
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT
from yarl import URL

from worker.agents import TRANSIENT_ERRORS, BatchProcessor
from worker.batching import take_batches
from worker.decoding import Record
from worker.events import DeadLetter, SegmentChanged, SegmentDrift
from worker.features import VOCABULARY
from worker.learning import ClusterTrainer, clusterings, decode_samples, encode_samples
from worker.metrics import Metrics
from worker.monitoring import SegmentMonitor
from worker.rules import Definitions, load_definitions
from worker.settings import Settings
from worker.store import BatchResult, StateStore
from worker.views import register_views, segment_overview

log = logging.getLogger(__name__)

#: Stale outbox entries are looked for this often (seconds).
OUTBOX_SWEEP_INTERVAL = 10.0
#: Segment size and consumer lag gauges are refreshed this often (seconds).
METRICS_INTERVAL = 10.0


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


class KafkaSender:
    """Sends through the Faust app's producer and waits for the broker's acknowledgement.

    ``app.producer.send`` directly, not ``topic.send``: the topic path costs about
    2.4x more per message, and it holds messages back when publish-on-commit is on.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.changes_topic = settings.topic_segment_changes
        self.dead_letter_topic = settings.topic_dead_letters
        self.samples_topic = settings.topic_cluster_samples
        self.drift_topic = settings.topic_segment_drift

    async def send_changes(self, changes: Sequence[SegmentChanged]) -> None:
        await self._send_all(
            self.changes_topic,
            [(c.account_id.encode(), c.model_dump_json().encode()) for c in changes],
        )

    async def send_samples(self, samples: Sequence[dict[str, Any]]) -> None:
        await self._send_all(
            self.samples_topic, [(b"samples", message) for message in encode_samples(samples)]
        )

    async def send_drift(self, event: SegmentDrift) -> None:
        await self._send_all(self.drift_topic, [(b"drift", event.model_dump_json().encode())])

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        await self._send_all(
            self.dead_letter_topic,
            [
                (f"{d.source_topic}:{d.source_partition}".encode(), d.model_dump_json().encode())
                for d in letters
            ],
        )

    async def _send_all(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        producer = self.app.producer
        pending = [
            await producer.send(topic, key, value, None, None, None) for key, value in messages
        ]
        await asyncio.gather(*pending)


def create_app(settings: Settings, definitions: Definitions | None = None) -> faust.App:
    """Build the Faust app for ``settings`` (connection settings must be set)."""
    if not settings.kafka_bootstrap_servers or not settings.redis_url:
        raise ValueError("create_app needs kafka_bootstrap_servers and redis_url")
    definitions = definitions or load_definitions(settings.definitions_path, VOCABULARY)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        # Without a leader topic Faust needs no internal topic the operator must provision.
        topic_disable_leader=True,
        # Faust's default of 1200 s would block a delivery for 20 minutes on a frozen broker.
        producer_request_timeout=30.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        loghandlers=[],
    )
    # Before anything creates faust's own transport (``app.transport`` is lazy).
    app.transport = KafkaTransport(
        app.conf.broker_consumer, app, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms
    )
    # Raw bytes in and out: decoding is ours, so bad input becomes a dead letter.
    inputs = app.topic(*settings.input_topics, key_serializer="raw", value_serializer="raw")
    metrics = Metrics()
    redis = aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)
    store = StateStore(
        redis,
        settings.redis_key_prefix,
        [c.family for c in clusterings(settings)],
        settings.cluster_margin,
    )
    sender = KafkaSender(app, settings)
    trainer = ClusterTrainer(settings, store)
    processor = BatchProcessor(settings, definitions, store, sender, metrics)
    monitor = SegmentMonitor(settings, definitions, store, sender, metrics)
    app.segmentation = processor  # type: ignore[attr-defined]

    def timer(interval: float) -> Any:
        """``app.timer`` whose body survives a transient Redis/Kafka error (next tick retries):
        Faust crashes the whole app on an exception in a timer."""

        def decorate(fun: Any) -> Any:
            @functools.wraps(fun)
            async def guarded() -> None:
                try:
                    await fun()
                except TRANSIENT_ERRORS as error:
                    metrics.retries.labels(fun.__name__).inc()
                    log.warning("%s failed (%s); retried at the next tick", fun.__name__, error)

            return app.timer(interval=interval)(guarded)

        return decorate

    outbox_flush_pending = asyncio.Event()
    outbox_flush_pending.set()

    async def flush_outbox_if_pending() -> None:
        if outbox_flush_pending.is_set():
            outbox_flush_pending.clear()
            await processor.drain_outbox()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def flush_outbox_before_next_batch(
        sender: faust.App, assigned: set[Any], **kwargs: Any
    ) -> None:
        outbox_flush_pending.set()

    @app.task
    async def record_definitions() -> None:
        """What each family of these definitions is, for a later recompute to see which
        families a new version changed (``worker.impact``)."""
        await processor.record_definitions()

    @app.agent(inputs, name="segment")
    async def segment(stream: faust.StreamT) -> None:
        # Acks are ours: a record is acked only after its batch is durable and delivered.
        # One batch is delivered while the next is applied: the broker's round trip no
        # longer holds up the next batch. Deliveries stay in batch order (the next one
        # starts after the previous one finished), so at most one is in flight.
        delivering: asyncio.Future[None] | None = None
        try:
            async for batch in take_batches(
                stream.noack(),  # type: ignore[attr-defined]
                settings.batch_size,
                settings.batch_within_seconds,
                settings.batch_settle_seconds,
                input_lag,
            ):
                await flush_outbox_if_pending()
                committed = await processor.commit([_record(event) for event in batch])
                if delivering is not None:
                    await delivering
                delivering = asyncio.ensure_future(deliver_and_ack(stream, batch, committed))
            if delivering is not None:
                await delivering
        finally:
            # Stopped or revoked: an unfinished delivery is left to the outbox, and its
            # records, never acked, are consumed again by whoever owns them next.
            if delivering is not None and not delivering.done():
                delivering.cancel()

    def input_lag() -> int:
        """Records of the input partitions on the broker not yet handed to the agent (as of
        the consumer's last fetch)."""
        return sum(partition_lags().values())

    def partition_lags() -> dict[TP, int]:
        consumer = app.consumer
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)  # None until the partition was fetched
            if tp.topic in settings.input_topics and highwater is not None:
                read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]  # no public API
                lags[tp] = max(highwater - (read + 1 if read is not None else 0), 0)
        return lags

    async def deliver_and_ack(
        stream: faust.StreamT, batch: Sequence[EventT], committed: BatchResult
    ) -> None:
        await processor.finish(committed)
        for event in batch:
            await stream.ack(event)

    samples = app.topic(
        settings.topic_cluster_samples, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(samples, name="learn")
    async def learn(stream: faust.StreamT) -> None:
        # One partition: exactly one worker owns the models at a time.
        async for batch in stream.take(100, within=1.0):
            samples = [sample for value in batch for sample in decode_samples(value)]
            await trainer.learn(samples)
            for sample in samples:
                monitor.observe_sample(sample)

    def owns_side_loops() -> bool:
        """The worker that owns the sample partition runs the learner and the monitor."""
        return TP(settings.topic_cluster_samples, 0) in app.consumer.assignment()

    # Families whose new model the stored accounts still have to be re-assigned to.
    reassign_pending: dict[str, int] = {}
    reassign_wanted = asyncio.Event()

    @timer(settings.cluster_snapshot_seconds)
    async def publish_cluster_models() -> None:
        for family, snapshot in await trainer.publish():
            monitor.observe_snapshot(family, snapshot)
            reassign_pending[family] = snapshot.version
            reassign_wanted.set()

    @app.task
    async def reassign_clusters() -> None:
        """Re-assign the stored accounts after new models, in the background and paced.

        Not in the publish timer: a pass over many accounts takes minutes at its pace.
        Models published during a pass are taken together by the next one; an account
        that gets an event meanwhile is assigned with the newest model in its batch anyway.
        """
        while True:
            await reassign_wanted.wait()
            reassign_wanted.clear()
            versions = dict(reassign_pending)
            try:
                await flush_outbox_if_pending()
                moved = await processor.reassign_clusters(versions)
            except TRANSIENT_ERRORS as error:
                metrics.retries.labels("reassign_clusters").inc()
                log.warning("cluster re-assignment failed (%s); starting again", error)
                await asyncio.sleep(settings.retry_max_seconds)
                reassign_wanted.set()
                continue
            for family, version in versions.items():
                if reassign_pending.get(family) == version:
                    del reassign_pending[family]
            models = ", ".join(f"{family} v{version}" for family, version in versions.items())
            log.info("%s: %d cluster changes", models, moved)

    @timer(settings.drift_interval_seconds)
    async def segment_drift() -> None:
        if owns_side_loops():
            await monitor.close_interval()

    @timer(settings.profile_interval_seconds)
    async def segment_profiles() -> None:
        if owns_side_loops():
            await monitor.refresh_profiles()

    @timer(OUTBOX_SWEEP_INTERVAL)
    async def resend_outbox() -> None:
        await processor.resend_stale_outbox()

    @timer(settings.sweep_interval_seconds)
    async def sweep_due() -> None:
        await flush_outbox_if_pending()
        # Drain what is due now, within half an interval, so a replay's sweep keeps up
        # without starving the agent.
        deadline = asyncio.get_running_loop().time() + settings.sweep_interval_seconds / 2
        while await processor.sweep_due() >= settings.sweep_batch_size:
            if asyncio.get_running_loop().time() > deadline:
                break

    @timer(settings.value_interval_seconds)
    async def refresh_value_thresholds() -> None:
        await flush_outbox_if_pending()
        await processor.refresh_thresholds()

    @timer(METRICS_INTERVAL)
    async def refresh_gauges() -> None:
        for row in await segment_overview(store, definitions):
            metrics.segment_size.labels(row["family"], row["segment_id"]).set(row["size"])
        for tp, lag in partition_lags().items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    register_views(app, store, definitions, metrics)
    return app


def _record(event: EventT) -> Record:
    message = event.message
    return Record(message.topic, message.partition, message.offset, message.key, message.value)
