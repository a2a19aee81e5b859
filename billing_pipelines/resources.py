"""Resources wrapping the billing adapters: the event store, the projections and recon store, Slack.

Every field is optional. A field left unset is read from the environment (`Settings.from_env`)
when the resource is used, and when neither Kafka nor a database is configured the embedded stack
serves (`EmbeddedStack().up()` is idempotent). Secrets (database URLs, the Slack token) reach
these fields only as `dg.EnvVar`, so Dagster resolves them at launch and never shows them.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.adapters.slack import SlackNotifier
from billing_domain.config import Settings, Topics
from billing_domain.core.exceptions import ConfigurationError
from billing_sandbox.stack import EmbeddedStack


def resolved_settings() -> Settings:
    """The environment's settings, with the embedded stack's servers when none are configured."""
    settings = Settings.from_env()
    if settings.uses_embedded_stack:
        info = EmbeddedStack().up()
        return settings.with_servers(info.bootstrap_servers, info.database_url)
    return settings


class EventStoreResource(dg.ConfigurableResource):
    """The Kafka event store (the contract's two topics)."""

    bootstrap_servers: str | None = None
    topic_prefix: str | None = None  # replaces the leading `billing.` of both topic names
    partitions: int | None = None

    _store: KafkaEventStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.get_store().ensure_topics()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def get_store(self) -> KafkaEventStore:
        if self._store is None:
            settings = Settings.from_env()
            servers = self.bootstrap_servers or _required(resolved_settings().kafka_bootstrap_servers,
                                                          "BILLING_KAFKA_BOOTSTRAP_SERVERS")
            topics = Topics.with_prefix(self.topic_prefix) if self.topic_prefix else settings.topics
            self._store = KafkaEventStore(servers, topics, partitions=self.partitions or settings.topic_partitions)
        return self._store


class ProjectionsResource(dg.ConfigurableResource):
    """The projections (schema `billing`) and the pipeline's own tables (schema `billing_recon`)."""

    database_url: str | None = None
    recon_database_url: str | None = None  # defaults to database_url

    _engines: dict[str, Engine] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.projection_store().ensure_schema()
        self.recon_store().migrate()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    def projection_store(self) -> ProjectionStore:
        return ProjectionStore(self._engine(self._projections_url()))

    def recon_store(self) -> ReconStore:
        url = self.recon_database_url or Settings.from_env().recon_database_url or self._projections_url()
        return ReconStore(self._engine(url))

    def checkpoints(self) -> CheckpointStore:
        """Replay checkpoints, kept beside the reports in `billing_recon`."""
        return CheckpointStore(self.recon_store().engine)

    def _projections_url(self) -> str:
        return self.database_url or _required(resolved_settings().database_url, "BILLING_DATABASE_URL")

    def _engine(self, url: str) -> Engine:
        if url not in self._engines:
            self._engines[url] = make_engine(url)
        return self._engines[url]


class SlackResource(dg.ConfigurableResource):
    """Slack alerts. No token: messages are logged, not sent."""

    bot_token: str | None = None  # only ever dg.EnvVar("BILLING_SLACK_BOT_TOKEN")
    channel: str | None = None
    api_url: str | None = None
    ui_base_url: str | None = None  # the Dagster UI, for run links

    def notifier(self) -> SlackNotifier:
        settings = Settings.from_env()
        return SlackNotifier(self.bot_token, self.channel or settings.slack_channel,
                             self.api_url or settings.slack_api_url)

    def ui_url(self) -> str:
        return self.ui_base_url or Settings.from_env().ui_base_url


def _required(value: str | None, env_name: str) -> str:
    if not value:
        raise ConfigurationError(f"{env_name} is not set: set both BILLING_KAFKA_BOOTSTRAP_SERVERS and "
                                 "BILLING_DATABASE_URL, or neither to use the embedded stack")
    return value
