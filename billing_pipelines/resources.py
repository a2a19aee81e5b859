"""Resources wrapping the billing adapters: the event store, the projections and recon store, Slack.

Every field is optional. A field left unset is read from the environment (`Settings.from_env`)
when the resource is used, and when neither Kafka nor a database is configured the embedded stack
serves (`EmbeddedStack().up()` is idempotent). Secrets (database URLs, the Slack token) reach
these fields only as `dg.EnvVar`, so Dagster resolves them at launch and never shows them.
"""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
from pydantic import PrivateAttr

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.adapters.slack import SlackNotifier
from billing_domain.bootstrap import (
    Stores,
    event_store_for,
    notifier_for,
    prepare_event_store,
    prepare_stores,
    resolve_servers,
    stores_for,
    with_topics,
)
from billing_domain.config import Settings, Topics
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.services.run_reconciliation import RunStores


def resolved_settings() -> Settings:
    """The environment's settings, with the embedded stack's servers when none are configured."""
    return resolve_servers(Settings.from_env())


class EventStoreResource(dg.ConfigurableResource):
    """The Kafka event store (the contract's two topics)."""

    bootstrap_servers: str | None = None
    topic_prefix: str | None = None  # replaces the leading `billing.` of both topic names
    partitions: int | None = None

    _store: KafkaEventStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        prepare_event_store(self.get_store())

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
            self._store = event_store_for(replace(with_topics(settings, topics, self.partitions),
                                                  kafka_bootstrap_servers=servers))
        return self._store


class ProjectionsResource(dg.ConfigurableResource):
    """The projections (schema `billing`) and the pipeline's own tables (schema `billing_recon`)."""

    database_url: str | None = None
    recon_database_url: str | None = None  # defaults to database_url

    _stores: Stores | None = PrivateAttr(default=None)
    _resolved_urls: tuple[str, str | None] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        url, recon_url = self._urls()
        prepare_stores(self._wired(), url, recon_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._stores is not None:
            self._stores.dispose()
            self._stores = None

    def projection_store(self) -> ProjectionStore:
        return self._wired().projections

    def recon_store(self) -> ReconStore:
        return self._wired().recon_store

    def checkpoints(self) -> CheckpointStore:
        """Replay checkpoints, kept beside the reports in `billing_recon`."""
        return self._wired().checkpoints

    def run_stores(self, event_store: EventStoreResource) -> RunStores:
        """The ports of `run_reconciliation`."""
        stores = self._wired()
        return RunStores(event_store.get_store(), stores.projections, stores.recon_store, stores.checkpoints)

    def _wired(self) -> Stores:
        if self._stores is None:
            self._stores = stores_for(*self._urls())
        return self._stores

    def _urls(self) -> tuple[str, str | None]:
        """The projections' database and `billing_recon`'s (None: the same), from the fields or the environment."""
        if self._resolved_urls is None:
            url = self.database_url or _required(resolved_settings().database_url, "BILLING_DATABASE_URL")
            self._resolved_urls = (url, self.recon_database_url or Settings.from_env().recon_database_url)
        return self._resolved_urls


class SlackResource(dg.ConfigurableResource):
    """Slack alerts. No token: messages are logged, not sent."""

    bot_token: str | None = None  # only ever dg.EnvVar("BILLING_SLACK_BOT_TOKEN")
    channel: str | None = None
    api_url: str | None = None
    ui_base_url: str | None = None  # the Dagster UI, for run links

    def notifier(self) -> SlackNotifier:
        settings = Settings.from_env()
        return notifier_for(replace(settings, slack_channel=self.channel or settings.slack_channel,
                                    slack_api_url=self.api_url or settings.slack_api_url), self.bot_token)

    def ui_url(self) -> str:
        return self.ui_base_url or Settings.from_env().ui_base_url


def _required(value: str | None, env_name: str) -> str:
    if not value:
        raise ConfigurationError(f"{env_name} is not set: set both BILLING_KAFKA_BOOTSTRAP_SERVERS and "
                                 "BILLING_DATABASE_URL, or neither to use the embedded stack")
    return value
