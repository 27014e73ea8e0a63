"""Webhook delivery of campaign triggers against a real HTTP server, Redis and broker."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, TopicReader
from worker.adapters.kafka_senders import ProducerSender
from worker.adapters.redis_triggers import RedisTriggerStore
from worker.adapters.webhook import WebhookClient
from worker.config.settings import DEFAULT_DEFINITIONS
from worker.core.events import CampaignTriggered
from worker.core.features import VOCABULARY
from worker.core.triggers.config import load_triggers
from worker.core.triggers.signature import SIGNATURE_HEADER, verify
from worker.runtime.metrics import Metrics
from worker.runtime.triggers import WebhookDelivery

SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook receiver on a free loopback port that fails its first ``failures``
    requests with ``status``, then accepts."""

    def __init__(self, failures: int, status: int = 503) -> None:
        self.failures = failures
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if len(self.requests) <= self.failures:
            return web.Response(status=self.status, text="busy")
        return web.Response(status=200, text="ok")

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *_: object) -> None:
        await self.runner.cleanup()


def config(url: str, attempts: int = 5):
    return load_triggers(
        f"""
version: "w-1"
triggers:
  - {{id: welcome_a, on: {{family: value, segment: a}}, campaign: welcome, destination: crm}}
destinations:
  crm: {{url: "{url}", secret_env: SEGWORKER_WEBHOOK_SECRET_CRM, rate_per_second: 50,
        max_attempts: {attempts}}}
""",
        VOCABULARY,
    )


def trigger(trigger_id: str = "t-1") -> CampaignTriggered:
    return CampaignTriggered(
        trigger_id=trigger_id,
        trigger="welcome_a",
        campaign="welcome",
        account_id="ACME",
        change_id="c-1",
        family="value",
        segment_id="a",
        change="entered",
        change_reason="revenue_365d >= value_a_min",
        occurred_at=TEST_NOW,
        fired_at=TEST_NOW,
        deliver_at=TEST_NOW,
        destination="crm",
        triggers_version="w-1",
    )


@pytest.fixture
async def parts(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    store = RedisTriggerStore(client, prefix="w")
    http = WebhookClient(timeout_seconds=5)
    async with ProducerSender(deployment.settings) as sender:
        yield deployment, store, http, sender
    await http.close()
    await client.aclose()


async def test_retries_until_accepted_with_one_idempotency_key_and_a_signature(parts) -> None:
    _, store, http, sender = parts
    receiver = Receiver(failures=3)
    async with receiver as url:
        delivery = WebhookDelivery(
            config(url),
            http,
            store,
            sender,
            Metrics(),
            retry_max_seconds=0.2,
            environ={"SEGWORKER_WEBHOOK_SECRET_CRM": SECRET},
        )
        started = time.monotonic()
        assert await delivery.deliver(trigger()) is True
    assert len(receiver.requests) == 4  # three failures, then accepted
    keys = {headers["Idempotency-Key"] for headers, _ in receiver.requests}
    assert keys == {"t-1"}
    headers, body = receiver.requests[-1]
    assert json.loads(body)["trigger_id"] == "t-1"
    signature = headers[SIGNATURE_HEADER]
    received = time.time()  # wall clock: the signature was made with the sender's clock
    assert verify(SECRET.encode(), signature, body, now=received)
    assert not verify(b"another-secret", signature, body, now=received)
    assert time.monotonic() - started >= 0.5 + 0.2 + 0.2  # backed off between attempts


async def test_a_refusing_or_failing_webhook_dead_letters_the_trigger(parts) -> None:
    deployment, store, http, sender = parts
    letters = TopicReader(
        deployment.bootstrap_servers, deployment.topic("campaign-trigger-dead-letters")
    )

    def delivery_to(url: str) -> WebhookDelivery:
        return WebhookDelivery(
            config(url, attempts=3),
            http,
            store,
            sender,
            Metrics(),
            retry_max_seconds=0.05,
            environ={"SEGWORKER_WEBHOOK_SECRET_CRM": SECRET},
        )

    refusing = Receiver(failures=100, status=422)
    async with refusing as url:
        assert await delivery_to(url).deliver(trigger("t-refused")) is False
    assert len(refusing.requests) == 1  # a 4xx is not retried
    failing = Receiver(failures=100, status=503)
    async with failing as url:
        assert await delivery_to(url).deliver(trigger("t-failing")) is False
    assert len(failing.requests) == 3
    got = letters.read_until(lambda found: len(found) >= 2)
    letters.close()
    assert [letter["trigger"]["trigger_id"] for letter in got] == ["t-refused", "t-failing"]
    assert "HTTP 422" in got[0]["reason"] and "after 3 attempt(s)" in got[1]["reason"]


async def test_holdout_and_destination_less_triggers_are_not_posted(parts) -> None:
    _, store, http, sender = parts
    receiver = Receiver(failures=0)
    async with receiver as url:
        delivery = WebhookDelivery(
            config(url),
            http,
            store,
            sender,
            Metrics(),
            environ={"SEGWORKER_WEBHOOK_SECRET_CRM": SECRET},
        )
        held_out = trigger().model_copy(update={"holdout": True})
        assert await delivery.deliver(held_out) is True
        assert await delivery.deliver(trigger().model_copy(update={"destination": None}))
    assert receiver.requests == []


def test_a_destination_without_its_secret_is_refused_at_start(parts) -> None:
    _, store, http, sender = parts
    with pytest.raises(ValueError, match="SEGWORKER_WEBHOOK_SECRET_CRM"):
        WebhookDelivery(
            config("http://127.0.0.1:9/hook"), http, store, sender, Metrics(), environ={}
        )
