"""Settings read from the environment, with defaults that match the embedded local stack.

Names are the contract's (`BILLING_KAFKA_BOOTSTRAP_SERVERS`, `BILLING_DATABASE_URL`,
`BILLING_SLACK_*`) plus a few of our own, all prefixed `BILLING_`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Self

from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.lag import DEFAULT_LAG_WINDOW
from billing_domain.core.records import Topics  # a value of the core (the fold reads it); importable from here too

# Every setting's default, named once: Settings and from_env use these, and so does whatever needs a default
# without the settings at hand (ReconcileOptions, the services' keyword defaults, the CLI's and the API's options).
DEFAULT_TOPIC_PARTITIONS = 4
DEFAULT_STUCK_AFTER_MINUTES = 5.0  # the contract's threshold of `stuck`
DEFAULT_STUCK_AFTER = timedelta(minutes=DEFAULT_STUCK_AFTER_MINUTES)
DEFAULT_LAG_WINDOW_SECONDS = DEFAULT_LAG_WINDOW.total_seconds()  # the contract's 60 s, beside its rule (core.lag)
DEFAULT_UI_BASE_URL = "http://127.0.0.1:3000"
DEFAULT_AUTO_REPAIR_MAX = 50
DEFAULT_MAX_LAGGING = 100
DEFAULT_MAX_PROJECTOR_LAG = 1_000  # events the live projector may leave unapplied before its check fails
DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES = 15.0  # ... or how long the oldest of them may have waited
# How a full replay folds (BILLING_REPLAY_ENGINE): the aggregates (the reference), or columns for the plain
# streams with the aggregates for the rest (billing_domain/columnar). The aggregates stay the default until
# the columnar engine is measured faster (see docs of billing_domain/columnar).
REPLAY_ENGINES = ("aggregate", "columnar")
DEFAULT_REPLAY_ENGINE = "aggregate"
# Upper bounds of the numeric settings: past them a value is a typo, not a choice (a stuck threshold of a
# year, as the admin API allows; a lag window of a day would hide every missing row for a day).
MAX_STUCK_MINUTES = 525_600.0
MAX_LAG_WINDOW_SECONDS = 86_400.0
MAX_TOPIC_PARTITIONS = 10_000
# The embedded stack's broker (BILLING_STACK_BROKER), read by billing_sandbox/stack. Tansu by default: it needs
# nothing but pip, so `make demo` works on a machine with Python alone; `kafka` (Apache Kafka) needs Java and Maven.
STACK_BROKERS = ("tansu", "kafka")
DEFAULT_STACK_BROKER = "tansu"
# psycopg 3 is the one driver: make_engine maps the plain schemes onto it, the retry policy knows its errors.
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
DATABASE_URL_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BOOTSTRAP_SERVER = re.compile(r"(?:[A-Za-z_]+://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/,\[\]]+)(?::(\d+))?")


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    recon_database_url: str | None = None  # the pipeline's own tables; defaults to database_url
    topics: Topics = field(default_factory=Topics)
    topic_partitions: int = DEFAULT_TOPIC_PARTITIONS
    slack_bot_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str | None = None
    stuck_after_minutes: float = DEFAULT_STUCK_AFTER_MINUTES
    # The contract's lag window: an event younger than this when the projections were read may not be
    # applied yet. The projector's consumer group, when known, decides exactly instead.
    lag_window_seconds: float = DEFAULT_LAG_WINDOW_SECONDS
    projector_group: str | None = None
    ui_base_url: str = DEFAULT_UI_BASE_URL
    # The auto-repair sensor acts only while at most this many entities are flagged.
    auto_repair_max: int = DEFAULT_AUTO_REPAIR_MAX
    max_lagging: int = DEFAULT_MAX_LAGGING  # lagging rows the asset check tolerates
    max_projector_lag: int = DEFAULT_MAX_PROJECTOR_LAG
    max_projector_lag_age_minutes: float = DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES
    replay_engine: str = DEFAULT_REPLAY_ENGINE  # one of REPLAY_ENGINES; only the full replay reads it

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        topics = Topics()
        if env.get("BILLING_TOPIC_PREFIX"):
            topics = Topics.with_prefix(env["BILLING_TOPIC_PREFIX"])
        topics = Topics(env.get("BILLING_ACCOUNT_TOPIC", topics.accounts),
                        env.get("BILLING_TRANSACTION_TOPIC", topics.transactions))
        _check_topics(env, topics)
        return cls(
            kafka_bootstrap_servers=_bootstrap_servers(env, "BILLING_KAFKA_BOOTSTRAP_SERVERS"),
            database_url=_database_url(env, "BILLING_DATABASE_URL"),
            recon_database_url=_database_url(env, "BILLING_RECON_DATABASE_URL"),
            topics=topics,
            topic_partitions=_integer(env, "BILLING_TOPIC_PARTITIONS", DEFAULT_TOPIC_PARTITIONS,
                                      maximum=MAX_TOPIC_PARTITIONS),
            slack_bot_token=env.get("BILLING_SLACK_BOT_TOKEN") or None,
            slack_channel=env.get("BILLING_SLACK_CHANNEL") or None,
            slack_api_url=_http_url(env, "BILLING_SLACK_API_URL", None),
            stuck_after_minutes=_number(env, "BILLING_STUCK_AFTER_MINUTES", DEFAULT_STUCK_AFTER_MINUTES,
                                        maximum=MAX_STUCK_MINUTES),
            lag_window_seconds=_number(env, "BILLING_LAG_WINDOW_SECONDS", DEFAULT_LAG_WINDOW_SECONDS, minimum_zero=True,
                                       maximum=MAX_LAG_WINDOW_SECONDS),
            projector_group=env.get("BILLING_PROJECTOR_GROUP") or None,
            ui_base_url=_http_url(env, "BILLING_DAGSTER_UI_URL", DEFAULT_UI_BASE_URL) or DEFAULT_UI_BASE_URL,
            auto_repair_max=_integer(env, "BILLING_AUTO_REPAIR_MAX", DEFAULT_AUTO_REPAIR_MAX, minimum=0,
                                     maximum=MAX_COUNT),
            max_lagging=_integer(env, "BILLING_MAX_LAGGING", DEFAULT_MAX_LAGGING, minimum=0, maximum=MAX_COUNT),
            max_projector_lag=_integer(env, "BILLING_MAX_PROJECTOR_LAG", DEFAULT_MAX_PROJECTOR_LAG, minimum=0,
                                       maximum=MAX_COUNT),
            max_projector_lag_age_minutes=_number(env, "BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES",
                                                  DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES, minimum_zero=True,
                                                  maximum=MAX_STUCK_MINUTES),
            replay_engine=_choice(env, "BILLING_REPLAY_ENGINE", DEFAULT_REPLAY_ENGINE, REPLAY_ENGINES),
        )

    @property
    def uses_embedded_stack(self) -> bool:
        """Neither Kafka nor a database configured: the project's own embedded stack serves."""
        return not self.kafka_bootstrap_servers and not self.database_url

    def with_servers(self, kafka_bootstrap_servers: str, database_url: str) -> Settings:
        return replace(self, kafka_bootstrap_servers=kafka_bootstrap_servers, database_url=database_url)


MAX_COUNT = 10_000_000  # a sane bound for the counts the sensors and checks tolerate


def _number(env: Mapping[str, str], name: str, default: float, *, minimum_zero: bool = False,
            maximum: float = math.inf) -> float:
    value = (env.get(name) or str(default)).strip()
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"{name}: {value!r} must be a finite number")
    if number < 0 or (number == 0 and not minimum_zero):
        raise ConfigurationError(f"{name}: {value!r} must be {'zero or more' if minimum_zero else 'above zero'}")
    if number > maximum:
        raise ConfigurationError(f"{name}: {value!r} is above the maximum of {maximum:g}")
    return number


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int) -> int:
    """A whole number in [minimum, maximum]; `2.5` or `4.0` is refused, not rounded."""
    value = (env.get(name) or str(default)).strip()
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ConfigurationError(f"{name}: {value!r} must be a whole number")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ConfigurationError(f"{name}: {value!r} must be between {minimum} and {maximum}")
    return number


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL URL, or None when unset or blank. The value is never echoed: it may hold a password."""
    value = (env.get(name) or "").strip()
    if not value:
        return None
    from sqlalchemy.engine import make_url  # deferred: sqlalchemy is slow to import for `--help`
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigurationError(f"{name}: not a database URL; expected {DATABASE_URL_FORM}") from None
    if url.drivername not in POSTGRES_SCHEMES:
        raise ConfigurationError(f"{name}: {url.drivername}:// is not PostgreSQL; expected {DATABASE_URL_FORM} "
                                 "(or postgresql+psycopg://)")
    if url.port is not None and not 1 <= url.port <= 65_535:
        raise ConfigurationError(f"{name}: port {url.port} is not between 1 and 65535")
    return value


def _bootstrap_servers(env: Mapping[str, str], name: str) -> str | None:
    """`host:port[,host:port...]`, or None when unset or blank."""
    value = (env.get(name) or "").strip()
    if not value:
        return None
    for server in value.split(","):
        match = _BOOTSTRAP_SERVER.fullmatch(server.strip())
        port = match.group(2) if match else None
        if match is None or (port is not None and not 1 <= int(port) <= 65_535):
            raise ConfigurationError(f"{name}: {server.strip()!r} is not HOST:PORT (a comma-separated list of them)")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ConfigurationError(f"{name}: {value!r} is not an http:// or https:// URL")
    return value


def _check_topics(env: Mapping[str, str], topics: Topics) -> None:
    """Kafka's topic names: letters, digits, '.', '_', '-', at most 249 characters."""
    for name, topic in (("BILLING_ACCOUNT_TOPIC", topics.accounts), ("BILLING_TRANSACTION_TOPIC", topics.transactions)):
        source = name if env.get(name) else "BILLING_TOPIC_PREFIX"
        if not _TOPIC_NAME.fullmatch(topic):
            raise ConfigurationError(f"{source}: topic {topic!r} is not a Kafka topic name (letters, digits, "
                                     "'.', '_', '-', at most 249)")
    if topics.accounts == topics.transactions:
        raise ConfigurationError(f"BILLING_ACCOUNT_TOPIC / BILLING_TRANSACTION_TOPIC: both are {topics.accounts!r}")


def stack_broker_setting(env: Mapping[str, str] | None = None) -> str | None:
    """BILLING_STACK_BROKER: `tansu` or `kafka`, or None when unset or blank (the stack then keeps the broker its
    folder runs, else starts DEFAULT_STACK_BROKER)."""
    env = os.environ if env is None else env
    value = (env.get("BILLING_STACK_BROKER") or "").strip()
    if not value:
        return None
    if value.lower() not in STACK_BROKERS:
        raise ConfigurationError(f"BILLING_STACK_BROKER: {value!r} is not a broker of the embedded stack; expected "
                                 f"{' or '.join(STACK_BROKERS)} (default {DEFAULT_STACK_BROKER})")
    return value.lower()


def redact_url(url: str | None) -> str:
    """A database URL safe to log: the password replaced by ***."""
    if not url:
        return "<unset>"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparseable: it may still hold a password, so show none of it
        return "<a malformed URL>"
