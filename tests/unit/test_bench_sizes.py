"""The bench warns before a size the embedded Tansu broker has never served, unless it runs on Apache Kafka
(named servers, or the embedded stack's Kafka)."""

from __future__ import annotations

import pytest

from billing_sandbox.benchmark import SIZES
from billing_sandbox.benchmark.runner import embedded_broker_warning


def test_large_on_the_embedded_stack_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("BILLING_DATABASE_URL", raising=False)
    monkeypatch.delenv("BILLING_STACK_BROKER", raising=False)
    warning = embedded_broker_warning(SIZES["large"])
    assert warning is not None and "BILLING_STACK_BROKER=kafka" in warning
    assert embedded_broker_warning(SIZES["medium"]) is None


def test_large_on_configured_servers_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://billing@db/billing")
    assert embedded_broker_warning(SIZES["large"]) is None


def test_large_on_the_embedded_stacks_apache_kafka_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("BILLING_DATABASE_URL", raising=False)
    monkeypatch.setenv("BILLING_STACK_BROKER", "kafka")
    assert embedded_broker_warning(SIZES["large"]) is None
