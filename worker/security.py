"""Keeping secrets out of logs, and the Kafka security options of plain clients.

* :func:`redacted_url` masks the password of a connection URL (``redis://:pw@host``,
  ``rediss://user:pw@host``, ``?password=pw``) so the URL can be logged or shown.
* :func:`kafka_client_options` turns the ``SEGWORKER_KAFKA_*`` security settings into the
  keyword arguments that kafka-python and aiokafka clients share (``security_protocol``,
  ``ssl_context``, ``sasl_*``), for the clients created outside Faust (topic creation,
  ``recompute``, ``import-orders``, the generator and the demo).

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

import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["MASK", "kafka_client_options", "kafka_ssl_context", "redacted_url"]

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


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context for ``SSL``/``SASL_SSL`` (with the CA file if set), else None."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python and aiokafka clients (admin, producer, consumer).

    Examples
    --------
    >>> from worker.settings import Settings
    >>> kafka_client_options(Settings(kafka_security_protocol="PLAINTEXT"))
    {'security_protocol': 'PLAINTEXT'}
    >>> options = kafka_client_options(Settings(
    ...     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
    ...     kafka_sasl_username="worker", kafka_sasl_password="s3cret"))
    >>> options["sasl_mechanism"], options["sasl_plain_username"]
    ('SCRAM-SHA-512', 'worker')
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username or "",
            sasl_plain_password=password.get_secret_value() if password else "",
        )
    return options
