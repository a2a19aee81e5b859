"""How a live projector is judged: what it, and the other topic, could have seen when they were read.

The engine appends an event and its projector applies it a moment later, and a run cannot read
PostgreSQL and both topics at one instant. The contract's **lag window** (default 60 s) says how long
that moment may be: an event that occurred less than the window before the run began reading the
projections may be missing from them, and a transfer's status and its money legs, read from two
topics a moment apart, may disagree for events inside it.

Where the projector's consumer group is known, the offsets it committed (read *before* the
projections) decide exactly instead of the window: an event below them has been applied, so a row
that lacks it is a real fault however recent; an event at or above them is merely not applied yet.

`LagJudge` is the one place these rules live; the diff, the saga check and the ledger ask it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.exceptions import EventPosition

DEFAULT_LAG_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class LagJudge:
    read_at: datetime  # the run's clock when it began reading the projections
    window: timedelta = DEFAULT_LAG_WINDOW
    group: str | None = None  # the projector's consumer group, when its offsets decide
    applied: Mapping[TopicPartitionKey, int] | None = None  # its committed offsets, read before the rows

    @classmethod
    def strict(cls, read_at: datetime) -> LagJudge:
        """No window at all: for a still history (a point in time in the past), every gap is a fault."""
        return cls(read_at, timedelta(0))

    @property
    def horizon(self) -> datetime:
        """Events that occurred at or before this were in the projections and in both topics' reads."""
        return self.read_at - self.window

    def may_be_unapplied(self, occurred_at: datetime, position: EventPosition) -> bool:
        """Could the projector not have applied this event yet when the projections were read?"""
        if self.applied is not None:
            return position.offset >= self.applied.get((position.topic, position.partition), 0)
        return occurred_at > self.horizon

    def not_projected_yet(self, unapplied: tuple[datetime, EventPosition] | None) -> bool:
        """An entity with no row whose first event (`Replay.unapplied`) may not be applied yet."""
        return unapplied is not None and self.may_be_unapplied(*unapplied)

    def seen_apart(self, occurred_at: datetime) -> bool:
        """Could this event be on one topic's read and not the other's (a status against its legs)?"""
        return occurred_at > self.horizon

    def age(self, occurred_at: datetime) -> str:
        """'3.2 s before the read' inside the window (or after it: appended while the run read); the time
        itself outside it, where an age would only change from run to run."""
        seconds = (self.read_at - occurred_at).total_seconds()
        if occurred_at <= self.horizon:
            return f"at {occurred_at:%Y-%m-%d %H:%M:%S} UTC"
        return f"{seconds:.1f} s before the read" if seconds >= 0 else f"{-seconds:.1f} s after the read began"

    def basis(self) -> str:
        """What decided, for the finding's text."""
        if self.applied is not None:
            return f"projector group {self.group} has not committed it yet"
        return f"inside the {self.window.total_seconds():g} s lag window"

    def describe(self) -> dict[str, object]:
        """The run's lag settings, for the report's stats."""
        return {"read_at": self.read_at.isoformat(), "lag_window_s": self.window.total_seconds(),
                "projector_group": self.group, "projector_offsets_read": self.applied is not None}
