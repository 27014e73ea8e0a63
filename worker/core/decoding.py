"""From raw Kafka records to validated events, or to dead letters with a clear reason.

Pure: no I/O. Every record ends as exactly one of the two, so bad input never
crashes the worker and never vanishes.

Examples
--------
>>> record = Record("orders", 0, 7, b"ACME", b"{not json")
>>> letter = decode_record(record, {"orders": frozenset({"order_placed"})}, 1_000_000,
...     earliest_event_time=datetime(1980, 1, 1, tzinfo=UTC))
>>> letter.error_kind, letter.source_offset
('malformed_json', 7)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from worker.core.events import AnyInputEvent, DeadLetter, decode_input


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the worker sees it, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


def decode_record(
    record: Record,
    allowed_types: Mapping[str, frozenset[str]],
    max_bytes: int,
    *,
    earliest_event_time: datetime,
) -> AnyInputEvent | DeadLetter:
    """Validate one record against the event contracts and its topic.

    ``earliest_event_time`` is the floor of event times (``Settings.earliest_event_time``).
    """
    value = record.value or b""
    if len(value) > max_bytes:
        return dead_letter(record, "too_large", f"{len(value)} bytes is over the {max_bytes} limit")
    try:
        event = decode_input(value, earliest_event_time)
    except ValidationError as error:
        return dead_letter(record, *_classify(error))
    if event.type not in allowed_types.get(record.topic, frozenset()):
        return dead_letter(
            record, "wrong_topic", f"a {event.type} event does not belong on topic {record.topic}"
        )
    key = record.key.decode(errors="replace") if record.key is not None else None
    if key != event.account_id:
        return dead_letter(
            record,
            "wrong_key",
            f"record key {key!r} is not the account_id {event.account_id!r}; "
            "events must be keyed by account so that an account stays on one partition",
        )
    return event


def _classify(error: ValidationError) -> tuple[str, str]:
    problems = error.errors(include_url=False, include_input=False)
    first = problems[0]
    if first["type"] in ("json_invalid", "json_type"):
        return "malformed_json", f"not a JSON object: {first['msg']}"
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "unknown_type", f"unknown or missing event type: {first['msg']}"
    details = "; ".join(
        f"{'.'.join(str(p) for p in problem['loc'][1:]) or '(root)'}: {problem['msg']}"
        for problem in problems[:5]
    )
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return "invalid_event", details + more


#: A dead letter keeps at most this much of the value: whole values, base64-encoded, would
#: exceed the producer's max request size (1,000,000 bytes) and fail their batch forever.
MAX_DEAD_LETTER_RAW = 64 * 1024
#: Reasons quote input (an unknown type tag, a record key): one printable line, this long.
MAX_REASON_CHARS = 500


def dead_letter(record: Record, error_kind: str, reason: str) -> DeadLetter:
    value = record.value or b""
    return DeadLetter(
        reason=_one_line(reason),
        error_kind=error_kind,  # type: ignore[arg-type]
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        raw=base64.b64encode(value[:MAX_DEAD_LETTER_RAW]).decode(),
        raw_bytes=len(value),
        raw_truncated=len(value) > MAX_DEAD_LETTER_RAW,
        received_at=datetime.now(UTC),
    )


def _one_line(text: str) -> str:
    """``text`` with control characters escaped (one log line), cut to ``MAX_REASON_CHARS``."""
    escaped = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode()
        for c in text[: MAX_REASON_CHARS + 1]
    )
    if len(escaped) <= MAX_REASON_CHARS:
        return escaped
    return escaped[: MAX_REASON_CHARS - 1] + "\u2026"
