"""The Kafka security options of the clients created outside Faust.

:func:`kafka_client_options` turns the ``SEGWORKER_KAFKA_*`` security settings into the
keyword arguments that kafka-python and aiokafka clients share (``security_protocol``,
``ssl_context``, ``sasl_*``): topic creation, ``recompute``, ``import-orders``, the
generator and the demo. Faust's own credentials are built in ``faust_transport``.
"""

from __future__ import annotations

import ssl
from typing import Any

from worker.config.settings import Settings


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
    >>> from worker.config.settings import Settings
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
