"""The measured commands get the run's servers and topics, and nothing of the caller's that points elsewhere."""

from __future__ import annotations

import pytest

from billing_sandbox.benchmark.environment import BenchTarget, replay_engine_of

TARGET = BenchTarget("broker:9092", "postgresql+psycopg://bench@db/bench_1", "bench1.", 4)


def test_the_commands_get_the_runs_servers_and_not_the_callers_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", "postgresql://elsewhere/recon")
    monkeypatch.setenv("BILLING_ACCOUNT_TOPIC", "prod.accounts")
    env = TARGET.command_env()
    assert env["BILLING_KAFKA_BOOTSTRAP_SERVERS"] == "broker:9092" and env["BILLING_TOPIC_PREFIX"] == "bench1."
    assert env["BILLING_DATABASE_URL"] == TARGET.database_url and env["BILLING_TOPIC_PARTITIONS"] == "4"
    assert "BILLING_RECON_DATABASE_URL" not in env and "BILLING_ACCOUNT_TOPIC" not in env


def test_the_replay_engine_is_the_runs_when_given_else_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_REPLAY_ENGINE", raising=False)
    assert replay_engine_of(TARGET) == "aggregate"
    monkeypatch.setenv("BILLING_REPLAY_ENGINE", "columnar")
    assert replay_engine_of(TARGET) == "columnar"
    chosen = BenchTarget(TARGET.bootstrap_servers, TARGET.database_url, TARGET.topic_prefix, 4, "aggregate")
    assert chosen.command_env()["BILLING_REPLAY_ENGINE"] == "aggregate" and replay_engine_of(chosen) == "aggregate"
