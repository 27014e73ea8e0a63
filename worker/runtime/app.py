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
from typing import Any

import faust
from faust.types import TP, EventT

from worker.adapters.factory import TRANSIENT_ERRORS, state_store
from worker.adapters.faust_transport import KafkaTransport, broker_credentials
from worker.adapters.kafka_senders import FaustSender
from worker.config.families import configured_families
from worker.config.settings import Settings
from worker.core.definitions import Definitions, load_definitions
from worker.core.families import Families
from worker.core.features import VOCABULARY
from worker.core.samples import decode_samples
from worker.ports import BatchResult
from worker.runtime.batching import record_of, take_batches
from worker.runtime.learning import ClusterTrainer
from worker.runtime.metrics import Metrics
from worker.runtime.monitoring import SegmentMonitor
from worker.runtime.overview import segment_overview
from worker.runtime.processor import BatchProcessor
from worker.runtime.trigger_agents import register_trigger_agents
from worker.runtime.views import check_binding, register_views

log = logging.getLogger(__name__)

#: Stale outbox entries are looked for this often (seconds).
OUTBOX_SWEEP_INTERVAL = 10.0
#: Segment size and consumer lag gauges are refreshed this often (seconds).
METRICS_INTERVAL = 10.0


def create_app(
    settings: Settings,
    definitions: Definitions | None = None,
    families: Families | None = None,
) -> faust.App:
    """Build the Faust app for ``settings`` (connection settings must be set)."""
    if not settings.kafka_bootstrap_servers or not settings.redis_url:
        raise ValueError("create_app needs kafka_bootstrap_servers and redis_url")
    check_binding(settings)
    definitions = definitions or load_definitions(settings.definitions_path, VOCABULARY)
    families = families or configured_families(settings, definitions)
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
    store = state_store(settings)
    sender = FaustSender(app, settings)
    trainer = ClusterTrainer(settings, store)
    processor = BatchProcessor(settings, families, store, sender, metrics)
    monitor = SegmentMonitor(settings, families, store, sender, metrics)
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

    store_ready = asyncio.Event()

    @app.task
    async def record_definitions() -> None:
        """Check the stored key layout (a worker configured for another shard count than
        the state was written with stops here: ``LayoutMismatch``), then record what each
        family of these definitions is, for a later recompute to see which families a new
        version changed (``worker.core.impact``)."""
        await processor.retrying("redis", store.prepare)
        store_ready.set()
        await processor.record_definitions()

    @app.agent(inputs, name="segment")
    async def segment(stream: faust.StreamT) -> None:
        # Acks are ours: a record is acked only after its batch is durable and delivered.
        # One batch is delivered while the next is applied: the broker's round trip no
        # longer holds up the next batch. Deliveries stay in batch order (the next one
        # starts after the previous one finished), so at most one is in flight.
        delivering: asyncio.Future[None] | None = None
        await store_ready.wait()  # nothing is written before the layout is checked
        try:
            async for batch in take_batches(
                stream.noack(),  # type: ignore[attr-defined]
                settings.batch_size,
                settings.batch_within_seconds,
                settings.batch_settle_seconds,
                input_lag,
            ):
                await flush_outbox_if_pending()
                committed = await processor.commit([record_of(event) for event in batch])
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
        # Any worker may store new cut-offs; one runs the pass that applies them, and
        # resumes one that a killed worker or a failover cut short.
        await processor.refresh_thresholds(apply=owns_side_loops())

    @timer(METRICS_INTERVAL)
    async def refresh_gauges() -> None:
        for row in await segment_overview(store, families):
            metrics.segment_size.labels(row["family"], row["segment_id"]).set(row["size"])
        for tp, lag in partition_lags().items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    router = None
    if settings.triggers_enabled:
        router = register_trigger_agents(app, settings, definitions, store, sender, metrics, timer)
    register_views(app, store, families, metrics, settings, router)
    return app
