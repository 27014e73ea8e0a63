"""One frozen settings object, read from the environment once and passed down.

``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` keep their conventional names; every
other setting is ``SEGWORKER_<NAME>``. When the two connection settings are unset,
``segworker run``/``demo`` start an embedded broker and Redis.

Examples
--------
>>> s = Settings(kafka_bootstrap_servers="127.0.0.1:9092", redis_url="redis://127.0.0.1:6379/0")
>>> s.input_topics
('orders', 'campaign-events', 'loyalty-points', 'account-profiles')
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.config.security import redacted_url
from worker.core.events import DEFAULT_EARLIEST_EVENT_TIME, INPUT_TOPICS

DEFAULT_DEFINITIONS = Path(__file__).parent / "definitions" / "default.yaml"
DEFAULT_TRIGGERS = Path(__file__).parent / "triggers" / "default.yaml"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: Shards on a Redis Cluster unless set: enough to spread over a few primaries, few
#: enough that a batch touching every shard stays a handful of transactions.
DEFAULT_CLUSTER_SHARDS = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGWORKER_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "SEGWORKER_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port]; unset = embedded broker",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "SEGWORKER_REDIS_URL"),
        description="redis://[:password@]host:port/db or rediss://…; unset = embedded Redis",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    app_id: str = "segworker"
    topic_orders: str = "orders"
    topic_campaign_events: str = "campaign-events"
    topic_loyalty_points: str = "loyalty-points"
    topic_account_profiles: str = "account-profiles"
    topic_names: dict[str, str] = Field(
        default_factory=dict,
        description="Real names of further input topics, by logical name (JSON), for event "
        "types whose topic has no topic_* setting of its own",
    )
    topic_segment_changes: str = "segment-changes"
    topic_dead_letters: str = "segment-dead-letters"
    topic_segment_drift: str = "segment-drift"
    topic_cluster_samples: str = Field(
        default="segment-cluster-samples",
        description="One partition: whichever worker owns it trains the cluster models",
    )
    partitions: int = Field(default=4, ge=1, description="Partitions of topics the worker creates")
    create_topics: bool = Field(
        default=True,
        description="Create missing topics at start (replication factor 1, no credentials): "
        "for the embedded broker and development; provision topics yourself in production",
    )

    definitions_path: Path = DEFAULT_DEFINITIONS
    family_kinds: list[str] = Field(
        default_factory=list,
        description="Further kinds of segment families (JSON list of module:attribute, "
        "each a callable (settings, definitions) -> FamilyKind), after the rule and "
        "cluster families",
    )
    triggers_enabled: bool = Field(
        default=False,
        description="Run the campaign trigger router (segment-changes -> campaign-triggers "
        "and webhooks) in this worker",
    )
    triggers_path: Path = Field(
        default=DEFAULT_TRIGGERS, description="The campaign triggers file (triggers.yaml)"
    )
    topic_campaign_triggers: str = "campaign-triggers"
    topic_trigger_dead_letters: str = Field(
        default="campaign-trigger-dead-letters",
        description="Triggers a webhook refused or did not take after every attempt",
    )
    live_window_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="A segment change is live when its occurred_at (stream time) lies within "
        "this of the wall clock when it is emitted; older ones come from history",
    )
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_within_seconds: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Longest the agent collects records for a batch (up to batch_size) "
        "after handing over the previous one",
    )
    batch_settle_seconds: float = Field(
        default=0.002,
        gt=0,
        le=10,
        description="A batch also ends when no record was added for this long: what queued "
        "up during the previous batch goes without waiting out batch_within_seconds "
        "(worker/runtime/batching.py); must not exceed it",
    )
    max_event_bytes: int = Field(default=1_000_000, ge=1024)
    earliest_event_time: datetime = Field(
        default=DEFAULT_EARLIEST_EVENT_TIME,
        description="Events before this are refused (dead letters; import-orders skips "
        "such rows): a date (midnight UTC) or a datetime (UTC unless it has an offset). "
        "It catches producers sending epoch 0 or year 1, so it must lie after 1970-01-01; "
        "the default, 1980-01-01, admits ERP histories of long-standing customers. The "
        "worker and import-orders must use the same value",
    )
    redis_key_prefix: str = "seg"
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster: the worker uses the cluster "
        "client and keeps its state in redis_shards shards spread over the primaries",
    )
    redis_shards: int | None = Field(
        default=None,
        ge=1,
        le=16384,
        description="Groups of accounts, each written in its own transaction and hash slot "
        "(see worker/adapters/redis_keys.py); unset: 1 on a single Redis (the layout "
        "before shards), 16 on a cluster. Fixed once state is stored: the worker refuses "
        "to start on state written with another count",
    )
    redis_wait_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas that must have a batch's Redis write before its input is "
        "acknowledged (WAIT), so a primary's failover loses nothing; unset: 1 on a "
        "cluster, 0 on a single Redis (set 1 with a replica behind Sentinel). A primary "
        "with fewer connected replicas is waited for as far as it can be, with a warning",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000,
        ge=1,
        description="How long one wait for the replicas lasts before the batch is retried",
    )
    outbox_resend_after_seconds: float = Field(
        default=30.0, gt=0, description="Outbox entries older than this are re-sent by any worker"
    )
    time_mode: Literal["stream", "wall"] = Field(
        default="stream",
        description="stream: time is the largest event time seen, so replays behave like live "
        "traffic; wall: the machine clock",
    )
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    sweep_batch_size: int = Field(default=500, ge=1)
    value_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often the ABC cut-offs are recomputed"
    )
    value_a_share: float = Field(default=0.80, gt=0, lt=1)
    value_b_share: float = Field(default=0.15, gt=0, lt=1)
    cluster_k_behaviour: int = Field(default=5, ge=2, le=20)
    cluster_k_needs: int = Field(default=5, ge=2, le=20)
    cluster_margin: float = Field(
        default=0.1, ge=0, lt=1, description="Switch cluster only if another is this much closer"
    )
    cluster_sample_days: int = Field(
        default=7, ge=1, description="An account sends a training sample at most this often"
    )
    cluster_warmup: int = Field(default=200, ge=10, description="Samples before the first model")
    cluster_population: int = Field(
        default=100_000,
        ge=10,
        description="Accounts whose latest sample the model owner keeps per clustering "
        "(about 100 bytes each): every candidate model is refitted on them, so no cluster "
        "stays empty; beyond this, the least recently sampled accounts are left out",
    )
    cluster_snapshot_seconds: float = Field(
        default=30.0, gt=0, description="How often the model owner considers publishing"
    )
    cluster_publish_min_shift: float = Field(
        default=0.1,
        ge=0,
        description="Publish a new cluster model only when a centroid moved more than this "
        "(standard deviations) since the published one, or a cluster appeared or vanished: "
        "every publish re-assigns every account. 0 publishes whatever was learned; steady "
        "online-learning jitter is about 0.02-0.07",
    )
    cluster_reassign_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Accounts per step of a background re-evaluation (time sweep, new "
        "cluster model, new ABC cut-offs); a step's CPU (about 0.2-0.5 ms per account) runs "
        "without yielding, so it bounds how long a batch of events waits behind it",
    )
    cluster_reassign_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Largest share of the worker's time the re-assignment after a new model "
        "or new ABC cut-offs takes: it pauses between steps (1 = no pauses while the event "
        "agent is idle). Scaled by the square of the share of the last 10 s the agent left "
        "idle, down to a tenth of it, so that live events keep the priority",
    )
    drift_interval_seconds: float = Field(
        default=60.0, gt=0, description="Segment statistics and drift checks per interval"
    )
    drift_share_bound: float = Field(
        default=0.05, gt=0, lt=1, description="Alarm when a segment's share moves this much"
    )
    drift_centroid_bound: float = Field(
        default=0.5, gt=0, description="Alarm when a centroid moves this many std units"
    )
    profile_interval_seconds: float = Field(
        default=300.0, gt=0, description="How often segment profiles are recomputed"
    )
    flap_window_seconds: float = Field(
        default=86400.0, gt=0, description="An exit sooner than this after the entry is a flap"
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=30_000,
        description="Longest a fetch of the worker's consumer waits at the broker for data "
        "(faust-streaming hard-codes 1500). Kafka answers as soon as data arrives; a broker "
        "that waits out the time (the embedded one often does) adds up to this much latency "
        "per hop. Lower also means more empty fetches while idle (1000/this per second)",
    )
    web_host: str = "127.0.0.1"
    web_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the HTTP data endpoints (accounts, members, triggers) "
        "require; /health, /ready and /metrics stay open. Without one the worker serves "
        "data only on a loopback address",
    )
    web_allow_unauthenticated: bool = Field(
        default=False,
        description="Serve the data endpoints without a token on a non-loopback address "
        "(only behind a proxy that authenticates)",
    )
    web_port: int = Field(
        default=6066,
        ge=1,
        le=65535,
        description="Port of the HTTP views and /metrics (faust binds it as given: 0, "
        "'any free port', is refused at start-up, so it is refused here)",
    )
    retry_max_seconds: float = Field(default=10.0, gt=0, description="Back-off cap for retries")
    log_level: str = "info"

    @field_validator("earliest_event_time", mode="before")
    @classmethod
    def _date_or_utc(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(), UTC)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                return value  # pydantic's own error says what is wrong
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("earliest_event_time")
    @classmethod
    def _catches_garbage_and_admits_history(cls, value: datetime) -> datetime:
        # The floor is there to refuse epoch-0 garbage; and feature state counts days and
        # seconds from 1970-01-01 with clocks that start at 0, so nothing may precede it.
        if value <= _EPOCH:
            raise ValueError("must be after 1970-01-01, or epoch-0 garbage would pass")
        if value > datetime.now(UTC):
            raise ValueError("must not be in the future, or every event would be refused")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _settle_within_the_window(self) -> Settings:
        if self.batch_settle_seconds > self.batch_within_seconds:
            raise ValueError("batch_settle_seconds must not exceed batch_within_seconds")
        return self

    @property
    def state_wait_replicas(self) -> int:
        """The replica count in effect (``redis_wait_replicas``, or its default)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_cluster else 0

    @model_validator(mode="after")
    def _shards_fit_the_store(self) -> Settings:
        if self.redis_cluster and self.redis_shards == 1:
            # One shard is the layout of a single primary: its keys span hash slots.
            raise ValueError("redis_shards must be at least 2 on a Redis Cluster")
        return self

    @property
    def state_shards(self) -> int:
        """The shard count in effect (``redis_shards``, or its default for the store)."""
        if self.redis_shards is not None:
            return self.redis_shards
        return DEFAULT_CLUSTER_SHARDS if self.redis_cluster else 1

    @field_serializer("redis_url", when_used="json")
    def _redis_url_without_password(self, url: str | None) -> str | None:
        return None if url is None else redacted_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "redis_url" and value else value

    def topic_name(self, logical: str) -> str:
        """The real name of a logical input topic: its ``topic_*`` setting, else its entry in
        ``topic_names``, else the logical name itself.

        >>> Settings(topic_orders="erp.orders", topic_names={"tickets": "crm.tickets"}).topic_name(
        ...     "orders"), Settings().topic_name("tickets")
        ('erp.orders', 'tickets')
        """
        explicit = getattr(self, "topic_" + logical.replace("-", "_"), None)
        if isinstance(explicit, str):
            return explicit
        return self.topic_names.get(logical, logical)

    def input_topic_names(self) -> dict[str, str]:
        """Logical -> real name of every input topic (those the event contracts travel on)."""
        return {logical: self.topic_name(logical) for logical in INPUT_TOPICS}

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self.input_topic_names().values())

    @property
    def output_topics(self) -> tuple[str, ...]:
        return (
            self.topic_segment_changes,
            self.topic_dead_letters,
            self.topic_segment_drift,
            self.topic_campaign_triggers,
            self.topic_trigger_dead_letters,
        )

    def topic_partitions(self) -> dict[str, int]:
        """Every topic the worker uses, with its partition count."""
        topics = dict.fromkeys((*self.input_topics, *self.output_topics), self.partitions)
        topics[self.topic_cluster_samples] = 1
        return topics

    def allowed_types(self, topic: str) -> frozenset[str]:
        """Event types a topic may carry (``TOPIC`` of their models); anything else is a
        dead letter."""
        return frozenset(
            event_type
            for logical, types in INPUT_TOPICS.items()
            if self.topic_name(logical) == topic
            for event_type in types
        )
