"""The baseline of ``throughput.py``: a Faust agent that does nothing but batch and ack.

Same topics, same batching and ack pattern, same broker settings as the real worker,
so the difference between the two is the cost of the segmentation itself.
"""

from __future__ import annotations

import os

import faust

from worker.config.settings import Settings


def main() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap_servers
    app = faust.App(
        os.environ.get("BENCH_TRIVIAL_APP_ID", "bench-trivial"),
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store="memory://",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        loghandlers=[],
    )
    inputs = app.topic(*settings.input_topics, key_serializer="raw", value_serializer="raw")

    @app.agent(inputs)
    async def trivial(stream: faust.StreamT) -> None:
        async for batch in stream.noack().noack_take(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_within_seconds
        ):
            for event in batch:
                await stream.ack(event)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
