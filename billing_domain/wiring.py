"""The composition root for the command line: settings → servers → adapters."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from billing_domain.adapters.checkpoint_store import CheckpointStore
from billing_domain.adapters.kafka import KafkaEventStore
from billing_domain.adapters.postgres import ProjectionStore, make_engine
from billing_domain.adapters.recon_store import ReconStore
from billing_domain.config import Settings, redact_url
from billing_domain.stack import EmbeddedStack

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    settings: Settings
    event_store: KafkaEventStore
    projections: ProjectionStore
    recon_store: ReconStore
    checkpoints: CheckpointStore

    def close(self) -> None:
        self.event_store.close()
        self.projections.engine.dispose()
        self.recon_store.engine.dispose()


def resolve_servers(settings: Settings) -> Settings:
    """Use the configured servers, or start (or reuse) the embedded stack when none is configured."""
    if not settings.uses_embedded_stack:
        return settings
    info = EmbeddedStack().up()
    log.info("no servers configured: using the embedded stack (%s, %s)", info.bootstrap_servers,
             redact_url(info.database_url))
    return settings.with_servers(info.bootstrap_servers, info.database_url)


def open_services(settings: Settings | None = None) -> Services:
    settings = resolve_servers(settings or Settings.from_env())
    if not settings.kafka_bootstrap_servers or not settings.database_url:
        missing = "BILLING_KAFKA_BOOTSTRAP_SERVERS" if not settings.kafka_bootstrap_servers else "BILLING_DATABASE_URL"
        raise SystemExit(f"{missing} is not set: set both servers, or neither to use the embedded stack")
    event_store = KafkaEventStore(settings.kafka_bootstrap_servers, settings.topics,
                                  partitions=settings.topic_partitions)
    projections = ProjectionStore(make_engine(settings.database_url))
    recon_store = ReconStore(make_engine(settings.recon_database_url or settings.database_url))
    projections.ensure_schema()
    recon_store.migrate()
    event_store.ensure_topics()
    return Services(settings, event_store, projections, recon_store, CheckpointStore(recon_store.engine))
