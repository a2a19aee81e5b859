"""Progress of a long replay or rebuild in a Dagster run: a log line every so often, and metadata at the end.

The arithmetic is `billing_domain.services.progress.ProgressTracker`; this only decides when to log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from billing_domain.services.progress import ProgressTracker
from billing_pipelines.constants import PROGRESS_EVERY_EVENTS

LOG_EVERY_S = 15.0


class ProgressLog:
    """A progress callback (`progress(n)` per batch) that logs `label: <tracker line>` to the run log at
    most every `every_s` seconds or every `every_units` units, whichever comes first."""

    def __init__(self, log: Callable[[str], Any], label: str, total: int | None = None, *, estimate: bool = False,
                 unit: str = "events", every_s: float = LOG_EVERY_S, every_units: int = PROGRESS_EVERY_EVENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = ProgressTracker(total, estimate=estimate, unit=unit, clock=clock)
        self._log = log
        self._label = label
        self._every_s = every_s
        self._every_units = every_units
        self._clock = clock
        self._logged_at = clock()
        self._logged_done = 0

    def __call__(self, n: int) -> None:
        self.tracker.advance(n)
        now = self._clock()
        if now - self._logged_at >= self._every_s or self.tracker.done - self._logged_done >= self._every_units:
            self._logged_at, self._logged_done = now, self.tracker.done
            self._log(f"{self._label}: {self.tracker.describe()}")

    def metadata(self, prefix: str = "progress") -> dict[str, dg.MetadataValue]:
        """The pass as numbers: units done, seconds, average rate."""
        snapshot = self.tracker.snapshot()
        return {f"{prefix}/{self.tracker.unit}": dg.MetadataValue.int(snapshot.done),
                f"{prefix}/seconds": dg.MetadataValue.float(round(snapshot.elapsed_s, 3)),
                f"{prefix}/{self.tracker.unit}_per_s": dg.MetadataValue.float(round(snapshot.average_rate, 1))}


def progress_log(context: dg.OpExecutionContext | dg.AssetExecutionContext, label: str, total: int | None = None,
                 *, estimate: bool = False, unit: str = "events") -> ProgressLog:
    """A `ProgressLog` writing to the run's log."""
    return ProgressLog(context.log.info, label, total, estimate=estimate, unit=unit)
