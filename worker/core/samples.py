"""Training samples of the cluster models and their messages on the sample topic.

Every worker sends, per account and at most every ``cluster_sample_days`` of stream
time, ``{"family", "account_id", "features"}`` to a one-partition topic; the worker that
owns it trains the models (``worker.runtime.learning``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: Samples per message on the sample topic: one message per batch, not per sample,
#: keeps the learner's Kafka overhead per batch (a sample is about 250 bytes).
SAMPLES_PER_MESSAGE = 500


def encode_samples(samples: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Training samples as messages of the sample topic: JSON arrays of samples.

    >>> encode_samples([{"family": "cluster", "account_id": "A", "features": {}}])
    [b'[{"family":"cluster","account_id":"A","features":{}}]']
    """
    return [
        json.dumps(samples[i : i + SAMPLES_PER_MESSAGE], separators=(",", ":")).encode()
        for i in range(0, len(samples), SAMPLES_PER_MESSAGE)
    ]


def decode_samples(raw: bytes | None) -> list[dict[str, Any]]:
    """The samples in one message; a single sample object is accepted too, garbage is not.

    >>> decode_samples(b'[{"family": "cluster"}, 3]'), decode_samples(b"{oops")
    ([{'family': 'cluster'}], [])
    """
    try:
        decoded = json.loads(raw or b"")
    except ValueError:
        return []
    items = decoded if isinstance(decoded, list) else [decoded]
    return [item for item in items if isinstance(item, dict)]
