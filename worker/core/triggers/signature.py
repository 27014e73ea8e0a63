"""Signed webhook requests: HMAC-SHA256 over the timestamp and the body.

The header is ``X-Segworker-Signature: t=<unix seconds>,v1=<hex digest>``, the digest
``HMAC-SHA256(secret, "<t>.<body>")``. A receiver recomputes it with the shared secret,
compares in constant time, and refuses a timestamp too far from its clock (a replay).

Examples
--------
>>> header = sign(b"s3cret", 1772443800, b'{"trigger_id": "a1"}')
>>> header
't=1772443800,v1=bf9e480d6de909b0fab440ecfcfab1a19ab916620b177ce7be07e3ad023a48a0'
>>> verify(b"s3cret", header, b'{"trigger_id": "a1"}', now=1772443830)
True
>>> verify(b"another", header, b'{"trigger_id": "a1"}', now=1772443830)
False
>>> verify(b"s3cret", header, b'{"trigger_id": "a1"}', now=1772443800 + 3600)  # too old
False
"""

from __future__ import annotations

import hashlib
import hmac

#: The request header carrying the signature.
SIGNATURE_HEADER = "X-Segworker-Signature"
#: How far a receiver accepts the signed timestamp from its own clock, by default.
TOLERANCE_SECONDS = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: bytes, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_SECONDS
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time near ``now``."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        digest = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, digest)
