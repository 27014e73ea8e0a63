"""Security: definitions cannot reach Python, secrets stay out of logs, TLS/SASL/AUTH work.

The condition language's own adversarial corpus lives in ``test_rules.py``; the embedded
servers' loopback binding is checked in ``tests/integration/test_embedded.py``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
import redis.asyncio as aioredis
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from worker.adapters.faust_transport import broker_credentials
from worker.adapters.kafka_clients import import_kafka_python
from worker.adapters.kafka_options import kafka_client_options, kafka_ssl_context
from worker.cli import connected_settings
from worker.config.security import MASK, redacted_url
from worker.config.settings import Settings
from worker.core.conditions import compile_condition
from worker.core.definitions import DefinitionsError, load_definitions
from worker.core.events import OrderLine, OrderPlaced
from worker.core.features import VOCABULARY, AccountState, FeatureView, apply, day_of
from worker.devtools.embedded import LOOPBACK

SECRET = "s3cret"
REDIS_WITH_PASSWORD = f"redis://:{SECRET}@redis.internal:6379/0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test from none of ours."""
    import os

    for name in list(os.environ):
        if name.startswith("SEGWORKER_") or name in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            monkeypatch.delenv(name)


def sasl(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **more: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka_bootstrap_servers": "kafka-1.internal:9093",
            "kafka_security_protocol": protocol,
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": "segworker",
            "kafka_sasl_password": SECRET,
            **more,
        }
    )


def assert_verifying(context: ssl.SSLContext) -> None:
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate in PEM, as an operator's private CA would be."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segworker test CA")])
    now = dt.datetime.now(dt.UTC)  # wall clock: the certificate must be valid now
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def trusts(context: ssl.SSLContext, common_name: str) -> bool:
    return any(
        ("commonName", common_name) in rdn
        for certificate in context.get_ca_certs()
        for rdn in certificate["subject"]
    )


# -- the definitions cannot reach Python --------------------------------------------------------


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object/apply:os.mkdir [{sentinel}]",
        "!!python/object/new:os.mkdir [{sentinel}]",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/object:pathlib.Path {{}}",
    ],
)
@pytest.mark.parametrize("where", ["version", "when"])
def test_yaml_tags_cannot_construct_python_objects(tmp_path: Path, tagged: str, where: str) -> None:
    sentinel = tmp_path / "pwned"
    value = tagged.format(sentinel=f'"{sentinel}"')
    text = (
        f"version: {value if where == 'version' else '1'}\n"
        "families:\n  f:\n    exclusive: true\n    segments:\n"
        f"      - id: s\n        when: {value if where == 'when' else 'true'}\n"
    )
    with pytest.raises(DefinitionsError, match="could not determine a constructor"):
        load_definitions(text, VOCABULARY)
    assert not sentinel.exists()


def _tools_buyer() -> FeatureView:
    at = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    state = AccountState("ACC-1")
    line = OrderLine(sku="DRL-18V", category="tools", quantity=1, unit_price=100.0)
    apply(state, OrderPlaced(event_id="e-1", occurred_at=at, account_id="ACC-1",
                             order_id="SO-1", total=100.0, lines=[line]))  # fmt: skip
    return FeatureView(state, day_of(at))


@pytest.mark.parametrize(
    "argument",
    [
        "*",
        "__class__",
        "share.*",
        "../tools",
        "tools.__class__",
        "",
        "TOOLS",
    ],
)
def test_function_arguments_are_only_data(argument: str) -> None:
    # Text handed to a whitelisted function must not address anything but a category.
    condition = compile_condition(f'share("{argument}") > 0.5 or share("tools") > 0.5', VOCABULARY)
    view = _tools_buyer()
    assert condition.evaluate(view) is True
    assert condition.explain(view)['share("tools")'] == 1.0
    assert compile_condition('share("tools") == 1', VOCABULARY).evaluate(view)


# -- secrets stay out of reprs, dumps and logs --------------------------------------------------


def test_the_sasl_password_is_masked_everywhere() -> None:
    settings = sasl()
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    assert SECRET not in repr(broker_credentials(settings))


def test_the_redis_password_is_masked_in_reprs_and_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", REDIS_WITH_PASSWORD)
    settings = Settings()
    assert settings.redis_url == REDIS_WITH_PASSWORD  # the worker still gets the real URL
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown
    assert f"redis://:{MASK}@redis.internal:6379/0" in settings.model_dump_json()


def test_connecting_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    settings = sasl(redis_url=REDIS_WITH_PASSWORD)
    with caplog.at_level(logging.DEBUG), connected_settings(settings) as connected:
        assert connected.redis_url == REDIS_WITH_PASSWORD
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_the_redis_client_does_not_show_the_password() -> None:
    client = aioredis.Redis.from_url(REDIS_WITH_PASSWORD, health_check_interval=10)
    connection = client.connection_pool.make_connection()
    for shown in (repr(client), repr(client.connection_pool), repr(connection)):
        assert SECRET not in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://worker:s3cret@host:6379/0", "redis://worker:***@host:6379/0"),
        ("rediss://default:s3%40cret@host:6380/2", "rediss://default:***@host:6380/2"),
        ("redis://:s3@cret@host/0", "redis://:***@host/0"),  # an unescaped '@'
        ("redis://:s3cret@[::1]:6379", "redis://:***@[::1]:6379"),
        ("redis://s3cret@host", "redis://***@host"),  # user info only: could be the password
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://host/0?db=1&PASSWORD=s3cret", "redis://host/0?db=1&PASSWORD=***"),
        ("unix://:s3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        (
            "rediss://:s3cret@host:6380/0?ssl_ca_certs=/etc/ssl/ca.pem&ssl_cert_reqs=required",
            "rediss://:***@host:6380/0?ssl_ca_certs=/etc/ssl/ca.pem&ssl_cert_reqs=required",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://host:notaport/0", "redis://host:notaport/0"),
        ("redis://:s3cret@[::1/0", "***"),  # unparseable: nothing of it is shown
        ("", ""),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert SECRET not in redacted_url(url)
    assert redacted_url(redacted_url(url)) == redacted_url(url)


# -- Kafka: SSL and SASL ----------------------------------------------------------------------


def test_plaintext_needs_no_credentials() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka:9092")
    assert broker_credentials(settings) is None
    assert kafka_ssl_context(settings) is None
    assert kafka_client_options(settings) == {"security_protocol": "PLAINTEXT"}


def test_ssl_verifies_the_broker(ca_file: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file)
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert_verifying(credentials.context)
    assert trusts(credentials.context, "segworker test CA")
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SSL",
        "ssl_context": credentials.context,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    credentials = broker_credentials(sasl("SASL_PLAINTEXT", mechanism))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "segworker",
        "sasl_plain_password": SECRET,
        "ssl_context": None,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_ssl(mechanism: str, ca_file: Path) -> None:
    credentials = broker_credentials(sasl("SASL_SSL", mechanism, kafka_ssl_cafile=ca_file))
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", mechanism)
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("segworker", SECRET)
    assert_verifying(auth["ssl_context"])
    assert trusts(auth["ssl_context"], "segworker test CA")


def test_kafka_security_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SEGWORKER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SEGWORKER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SEGWORKER_KAFKA_SASL_USERNAME": "segworker",
        "SEGWORKER_KAFKA_SASL_PASSWORD": SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    credentials = broker_credentials(Settings())
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("segworker", SECRET)
    assert credentials.mechanism.value == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    "setting",
    [
        {"kafka_security_protocol": "TLS"},
        {"kafka_security_protocol": "sasl_ssl "},
        {"kafka_sasl_mechanism": "GSSAPI"},
        {"kafka_sasl_mechanism": "SCRAM-SHA-1"},
    ],
)
def test_unknown_kafka_security_settings_are_refused(setting: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**setting)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_client_options_for_the_clients_outside_faust(protocol: str, ca_file: Path) -> None:
    options = kafka_client_options(sasl(protocol, kafka_ssl_cafile=ca_file))
    assert options["security_protocol"] == protocol
    if "SSL" in protocol:
        assert_verifying(options["ssl_context"])
        assert trusts(options["ssl_context"], "segworker test CA")
    else:
        assert "ssl_context" not in options
    if protocol.startswith("SASL"):
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
            "segworker",
            SECRET,
        )
    # The same keyword arguments suit every kafka-python and aiokafka client we create.
    kafka = import_kafka_python()
    for client in (kafka.KafkaAdminClient, kafka.KafkaProducer, kafka.KafkaConsumer):
        assert set(options) <= set(client.DEFAULT_CONFIG), client
    import aiokafka
    import aiokafka.admin

    for aioclient in (
        aiokafka.AIOKafkaProducer,
        aiokafka.AIOKafkaConsumer,
        aiokafka.admin.AIOKafkaAdminClient,
    ):
        assert set(options) <= set(inspect.signature(aioclient).parameters), aioclient


# -- Redis: AUTH and TLS ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "username"),
    [
        (REDIS_WITH_PASSWORD, None),
        (f"rediss://segworker:{SECRET}@redis.internal:6380/0", "segworker"),
    ],
)
def test_redis_auth_reaches_the_client(
    monkeypatch: pytest.MonkeyPatch, url: str, username: str | None
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    settings = Settings()
    assert settings.redis_url == url
    client = aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == SECRET
    assert kwargs.get("username") == username


def test_rediss_verifies_the_server_with_the_ca_from_the_url(ca_file: Path) -> None:
    # No extra setting is needed for a private CA: redis-py reads ssl_* from the URL query.
    url = f"rediss://:{SECRET}@redis.internal:6380/0?ssl_ca_certs={ca_file}"
    settings = Settings(redis_url=url)
    client = aioredis.Redis.from_url(settings.redis_url or "", health_check_interval=10)
    connection = client.connection_pool.make_connection()
    assert isinstance(connection, aioredis.SSLConnection)
    assert connection.password == SECRET
    context = connection.ssl_context.get()
    assert_verifying(context)
    assert trusts(context, "segworker test CA")


def test_rediss_without_a_ca_uses_the_system_trust_store() -> None:
    client = aioredis.Redis.from_url("rediss://redis.internal:6380/0")
    connection = client.connection_pool.make_connection()
    assert isinstance(connection, aioredis.SSLConnection)
    assert connection.ssl_context.cert_reqs == ssl.CERT_REQUIRED
    assert connection.ssl_context.check_hostname


# -- what listens ----------------------------------------------------------------------------------


def test_the_web_server_binds_to_loopback_by_default() -> None:
    assert Settings().web_host == "127.0.0.1" == LOOPBACK
