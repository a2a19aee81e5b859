"""Progress of a long pass (a replay, a rebuild): done so far, rate, and time left where knowable.

Plain arithmetic over a clock, no I/O: the command line draws it as a bar, the Dagster assets log
it every so often. The total of a replay is often only an estimate (the reported high watermarks
may be the start of a partition's last batch), so a tracker can say "about"; and when the count
passes an estimated total, the total is no longer known and no time left is claimed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
RATE_WINDOW_S = 10.0  # the rate is measured over the last few seconds, so it follows a changing pace


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """One reading of a tracker, for logs and metadata."""

    done: int
    total: int | None
    total_is_estimate: bool
    elapsed_s: float
    rate: float  # units per second, recent
    average_rate: float  # units per second since the start
    eta_s: float | None  # None when the total or the rate is unknown

    @property
    def fraction(self) -> float | None:
        if self.total is None or self.total <= 0:
            return None
        return min(self.done / self.total, 1.0)


class ProgressTracker:
    """Count units (events, entities) and derive rate and ETA.

    `total` may be None (unknown) or an estimate (`estimate=True`: reported as "about").
    """

    def __init__(self, total: int | None = None, *, estimate: bool = False, unit: str = "events",
                 clock: Clock = time.monotonic, window_s: float = RATE_WINDOW_S) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must not be negative, got {total}")
        self.unit = unit
        self.estimate = estimate
        self._total = total
        self._clock = clock
        self._window_s = window_s
        self._started = clock()
        self.done = 0
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])

    def advance(self, n: int) -> None:
        self.done += n
        now = self._clock()
        self._samples.append((now, self.done))
        # Keep one sample at or before the window's start, so the window is always fully covered.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()

    @property
    def total(self) -> int | None:
        """The total, unless the count already passed an estimated one (then it is unknown)."""
        if self._total is not None and self.estimate and self.done > self._total:
            return None
        return self._total

    def snapshot(self) -> ProgressSnapshot:
        now = self._clock()
        elapsed = max(now - self._started, 0.0)
        first_t, first_done = self._samples[0]
        span = now - first_t
        rate = (self.done - first_done) / span if span > 0 else 0.0
        average = self.done / elapsed if elapsed > 0 else 0.0
        total = self.total
        eta = max(total - self.done, 0) / rate if total is not None and rate > 0 else None
        if total is not None and self.done >= total:
            eta = 0.0
        return ProgressSnapshot(self.done, total, self.estimate, elapsed, rate, average, eta)

    def describe(self) -> str:
        """One line: "12,000 of about 1,000,000 events (1.2%), 5,000 events/s, about 3m 18s left"."""
        s = self.snapshot()
        about = "about " if s.total_is_estimate else ""
        text = f"{s.done:,} {self.unit}" if s.total is None else f"{s.done:,} of {about}{s.total:,} {self.unit}"
        if s.fraction is not None:
            text += f" ({s.fraction:.1%})"
        text += f", {s.rate:,.0f} {self.unit}/s"
        if s.eta_s is not None:
            text += f", {about}{format_duration(s.eta_s)} left"
        return text


def format_duration(seconds: float) -> str:
    """A short human duration: 42s, 3m 18s, 2h 05m."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
