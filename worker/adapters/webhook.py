"""POSTing campaign triggers to a webhook: signed, with an idempotency key.

Every request carries ``Idempotency-Key: <trigger_id>`` (a retry of the same trigger
has the same key, so the receiver sends one message) and, when the destination has a
secret, ``X-Segworker-Signature`` (``worker.core.triggers.signature``). The secret
comes from the environment variable the destination names and never reaches a log.
"""

from __future__ import annotations

import time

import aiohttp

from worker.core.triggers.signature import SIGNATURE_HEADER, sign
from worker.ports import WebhookResult

#: Statuses worth another attempt: the receiver was busy or failed, not the request.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookClient:
    """One HTTP session for every destination of a worker (``worker.ports.WebhookPoster``)."""

    def __init__(self, timeout_seconds: float = 10.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self, url: str, body: bytes, idempotency_key: str, secret: bytes | None
    ) -> WebhookResult:
        """POST ``body`` (JSON) to ``url`` once; never raises for network trouble."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return WebhookResult(True, status=response.status)
                return WebhookResult(
                    False,
                    retryable=response.status in RETRYABLE_STATUSES,
                    status=response.status,
                    error=f"HTTP {response.status} {response.reason or ''}".rstrip(),
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return WebhookResult(False, retryable=True, error=f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given in seconds (dates are not honoured).

    >>> _retry_after("3"), _retry_after(None), _retry_after("Wed, 21 Oct 2026 07:28:00 GMT")
    (3.0, None, None)
    """
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
