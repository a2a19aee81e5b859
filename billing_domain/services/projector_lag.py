"""How far the live projector is behind the event store: per partition, events not yet applied, and
how old the oldest of them is.

The projector commits a batch's offsets after the batch's database transaction, so its consumer
group's committed offset is the first event not (known to be) applied, and the lag is the exact
end of the partition minus that offset. The end comes from a fetch at partition EOF, not from
ListOffsets (which can answer at batch granularity on the embedded broker). A partition the group
never committed counts from the start of the log: the projector would read it from there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from billing_domain.config import DEFAULT_MAX_PROJECTOR_LAG, DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES, Settings
from billing_domain.core.records import LogRecord, broker_time_of, occurred_at_of
from billing_domain.ports import EventLog
from billing_domain.services.alerts import Alert

DEFAULT_PROJECTOR_GROUP = "billing-projector"
ENV_PROJECTOR_GROUP = "BILLING_PROJECTOR_GROUP"


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    end: int  # exact: the offset after the last event
    committed: int | None  # the group's next offset; None if it never committed on this partition
    lag: int  # events not yet applied
    oldest_unapplied_at: datetime | None  # occurred_at of the event at the committed offset
    newest_at: datetime | None  # occurred_at of the partition's last event

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(slots=True)
class ProjectorLag:
    """One measurement of a consumer group's lag on both event topics."""

    group_id: str
    measured_at: datetime
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def projector_seen(self) -> bool:
        """Has the group committed an offset anywhere? A projector commits after each batch it applied; a group
        with none has never applied one (no projector runs under it: none is deployed, or under another group)."""
        return any(p.committed is not None for p in self.partitions)

    @property
    def oldest_unapplied_at(self) -> datetime | None:
        times = [p.oldest_unapplied_at for p in self.partitions if p.lag > 0 and p.oldest_unapplied_at]
        return min(times) if times else None

    @property
    def newest_at(self) -> datetime | None:
        times = [p.newest_at for p in self.partitions if p.newest_at is not None]
        return max(times) if times else None

    @property
    def oldest_unapplied_age(self) -> timedelta:
        """How long the oldest unapplied event has waited (zero when nothing is behind)."""
        oldest = self.oldest_unapplied_at
        return max(self.measured_at - oldest, timedelta(0)) if oldest is not None else timedelta(0)

    @property
    def behind_newest(self) -> timedelta:
        """How far, in event time, the projector is behind the newest event in the log."""
        oldest, newest = self.oldest_unapplied_at, self.newest_at
        return max(newest - oldest, timedelta(0)) if oldest is not None and newest is not None else timedelta(0)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id, "measured_at": self.measured_at.isoformat(), "total_lag": self.total,
            "oldest_unapplied_at": _iso(self.oldest_unapplied_at),
            "oldest_unapplied_age_s": self.oldest_unapplied_age.total_seconds(),
            "behind_newest_s": self.behind_newest.total_seconds(),
            "partitions": [{"topic": p.topic, "partition": p.partition, "end": p.end, "committed": p.committed,
                            "lag": p.lag, "oldest_unapplied_at": _iso(p.oldest_unapplied_at),
                            "newest_at": _iso(p.newest_at)} for p in self.partitions],
        }


def projector_group(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(ENV_PROJECTOR_GROUP) or DEFAULT_PROJECTOR_GROUP


def measure_lag(event_store: EventLog, group_id: str | None = None, *,
                now: datetime | None = None) -> ProjectorLag:
    """The group's lag on every partition of both topics, and the age of its oldest unapplied event."""
    group_id = group_id or projector_group()
    partitions = event_store.all_partitions()
    committed = event_store.committed_offsets(group_id, partitions)
    ends = event_store.exact_ends(partitions)
    starts = event_store.log_starts([tp for tp in partitions if committed.get(tp) is None])
    next_offset = {tp: c if (c := committed.get(tp)) is not None else starts[tp] for tp in partitions}
    oldest = event_store.records_at({tp: o for tp, o in next_offset.items() if ends[tp].end > o})
    lag = ProjectorLag(group_id, now or datetime.now(UTC))
    for tp in partitions:
        first = next_offset[tp]
        lag.partitions.append(PartitionLag(
            tp[0], tp[1], ends[tp].end, committed.get(tp), max(ends[tp].end - first, 0),
            _event_time(oldest.get(tp)), _event_time(ends[tp].last)))
    return lag


# --- the verdict ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LagThresholds:
    max_events: int = DEFAULT_MAX_PROJECTOR_LAG
    max_age: timedelta = timedelta(minutes=DEFAULT_MAX_PROJECTOR_LAG_AGE_MINUTES)

    @classmethod
    def from_settings(cls, settings: Settings) -> LagThresholds:
        return cls(settings.max_projector_lag, timedelta(minutes=settings.max_projector_lag_age_minutes))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LagThresholds:
        """BILLING_MAX_PROJECTOR_LAG and BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES, validated with every setting."""
        return cls.from_settings(Settings.from_env(env))


@dataclass(frozen=True, slots=True)
class LagVerdict:
    passed: bool
    reasons: tuple[str, ...] = ()
    no_projector: bool = False  # no projector has applied anything: there is no lag to judge, only its absence


def lag_verdict(lag: ProjectorLag, thresholds: LagThresholds) -> LagVerdict:
    """Within bounds when at most `max_events` are unapplied and none has waited longer than `max_age`.

    A group that has events to apply and never committed an offset is not a projector behind: none runs (a
    stack without the engine, or the wrong group), and the verdict says so instead of counting the whole log."""
    if lag.total and not lag.projector_seen:
        return LagVerdict(False, (f"no projector runs: consumer group {lag.group_id} has committed no offset on "
                                  f"any partition ({lag.total:,} events in the log); start the projector, or set "
                                  f"{ENV_PROJECTOR_GROUP} to its group",), no_projector=True)
    reasons = []
    if lag.total > thresholds.max_events:
        reasons.append(f"{lag.total:,} events unapplied (max {thresholds.max_events:,})")
    age = lag.oldest_unapplied_age
    if age > thresholds.max_age:
        reasons.append(f"oldest unapplied event waiting {age.total_seconds() / 60:.1f} min "
                       f"(max {thresholds.max_age.total_seconds() / 60:g} min)")
    return LagVerdict(not reasons, tuple(reasons))


def lag_alert(lag: ProjectorLag, verdict: LagVerdict, ui_base_url: str) -> Alert:
    """The Slack message when the projector falls behind past the thresholds."""
    worst = sorted((p for p in lag.partitions if p.lag > 0), key=lambda p: -p.lag)[:5]
    text = (f"Projector {lag.group_id} is behind: {'; '.join(verdict.reasons)}. "
            f"{ui_base_url.rstrip('/')}/assets/projector_lag")
    detail = "\n".join(f"• `{p.name}`: {p.lag:,} unapplied" for p in worst) or "no partition behind"
    return Alert(text, [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Projector `{lag.group_id}` is behind*\n"
                                                                + "\n".join(verdict.reasons)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
    ])


def no_projector_alert(lag: ProjectorLag, verdict: LagVerdict, ui_base_url: str) -> Alert:
    """The one message when no projector applies the events (sent once, not every minute)."""
    text = (f"Projector lag not judged: {'; '.join(verdict.reasons)}. "
            f"{ui_base_url.rstrip('/')}/assets/projector_lag")
    return Alert(text, [{"type": "section", "text": {"type": "mrkdwn", "text": (
        f"*No projector runs under `{lag.group_id}`*\n{'; '.join(verdict.reasons)}\n"
        "Said once: the next message comes when a projector commits its first offsets.")}}])


def lag_recovered_alert(lag: ProjectorLag, *, first_seen: bool = False) -> Alert:
    """Back within bounds; `first_seen`: after no projector ran, one now applies the events."""
    state = "is running and within bounds" if first_seen else "is back within bounds"
    text = f"Projector {lag.group_id} {state}: {lag.total:,} events unapplied."
    return Alert(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


def _event_time(message: LogRecord | None) -> datetime | None:
    """The event's own time; for an undecodable message (the projector skips it too) the broker's."""
    if message is None:
        return None
    return occurred_at_of(message.value()) or broker_time_of(message)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
