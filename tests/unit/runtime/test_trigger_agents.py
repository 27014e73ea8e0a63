"""What the trigger agents make of the records they read: the model, or a dead letter."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

from tests.clock import TEST_NOW
from worker.core.decoding import MAX_DEAD_LETTER_RAW
from worker.core.events import SegmentChanged
from worker.core.membership import change_id
from worker.runtime.trigger_agents import _decode

CHANGE = SegmentChanged(
    change_id=change_id("ACME", "value", "a", "entered", "evt-1"),
    account_id="ACME",
    family="value",
    segment_id="a",
    change="entered",
    reason="revenue_365d >= value_a_min",
    occurred_at=TEST_NOW,
    definition_version="1",
    cause="evt-1",
    origin="event",
    live=True,
)


def event(offset: int, value: bytes) -> Any:
    """A stream event as Faust hands it to an agent (only its message is read)."""
    message = SimpleNamespace(
        topic="segment-changes", partition=2, offset=offset, key=b"ACME", value=value
    )
    return SimpleNamespace(message=message)


def test_a_record_that_is_no_segment_change_becomes_a_dead_letter() -> None:
    garbage = b'{"type": "segment_changed", "account_id": "ACME"}'
    huge = b"x" * (MAX_DEAD_LETTER_RAW + 10)
    batch = [event(7, CHANGE.model_dump_json().encode()), event(8, garbage), event(9, huge)]
    decoded, letters = _decode(batch, SegmentChanged)
    assert decoded == [CHANGE]
    first, second = letters
    assert first.reason.startswith("not a SegmentChanged: ")
    assert (first.error_kind, first.source_topic, first.source_partition, first.source_offset) == (
        "invalid_event",
        "segment-changes",
        2,
        8,
    )
    assert base64.b64decode(first.raw) == garbage and not first.raw_truncated
    assert second.raw_bytes == len(huge) and second.raw_truncated
    assert len(base64.b64decode(second.raw)) == MAX_DEAD_LETTER_RAW
