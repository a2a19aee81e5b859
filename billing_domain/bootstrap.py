"""The composition root for the command line: settings → servers → adapters."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy.exc
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import CONNECT_TIMEOUT_S, ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Settings, redact_url
from billing_domain.core.exceptions import BillingError, ConfigurationError
from billing_sandbox.stack import EmbeddedStack

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


class ServerUnavailableError(BillingError):
    """A server of the settings could not be used at startup; the message names it (password masked)."""


def open_services(settings: Settings | None = None) -> Services:
    """Connect to both servers, each tried once with a bounded timeout, then prepare schemas and topics."""
    settings = resolve_servers(settings or Settings.from_env())
    if not settings.kafka_bootstrap_servers or not settings.database_url:
        missing = "BILLING_KAFKA_BOOTSTRAP_SERVERS" if not settings.kafka_bootstrap_servers else "BILLING_DATABASE_URL"
        raise ConfigurationError(f"{missing}: not set; set both servers, or neither to use the embedded stack")
    recon_url = settings.recon_database_url or settings.database_url
    event_store = KafkaEventStore(settings.kafka_bootstrap_servers, settings.topics,
                                  partitions=settings.topic_partitions)
    projections = ProjectionStore(make_engine(settings.database_url))
    recon_store = ReconStore(make_engine(recon_url))
    try:
        _connect(projections.engine, "BILLING_DATABASE_URL", settings.database_url)
        if recon_url != settings.database_url:
            _connect(recon_store.engine, "BILLING_RECON_DATABASE_URL", recon_url)
        event_store.probe()
        projections.ensure_schema()
        recon_store.migrate()
        event_store.ensure_topics()
    except BaseException:
        _dispose(projections.engine, recon_store.engine)
        raise
    return Services(settings, event_store, projections, recon_store, CheckpointStore(recon_store.engine))


def _connect(engine: Engine, setting: str, url: str) -> None:
    """One connection, once (no retry): a server that is down or a database that is missing says so at once."""
    try:
        engine.connect().close()
    except sqlalchemy.exc.DBAPIError as exc:
        raise ServerUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)} ({setting}): {first_line(exc.orig or exc)}. "
            f"Tried one connection with a {CONNECT_TIMEOUT_S} s timeout. Check that the server runs and accepts "
            f"connections on that host and port, that the database exists and that the user and password in "
            f"{setting} are right.") from exc


def first_line(exc: BaseException) -> str:
    """The driver's own reason, without its hints and context lines."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _dispose(*engines: Engine) -> None:
    for engine in engines:
        engine.dispose()
