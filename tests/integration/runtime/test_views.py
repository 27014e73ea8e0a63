"""The ops surface of a running worker: health, readiness, metrics, segment lookups."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest

from tests.clock import TEST_NOW
from tests.integration.harness import Deployment, TopicReader, WorkerProcess, order_event, send
from worker.config.settings import DEFAULT_DEFINITIONS

T0 = TEST_NOW.replace(microsecond=0) - timedelta(days=5)
SERIES = (
    "segworker_events",
    "segworker_dead_letters",
    "segworker_batch_seconds",
    "segworker_consumer_lag",
    "segworker_segment_size",
    "segworker_segment_changes",
    "segworker_segment_flaps",
    "segworker_drift_alarms",
)


@pytest.fixture
def running(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log")
    reader = TopicReader(deployment.bootstrap_servers, deployment.topic("segment-changes"))
    send(
        deployment,
        "orders",
        *(order_event(f"ops-{n}", f"OPS{n}", T0 + timedelta(hours=n), 100.0 + n) for n in range(5)),
    )
    reader.read_until(lambda got: {c["account_id"] for c in got} >= {f"OPS{n}" for n in range(5)})
    reader.close()
    yield deployment, worker
    assert worker.stop() == 0, worker.log_tail()


def get(worker: WorkerProcess, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_health_readiness_and_metrics(running):
    _, worker = running
    assert get(worker, "/health") == (200, b'{"status":"ok"}')
    status, body = get(worker, "/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    deadline = time.monotonic() + 30
    while True:  # the gauges are refreshed on a timer
        status, body = get(worker, "/metrics")
        text = body.decode()
        if "segworker_segment_size{" in text or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200
    for series in SERIES:
        assert f"# TYPE {series}" in text, series
    assert 'segworker_events_total{outcome="applied",type="order_placed"} 5.0' in text
    assert 'segworker_segment_size{family="program",segment="never_participated"} 5.0' in text


def test_account_and_segment_lookups(running):
    _, worker = running
    status, body = get(worker, "/accounts/OPS1/segments")
    assert status == 200
    account = json.loads(body)
    assert account["account_id"] == "OPS1"
    program = [m for m in account["memberships"] if m["family"] == "program"]
    assert [(m["segment_id"], m["reason"]) for m in program] == [("never_participated", "true")]
    # Entered by an event of long ago (fixed test dates): not live when emitted.
    assert (program[0]["origin"], program[0]["live"]) == ("event", False)
    # The needs segments debounce their entry (enter_after: 2d); stream time has moved
    # 3 h past OPS1's only order, so its entry is pending, shown with when it began.
    assert account["pending"] == [
        {
            "family": "needs",
            "segment_id": "tools_buyers",
            "qualifying_since": (T0 + timedelta(hours=1)).isoformat(),
        }
    ]
    assert not any(m["family"] == "needs" for m in account["memberships"])
    assert get(worker, "/accounts/NOBODY/segments")[0] == 404

    overview = json.loads(get(worker, "/segments")[1])["segments"]
    sizes = {(s["family"], s["segment_id"]): s["size"] for s in overview}
    assert sizes[("program", "never_participated")] == 5
    assert sizes[("program", "champions")] == 0

    seen, cursor = [], 0
    while True:
        page = json.loads(
            get(worker, f"/segments/program/never_participated/members?cursor={cursor}&count=2")[1]
        )
        seen += page["members"]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == [f"OPS{n}" for n in range(5)]
    assert get(worker, "/segments/program/x/members?count=abc")[0] == 400


TOKEN = "ops-token-0123456789"


def test_data_endpoints_need_the_token_and_the_probes_do_not(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    deployment.create_topics()
    worker = WorkerProcess(deployment, tmp_path / "worker.log", SEGWORKER_WEB_TOKEN=TOKEN)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(worker, "/health")[0] == 200:
                    break
            except urllib.error.URLError:  # not listening yet
                pass
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        data = ("/accounts/OPS1/segments", "/segments", "/segments/value/a/members")
        for path in data:
            assert get(worker, path)[0] == 401, path
            assert get(worker, path, token="wrong-token-0123456789")[0] == 401, path
            assert get(worker, path, token=TOKEN)[0] in (200, 404), path
        assert get(worker, "/segments", token=TOKEN)[0] == 200
        for path in ("/health", "/ready", "/metrics"):
            assert get(worker, path)[0] == 200, path
        assert TOKEN not in worker.log_path.read_text(errors="replace")
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_a_network_address_without_a_token_is_refused(kafka, redis_server, tmp_path):
    deployment = Deployment(kafka.bootstrap_servers, redis_server.url, DEFAULT_DEFINITIONS)
    worker = WorkerProcess(deployment, tmp_path / "worker.log", SEGWORKER_WEB_HOST="0.0.0.0")
    code = worker.process.wait(60)
    worker.stop()
    assert code == 2
    log = worker.log_path.read_text()
    assert "refusing to serve account data on 0.0.0.0 without a token" in log
    assert "SEGWORKER_WEB_TOKEN" in log
