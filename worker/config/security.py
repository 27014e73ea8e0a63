"""Keeping secrets out of logs: :func:`redacted_url` masks the password of a connection
URL (``redis://:pw@host``, ``rediss://user:pw@host``, ``?password=pw``) so the URL can be
logged or shown. (The Kafka security options of the clients are built in
``worker.adapters.kafka_options``.)

Examples
--------
>>> redacted_url("redis://:s3cret@redis.internal:6379/0")
'redis://:***@redis.internal:6379/0'
>>> redacted_url("rediss://worker:s3cret@redis.internal:6380/0?ssl_ca_certs=/etc/ca.pem")
'rediss://worker:***@redis.internal:6380/0?ssl_ca_certs=/etc/ca.pem'
>>> redacted_url("redis://127.0.0.1:6379/0")
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "bearer_token_matches", "is_loopback", "redacted_url"]

#: What a secret is replaced with.
MASK = "***"
#: Query parameters whose value is a secret (compared case-insensitively).
_SECRET_PARAMETERS = frozenset(
    {"password", "pass", "pwd", "passwd", "secret", "token", "auth", "sasl_plain_password"}
)


def redacted_url(url: str) -> str:
    """``url`` with its password (in the user info or the query) replaced by ``***``.

    The user name stays when a password follows it; user info without a ``:`` is masked
    whole, since some clients read it as the password. A URL that cannot be parsed is
    masked completely rather than shown. Everything else is kept character for character.

    Examples
    --------
    >>> redacted_url("redis://default:p%40ss@host/0")
    'redis://default:***@host/0'
    >>> redacted_url("redis://host:6379/0?password=s3cret&db=1")
    'redis://host:6379/0?password=***&db=1'
    >>> redacted_url("redis://s3cret@host")
    'redis://***@host'
    >>> redacted_url("redis://[::1")
    '***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")  # the password itself may hold '@'
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={MASK}" if equals and name.lower() in _SECRET_PARAMETERS else item


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token, compared in
    constant time (a wrong token takes as long as a right one).

    >>> bearer_token_matches("Bearer s3cret", "s3cret"), bearer_token_matches("Bearer x", "s3cret")
    (True, False)
    >>> bearer_token_matches(None, "s3cret"), bearer_token_matches("Basic s3cret", "s3cret")
    (False, False)
    """
    if not authorization or not token:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server reachable from this machine only.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.5", "")]
    [True, True, True, False, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
