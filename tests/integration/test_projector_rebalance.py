"""The live projector's consumer group across a rebalance, once on each broker (Tansu and Apache Kafka): two
projectors in one group, one killed between its database commit and its offset commit; the other takes its
partitions over and every event is applied exactly once (the check: tests/support/broker_semantics.py)."""

from __future__ import annotations

import pytest
from support.broker_semantics import ProjectorRebalanceChecks


class TestProjectorRebalance(ProjectorRebalanceChecks):
    @pytest.fixture
    def bootstrap(self, broker_bootstrap: str) -> str:
        return broker_bootstrap
