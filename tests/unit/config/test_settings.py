"""Settings of the cluster model publishing, of the worker's consumer and of the event-time
floor, and how the consumer's fetch max wait reaches aiokafka."""

from __future__ import annotations

from datetime import UTC, datetime

import aiokafka
import pytest
from pydantic import ValidationError

from worker.adapters.faust_transport import KafkaTransport, set_fetch_max_wait
from worker.config.settings import Settings
from worker.core.events import EARLIEST_EVENT_TIME_SETTING
from worker.runtime.app import create_app

CONNECTED = {"kafka_bootstrap_servers": "127.0.0.1:9", "redis_url": "redis://127.0.0.1:9/0"}


def test_defaults() -> None:
    settings = Settings()
    assert settings.consumer_fetch_max_wait_ms == 100
    assert settings.cluster_publish_min_shift == 0.1
    assert settings.cluster_reassign_batch_size == 100
    assert settings.cluster_reassign_share == 0.25


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGWORKER_CONSUMER_FETCH_MAX_WAIT_MS", "20")
    monkeypatch.setenv("SEGWORKER_CLUSTER_PUBLISH_MIN_SHIFT", "0")
    monkeypatch.setenv("SEGWORKER_CLUSTER_REASSIGN_SHARE", "1")
    settings = Settings()
    assert settings.consumer_fetch_max_wait_ms == 20
    assert settings.cluster_publish_min_shift == 0.0
    assert settings.cluster_reassign_share == 1.0


@pytest.mark.parametrize(
    "values",
    [
        {"consumer_fetch_max_wait_ms": 0},
        {"consumer_fetch_max_wait_ms": 60_000},
        {"cluster_publish_min_shift": -0.1},
        {"cluster_reassign_share": 0},
        {"cluster_reassign_share": 1.5},
        {"cluster_reassign_batch_size": 0},
        {"web_port": 0},  # faust would refuse it only at start-up
        {"web_port": 65_536},
    ],
)
def test_out_of_range_values_are_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(values)


async def test_the_worker_consumer_gets_the_configured_fetch_max_wait() -> None:
    app = create_app(Settings.model_validate({**CONNECTED, "consumer_fetch_max_wait_ms": 42}))
    assert isinstance(app.transport, KafkaTransport)
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 42
        assert consumer._group_id == app.conf.id  # otherwise faust's own consumer
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # never started: its loop would leak


async def test_set_fetch_max_wait_refuses_a_started_or_unknown_consumer() -> None:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    try:
        set_fetch_max_wait(consumer, 7)
        assert consumer._fetch_max_wait_ms == 7
        consumer._fetcher = object()
        with pytest.raises(RuntimeError, match="started"):
            set_fetch_max_wait(consumer, 7)
    finally:
        consumer._fetcher = None
        await consumer.stop()
    with pytest.raises(RuntimeError, match="_fetch_max_wait_ms"):
        set_fetch_max_wait(object(), 7)


def test_a_batch_cannot_settle_for_longer_than_its_window() -> None:
    with pytest.raises(ValidationError, match="batch_settle_seconds"):
        Settings(batch_within_seconds=0.01, batch_settle_seconds=0.02)


def test_the_event_time_floor_admits_long_b2b_histories_but_not_epoch_zero() -> None:
    floor = Settings().earliest_event_time
    assert datetime(1970, 1, 1, tzinfo=UTC) < floor <= datetime(1997, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "floor"),
    [
        ("1975-06-01", datetime(1975, 6, 1, tzinfo=UTC)),  # a date: midnight UTC
        ("1990-01-01T00:00:00+01:00", datetime(1989, 12, 31, 23, tzinfo=UTC)),
        ("1990-01-01T06:00:00", datetime(1990, 1, 1, 6, tzinfo=UTC)),  # naive: UTC
    ],
)
def test_the_event_time_floor_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, floor: datetime
) -> None:
    assert EARLIEST_EVENT_TIME_SETTING == "SEGWORKER_EARLIEST_EVENT_TIME"
    monkeypatch.setenv(EARLIEST_EVENT_TIME_SETTING, value)
    settled = Settings().earliest_event_time
    assert settled == floor and settled.utcoffset() is not None


@pytest.mark.parametrize("value", ["1970-01-01", "1969-12-31", "0001-01-01", "9999-12-31", "x"])
def test_an_event_time_floor_that_lets_garbage_in_or_refuses_everything_is_refused(
    value: str,
) -> None:
    with pytest.raises(ValidationError, match="earliest_event_time"):
        Settings.model_validate({"earliest_event_time": value})
