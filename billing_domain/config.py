"""Settings read from the environment, with defaults that match the embedded local stack.

Names are the contract's (`BILLING_KAFKA_BOOTSTRAP_SERVERS`, `BILLING_DATABASE_URL`,
`BILLING_SLACK_*`) plus a few of our own, all prefixed `BILLING_`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Self

from billing_domain.exceptions import ConfigurationError

DEFAULT_ACCOUNT_TOPIC = "billing.account-events"
DEFAULT_TRANSACTION_TOPIC = "billing.transaction-events"


@dataclass(frozen=True, slots=True)
class Topics:
    """The two event topics. A prefix replaces the leading `billing.` of both names."""

    accounts: str = DEFAULT_ACCOUNT_TOPIC
    transactions: str = DEFAULT_TRANSACTION_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(f"{prefix}account-events", f"{prefix}transaction-events")

    def all(self) -> tuple[str, str]:
        return (self.accounts, self.transactions)


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    recon_database_url: str | None = None  # the pipeline's own tables; defaults to database_url
    topics: Topics = field(default_factory=Topics)
    topic_partitions: int = 4
    slack_bot_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str | None = None
    stuck_after_minutes: float = 5.0
    # The contract's lag window: an event younger than this when the projections were read may not be
    # applied yet. The projector's consumer group, when known, decides exactly instead.
    lag_window_seconds: float = 60.0
    projector_group: str | None = None
    ui_base_url: str = "http://127.0.0.1:3000"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        topics = Topics()
        if env.get("BILLING_TOPIC_PREFIX"):
            topics = Topics.with_prefix(env["BILLING_TOPIC_PREFIX"])
        topics = Topics(env.get("BILLING_ACCOUNT_TOPIC", topics.accounts),
                        env.get("BILLING_TRANSACTION_TOPIC", topics.transactions))
        return cls(
            kafka_bootstrap_servers=env.get("BILLING_KAFKA_BOOTSTRAP_SERVERS") or None,
            database_url=env.get("BILLING_DATABASE_URL") or None,
            recon_database_url=env.get("BILLING_RECON_DATABASE_URL") or None,
            topics=topics,
            topic_partitions=int(_number(env, "BILLING_TOPIC_PARTITIONS", "4")),
            slack_bot_token=env.get("BILLING_SLACK_BOT_TOKEN") or None,
            slack_channel=env.get("BILLING_SLACK_CHANNEL") or None,
            slack_api_url=env.get("BILLING_SLACK_API_URL") or None,
            stuck_after_minutes=_number(env, "BILLING_STUCK_AFTER_MINUTES", "5"),
            lag_window_seconds=_number(env, "BILLING_LAG_WINDOW_SECONDS", "60", minimum_zero=True),
            projector_group=env.get("BILLING_PROJECTOR_GROUP") or None,
            ui_base_url=env.get("BILLING_DAGSTER_UI_URL", "http://127.0.0.1:3000"),
        )

    @property
    def uses_embedded_stack(self) -> bool:
        """Neither Kafka nor a database configured: the project's own embedded stack serves."""
        return not self.kafka_bootstrap_servers and not self.database_url

    def with_servers(self, kafka_bootstrap_servers: str, database_url: str) -> Settings:
        return replace(self, kafka_bootstrap_servers=kafka_bootstrap_servers, database_url=database_url)


def _number(env: Mapping[str, str], name: str, default: str, *, minimum_zero: bool = False) -> float:
    value = env.get(name) or default
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigurationError(f"{name}: {value!r} must be a finite number")
    if number < 0 or (number == 0 and not minimum_zero):
        raise ConfigurationError(f"{name}: {value!r} must be {'zero or more' if minimum_zero else 'above zero'}")
    return number


def redact_url(url: str | None) -> str:
    """A database URL safe to log: the password replaced by ***."""
    if not url:
        return "<unset>"
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
