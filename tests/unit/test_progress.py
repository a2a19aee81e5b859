"""The progress tracker's arithmetic (rate, ETA, estimated totals) and the Dagster log cadence, on a fake clock."""

from __future__ import annotations

import pytest

from billing_domain.services.progress import ProgressTracker, format_duration
from billing_pipelines.progress_log import ProgressLog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_rate_and_eta_with_a_known_total() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(10_000, clock=clock)
    clock.tick(2)
    tracker.advance(1_000)
    clock.tick(2)
    tracker.advance(1_000)

    snapshot = tracker.snapshot()
    assert (snapshot.done, snapshot.total, snapshot.elapsed_s) == (2_000, 10_000, 4.0)
    assert snapshot.rate == 500.0 and snapshot.average_rate == 500.0
    assert snapshot.eta_s == 16.0  # 8,000 left at 500/s
    assert snapshot.fraction == 0.2
    assert tracker.describe() == "2,000 of 10,000 events (20.0%), 500 events/s, 16s left"


def test_the_rate_follows_the_recent_window() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(None, clock=clock, window_s=10)
    for _ in range(10):  # 100/s for 10 s
        clock.tick(1)
        tracker.advance(100)
    for _ in range(10):  # then 1,000/s for 10 s
        clock.tick(1)
        tracker.advance(1_000)

    snapshot = tracker.snapshot()
    assert snapshot.average_rate == 11_000 / 20
    assert snapshot.rate == 1_000.0  # the last 10 s only
    assert snapshot.eta_s is None and snapshot.fraction is None  # no total: no time left claimed
    assert tracker.describe() == "11,000 events, 1,000 events/s"


def test_an_estimated_total_says_about_and_is_dropped_once_passed() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(1_000, estimate=True, clock=clock)
    clock.tick(1)
    tracker.advance(250)
    assert tracker.describe() == "250 of about 1,000 events (25.0%), 250 events/s, about 3s left"

    clock.tick(4)
    tracker.advance(1_000)  # past the estimate: the end is no longer known
    snapshot = tracker.snapshot()
    assert snapshot.total is None and snapshot.eta_s is None
    assert tracker.describe() == "1,250 events, 250 events/s"


def test_done_at_the_total_has_nothing_left_and_no_time_has_no_rate() -> None:
    clock = FakeClock()
    tracker = ProgressTracker(0, clock=clock, unit="entities")
    snapshot = tracker.snapshot()
    assert (snapshot.rate, snapshot.eta_s, snapshot.fraction) == (0.0, 0.0, None)
    assert tracker.describe() == "0 of 0 entities, 0 entities/s, 0s left"
    with pytest.raises(ValueError, match="negative"):
        ProgressTracker(-1)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.4, "42s"), (198, "3m 18s"), (7_500, "2h 05m")])
def test_durations_read_short(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_dagster_log_is_written_every_so_often_not_per_batch() -> None:
    clock = FakeClock()
    lines: list[str] = []
    log = ProgressLog(lines.append, "replay", 100_000, every_s=15, every_units=50_000, clock=clock)
    for _ in range(9):  # 9 batches of 1,000 in 9 s: neither threshold reached
        clock.tick(1)
        log(1_000)
    assert lines == []
    for _ in range(6):  # 15 s are up at the 6th batch
        clock.tick(1)
        log(1_000)
    assert lines == ["replay: 15,000 of 100,000 events (15.0%), 1,000 events/s, 1m 25s left"]
    log(49_000)
    assert len(lines) == 1
    log(1_000)  # 50,000 units since the last line, in the same second
    assert len(lines) == 2 and lines[1].startswith("replay: 65,000 of 100,000 events")
    metadata = log.metadata()
    assert metadata["progress/events"].value == 65_000
    assert metadata["progress/seconds"].value == 15.0
