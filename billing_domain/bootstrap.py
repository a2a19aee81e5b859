"""The one composition root: settings → servers → adapters, handed to the services as their ports.

Every entry point builds its adapters here and nowhere else: the CLI (`open_services`), the Dagster
resources (`event_store_for`, `Stores`), the admin API, the demo and the benchmark (`wire`). Swapping an
adapter (another broker client, the in-memory fakes of the tests) is then one change in one file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import sqlalchemy.exc
from sqlalchemy.engine import Engine

from billing_domain.adapters.kafka.event_store import PROBE_TIMEOUT_S, KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import CONNECT_TIMEOUT_S, ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.adapters.retry import RetryPolicy
from billing_domain.config import Settings, Topics, redact_url
from billing_domain.core.exceptions import BillingError, ConfigurationError

if TYPE_CHECKING:
    from billing_domain.adapters.slack import SlackNotifier
    from billing_domain.services.run_reconciliation import RunStores

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stores:
    """The PostgreSQL side: the projections (schema billing) and the pipeline's own tables (billing_recon)."""

    projections: ProjectionStore
    recon_store: ReconStore
    checkpoints: CheckpointStore

    def dispose(self) -> None:
        self.projections.engine.dispose()
        self.recon_store.engine.dispose()


@dataclass(slots=True)
class Services:
    settings: Settings
    event_store: KafkaEventStore
    projections: ProjectionStore
    recon_store: ReconStore
    checkpoints: CheckpointStore

    def run_stores(self) -> RunStores:
        """The ports of `run_reconciliation`."""
        from billing_domain.services.run_reconciliation import RunStores  # only the commands that reconcile

        return RunStores(self.event_store, self.projections, self.recon_store, self.checkpoints)

    def close(self) -> None:
        self.event_store.close()
        self.projections.engine.dispose()
        self.recon_store.engine.dispose()


# A caller who waits for the answer (an API request) is told within about ten seconds that the broker is gone;
# a batch run (the defaults) rides out a minute of broker restart instead.
INTERACTIVE_RETRY = RetryPolicy(max_attempts=2, max_total_s=PROBE_TIMEOUT_S)
INTERACTIVE_STALL_TIMEOUT_S = 10.0


def event_store_for(settings: Settings, *, interactive: bool = False) -> KafkaEventStore:
    """The contract's two topics on the settings' broker (no connection until first use); `interactive`: bounded
    for a caller who waits (see INTERACTIVE_RETRY)."""
    servers = _required(settings.kafka_bootstrap_servers, "BILLING_KAFKA_BOOTSTRAP_SERVERS")
    if not interactive:
        return KafkaEventStore(servers, settings.topics, partitions=settings.topic_partitions)
    return KafkaEventStore(servers, settings.topics, partitions=settings.topic_partitions, retry=INTERACTIVE_RETRY,
                           metadata_timeout_s=PROBE_TIMEOUT_S, stall_timeout_s=INTERACTIVE_STALL_TIMEOUT_S)


def stores_for(database_url: str, recon_database_url: str | None = None) -> Stores:
    """Both schemas' stores; `billing_recon` on its own server when `recon_database_url` names one."""
    projections_engine = make_engine(database_url)
    recon_engine = (make_engine(recon_database_url)
                    if recon_database_url and recon_database_url != database_url else projections_engine)
    recon_store = ReconStore(recon_engine)
    return Stores(ProjectionStore(projections_engine), recon_store, CheckpointStore(recon_engine))


def engine_for(database_url: str) -> Engine:
    """An engine on one database, for the role administration that runs its own SQL (`billing-recon roles`)."""
    return make_engine(database_url)


def notifier_for(settings: Settings, bot_token: str | None) -> SlackNotifier:
    """Slack alerts; without a token messages are logged, not sent."""
    from billing_domain.adapters.slack import SlackNotifier  # slack_sdk: only for the commands that alert

    return SlackNotifier(bot_token, settings.slack_channel, settings.slack_api_url)


def wire(settings: Settings, *, interactive: bool = False) -> Services:
    """Every adapter for these settings, without connecting: for the demo, the benchmark and the Dagster jobs,
    whose servers are known to be up (or whose first use reports it)."""
    stores = stores_for(_required(settings.database_url, "BILLING_DATABASE_URL"), settings.recon_database_url)
    return Services(settings, event_store_for(settings, interactive=interactive), stores.projections,
                    stores.recon_store, stores.checkpoints)


def with_topics(settings: Settings, topics: Topics, partitions: int | None = None) -> Settings:
    """The settings on other topics (the demo's fresh ones, a benchmark run's prefix)."""
    return replace(settings, topics=topics, topic_partitions=partitions or settings.topic_partitions)


def resolve_servers(settings: Settings) -> Settings:
    """Use the configured servers, or start (or reuse) the embedded stack when none is configured."""
    if not settings.uses_embedded_stack:
        return settings
    from billing_sandbox.stack import EmbeddedStack  # only when no server is configured (and it is not cheap)

    info = EmbeddedStack().up()
    log.info("no servers configured: using the embedded stack (%s, %s)", info.bootstrap_servers,
             redact_url(info.database_url))
    return settings.with_servers(info.bootstrap_servers, info.database_url)


class ServerUnavailableError(BillingError):
    """A server of the settings could not be used at startup; the message names it (password masked)."""


def open_services(settings: Settings | None = None, *, interactive: bool = False) -> Services:
    """Connect to both servers, each tried once with a bounded timeout, then prepare schemas and topics;
    `interactive`: the event store of a caller who waits for each answer (the admin API)."""
    settings = resolve_servers(settings or Settings.from_env())
    if not settings.kafka_bootstrap_servers or not settings.database_url:
        missing = "BILLING_KAFKA_BOOTSTRAP_SERVERS" if not settings.kafka_bootstrap_servers else "BILLING_DATABASE_URL"
        raise ConfigurationError(f"{missing}: not set; set both servers, or neither to use the embedded stack")
    services = wire(settings, interactive=interactive)
    stores = Stores(services.projections, services.recon_store, services.checkpoints)
    try:
        connect_databases(stores, settings.database_url, settings.recon_database_url)
        topics = services.event_store.probe()  # a down broker is told before any schema work
        prepare_schemas(stores)
        services.event_store.ensure_topics(topics)
    except BaseException:
        stores.dispose()
        raise
    return services


def prepare_stores(stores: Stores, database_url: str, recon_database_url: str | None = None) -> None:
    """Connect once to each database (bounded, no retry), then prepare both schemas."""
    connect_databases(stores, database_url, recon_database_url)
    prepare_schemas(stores)


def connect_databases(stores: Stores, database_url: str, recon_database_url: str | None = None) -> None:
    """One connection to each database, once: a server that is down or a database that is missing says so at
    once, naming it."""
    recon_url = recon_database_url or database_url
    _connect(stores.projections.engine, "BILLING_DATABASE_URL", database_url)
    if recon_url != database_url:
        _connect(stores.recon_store.engine, "BILLING_RECON_DATABASE_URL", recon_url)


def prepare_schemas(stores: Stores) -> None:
    """The projection tables created if absent, `billing_recon` migrated to the latest revisions."""
    stores.projections.ensure_schema()
    stores.recon_store.migrate()


def prepare_event_store(event_store: KafkaEventStore) -> None:
    """One bounded metadata request (a down broker is an error within seconds, not after a minute of
    retries), then the contract's topics created if absent."""
    event_store.ensure_topics(event_store.probe())


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


def unavailable_database(exc: BaseException, settings: Settings) -> ServerUnavailableError | None:
    """The error to show for a database that stopped answering mid-operation (a driver's connection error), or
    None when `exc` is something else. Names the server with its password masked, never the driver's traceback."""
    if not isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return None
    return ServerUnavailableError(lost_database_connection(first_line(exc.orig or exc), settings))


def lost_database_connection(reason: str, settings: Settings | None) -> str:
    """What the CLI and the admin API say when PostgreSQL stops answering mid-operation."""
    return (f"lost the connection to PostgreSQL at {database_names(settings)}: {reason}. Check that the server "
            "runs and accepts connections, then try again (nothing half-written is kept: every write is one "
            "transaction).")


def database_names(settings: Settings | None) -> str:
    """The database URLs of the settings, passwords masked, each with the setting that names it."""
    if settings is None or not settings.database_url:
        return "BILLING_DATABASE_URL"
    names = f"{redact_url(settings.database_url)} (BILLING_DATABASE_URL)"
    if settings.recon_database_url and settings.recon_database_url != settings.database_url:
        names += f" or {redact_url(settings.recon_database_url)} (BILLING_RECON_DATABASE_URL)"
    return names


def first_line(exc: BaseException) -> str:
    """The driver's own reason, without its hints and context lines."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _required(value: str | None, env_name: str) -> str:
    if not value:
        raise ConfigurationError(f"{env_name} is not set: set both BILLING_KAFKA_BOOTSTRAP_SERVERS and "
                                 "BILLING_DATABASE_URL, or neither to use the embedded stack")
    return value
