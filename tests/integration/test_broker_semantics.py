"""The broker-agnostic checks of tests/support/broker_semantics.py, once on each broker (`broker_bootstrap`:
Tansu and Apache Kafka): tombstones, keyless messages, compressed batches and headers, and a topic configured to
lose events said loudly. What only Apache Kafka shows (transactions) is tests/integration/test_kafka_semantics.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from support.broker_semantics import RecordShapeChecks, TopicConfigChecks, create_topics

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.core.records import Topics
from billing_domain.core.topic_config import CAN_LOSE_EVENTS, UNKNOWN, TopicSafety
from billing_domain.services.topic_safety import judge_topics


class TestRecordShapes(RecordShapeChecks):
    @pytest.fixture
    def bootstrap(self, broker_bootstrap: str) -> str:
        return broker_bootstrap


class TestTopicConfig(TopicConfigChecks):
    @pytest.fixture
    def bootstrap(self, broker_bootstrap: str) -> str:
        return broker_bootstrap


def test_topics_created_without_settings_are_unknown_on_a_broker_that_does_not_describe_them(
        broker: str, broker_bootstrap: str) -> None:
    """Tansu describes only the settings a topic was created with; Apache Kafka describes its defaults (a 7-day
    retention). Either way the run goes on: unknown is one note, a default retention a warning."""
    topics = Topics.with_prefix(f"bare{uuid.uuid4().hex[:8]}.")
    create_topics(broker_bootstrap, {t: {} for t in topics.all()})
    bare = KafkaEventStore(broker_bootstrap, topics)
    stats: dict[str, Any] = {"warnings": ["an earlier warning"]}
    safety: TopicSafety = judge_topics(bare, stats)
    if broker == "tansu":
        assert all(c.settings is None for c in safety.configs)
        assert stats["topic_config_status"] == UNKNOWN and stats["warnings"] == ["an earlier warning"]
        assert stats["topic_config_note"].startswith(f"{UNKNOWN}: the broker did not describe cleanup.policy")
        assert stats["topic_config_note"].count(UNKNOWN) == 1 and all(t in stats["topic_config_note"]
                                                                       for t in topics.all())
    else:  # Apache Kafka describes its defaults, and its default retention is finite
        assert stats["topic_config_status"] == CAN_LOSE_EVENTS and len(stats["warnings"]) == 3
        assert all("retention.ms=604800000 (7 days)" in w for w in stats["warnings"][1:])
    bare.close()
