"""A run clock that tests set by hand: `stuck` and the lag window are judged by the run's clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.services.reconcile import replay_all


@dataclass
class TestClock:
    """Callable as `ReconcileOptions.clock`; returns `at` until a test moves it."""

    __test__ = False  # not a test class, despite its name
    at: datetime

    def __call__(self) -> datetime:
        return self.at

    def set_to_newest_event(self, event_store: KafkaEventStore, projections: ProjectionStore) -> None:
        """Stand where a run taken right after the newest event would stand (as if the engine never paused)."""
        newest = replay_all(event_store, projections, full=True).replay.cut_time
        assert newest is not None, "the log is empty"
        self.at = newest
