"""Every setting is checked when read (issue 14.5): finite, in range, whole where it must be, a PostgreSQL URL;
the error names the variable and never echoes a password."""

from __future__ import annotations

import pytest

from billing_domain.config import Settings, redact_url
from billing_domain.core.exceptions import ConfigurationError

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BILLING_STUCK_AFTER_MINUTES", "nan", "finite"),
    ("BILLING_STUCK_AFTER_MINUTES", "-5", "above zero"),
    ("BILLING_STUCK_AFTER_MINUTES", "0", "above zero"),
    ("BILLING_STUCK_AFTER_MINUTES", "1e9", "maximum"),
    ("BILLING_STUCK_AFTER_MINUTES", "five", "not a number"),
    ("BILLING_LAG_WINDOW_SECONDS", "-1", "zero or more"),
    ("BILLING_LAG_WINDOW_SECONDS", "inf", "finite"),
    ("BILLING_LAG_WINDOW_SECONDS", "864000", "maximum"),
    ("BILLING_TOPIC_PARTITIONS", "2.5", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "4.0", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "inf", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "nan", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "0", "between 1 and"),
    ("BILLING_TOPIC_PARTITIONS", "-3", "between 1 and"),
    ("BILLING_TOPIC_PARTITIONS", "1000000", "between 1 and"),
    ("BILLING_DATABASE_URL", "not a url", "not a database URL"),
    ("BILLING_DATABASE_URL", f"postgresql://u:{SECRET}@host:port/db", "not a database URL"),
    ("BILLING_DATABASE_URL", f"mysql://u:{SECRET}@host/db", "not PostgreSQL"),
    ("BILLING_DATABASE_URL", f"postgresql://u:{SECRET}@host:70000/db", "port 70000"),
    ("BILLING_RECON_DATABASE_URL", f"sqlite:///{SECRET}.db", "not PostgreSQL"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "host:notaport", "HOST:PORT"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "a:9092,,b:9092", "HOST:PORT"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "host:0", "HOST:PORT"),
    ("BILLING_TOPIC_PREFIX", "bad prefix ", "not a Kafka topic name"),
    ("BILLING_ACCOUNT_TOPIC", "billing.transaction-events", "both are"),
    ("BILLING_DAGSTER_UI_URL", "localhost:3000", "http"),
    ("BILLING_SLACK_API_URL", "ftp://slack", "http"),
    ("BILLING_AUTO_REPAIR_MAX", "2.5", "whole number"),
    ("BILLING_AUTO_REPAIR_MAX", "-1", "between 0 and"),
    ("BILLING_MAX_LAGGING", "lots", "whole number"),
    ("BILLING_MAX_LAGGING", "1e12", "whole number"),
])
def test_a_bad_setting_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert message.startswith(name) and says in message, message
    assert SECRET not in message


def test_good_settings_are_read_as_given() -> None:
    settings = Settings.from_env({
        "BILLING_KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092, kafka-2:9092,[::1]:9093",
        "BILLING_DATABASE_URL": f"postgresql+psycopg://billing:{SECRET}@db:5432/billing",
        "BILLING_TOPIC_PARTITIONS": " 12 ", "BILLING_STUCK_AFTER_MINUTES": "2.5",
        "BILLING_LAG_WINDOW_SECONDS": "0", "BILLING_DAGSTER_UI_URL": "https://dagster.example/ui",
        "BILLING_AUTO_REPAIR_MAX": "0", "BILLING_MAX_LAGGING": "250",
    })
    assert (settings.auto_repair_max, settings.max_lagging) == (0, 250)
    assert settings.topic_partitions == 12 and settings.stuck_after_minutes == 2.5
    assert settings.lag_window_seconds == 0 and settings.ui_base_url == "https://dagster.example/ui"
    assert redact_url(settings.database_url) == "postgresql+psycopg://billing:***@db:5432/billing"


def test_blank_servers_are_unset_so_neither_means_the_embedded_stack() -> None:
    assert Settings.from_env({"BILLING_KAFKA_BOOTSTRAP_SERVERS": " ", "BILLING_DATABASE_URL": ""}).uses_embedded_stack


def test_a_malformed_url_is_never_shown_even_redacted() -> None:
    assert SECRET not in redact_url(f"postgresql://u:{SECRET}@host:port/db")
