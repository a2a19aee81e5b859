"""What a replay reads, decided before it reads: the whole log, the tail after the checkpoint, or the tail with
only what changed diffed again (delta); and why.

`plan_read` is a pure function of what is known before the first event is read: what was asked for, the
checkpoint's header and whether the log still holds what it covered (its tail marks), whether the delta memo
and the report it names can be used, and how long the tail is by the offsets the broker reports. It reads
nothing, so every rule here is tested without servers (tests/unit/test_read_plan.py).

Two things are only known once the tail is read, and neither makes the log be read again (see
`services.replay_paths`): a checkpointed state that does not decode (`ReadPlan.without_checkpoint`: the part of
the log before the tail is read, and the tail already held is fed after it) and an entity the delta run's
pre-scan missed (`ReadPlan.every_entity`: every entity is diffed, with the tail already held).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from billing_domain.core.checkpoint import CheckpointHeader, why_not_trusted
from billing_domain.core.cut import TopicPartitionKey

# A tail this large (in events per checkpointed entity) touches most entities anyway; the plain incremental
# replay streams it instead of holding it in memory.
MAX_TAIL_PER_ENTITY = 0.5
MIN_TAIL_LIMIT = 100_000


class ReplayMode(StrEnum):
    """How a replay reads the log: `str(mode)` and `mode.value` are the names reports carry."""

    FULL = "full"  # every event from the start of the log
    INCREMENTAL = "incremental"  # the checkpointed state, then the tail after it; every entity diffed
    DELTA = "delta"  # the tail, and only the entities it or the projection rows changed diffed again


class Hydration(StrEnum):
    """Which checkpointed states are loaded before the tail is fed."""

    NOTHING = "nothing"  # a full replay starts from no state
    EVERY = "every"  # every state of the asked entity types (or of the asked ids)
    CHANGED = "changed"  # the states of what the tail and the rows changed, known once the tail is read


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What the caller asked for."""

    checkpoints: bool  # a checkpoint store was given
    full: bool = False  # replay the whole log even with a checkpoint
    delta: bool = False  # diff only what changed, when that can be done
    only_ids: bool = False  # just some entities (a rebuild, one selection)
    bounded: bool = False  # only up to given offsets
    every_type: bool = True  # rows and states of both entity types
    workers: int = 1  # processes for a full replay

    @property
    def delta_allowed(self) -> bool:
        """Only a run of every entity to the log's end may diff just what changed: its outcome then holds the
        entities diffed again, and the rest is carried from the previous report."""
        return (self.delta and self.checkpoints and not self.full and not self.only_ids and not self.bounded
                and self.every_type)


@dataclass(frozen=True, slots=True)
class CheckpointFacts:
    """The checkpoint's header and the log as it is now, read before any event."""

    header: CheckpointHeader | None  # None: no checkpoint yet (or its header did not decode)
    partitions: Mapping[str, Sequence[int]]  # every partition of each topic now, topics in the log's order
    marks: Mapping[str, int | None]  # the tail mark of the record at each end the header covers, now
    unreadable: str | None = None  # why the header does not decode


@dataclass(frozen=True, slots=True)
class DeltaFacts:
    """What a delta run needs besides a trusted checkpoint, looked at before any event is read."""

    memo_run: str  # the run whose report the memo names
    entities: int  # aggregates that run folded: the longest tail held scales with it
    tail: int  # about how many events follow the checkpoint, from the ends the broker reports
    why_not: str | None = None  # the memo is gone or unreadable, its report is not stored, the rows not comparable


@dataclass(frozen=True, slots=True)
class ReadPlan:
    mode: ReplayMode
    reason: str  # why, as the report's `replay_mode_reason` gives it
    start: dict[TopicPartitionKey, int] | None  # where each partition's read begins; None: at the log's start
    hydrate: Hydration
    parallel: bool = False  # fold partition groups in worker processes
    resumed_from: str | None = None  # the run whose checkpoint the read continues
    not_delta: str | None = None  # why a delta run was asked for and not planned

    def without_checkpoint(self, why: str, request: ReadRequest) -> ReadPlan:
        """The plan once a checkpointed state did not decode: the whole log from the start."""
        not_delta = None if self.mode is ReplayMode.DELTA else self.not_delta
        return ReadPlan(ReplayMode.FULL, _with(f"{why}: full replay", not_delta), None, Hydration.NOTHING,
                        _parallel(request), None, not_delta)

    def every_entity(self, why: str) -> ReadPlan:
        """A delta plan given up once the tail was read: every entity diffed, from the same checkpoint."""
        return replace(self, mode=ReplayMode.INCREMENTAL, hydrate=Hydration.EVERY, not_delta=why,
                       reason=_with(_resumed(self.resumed_from), why))


def tail_limit(entities: int) -> int:
    """The longest tail a delta run holds in memory."""
    return max(MIN_TAIL_LIMIT, int(MAX_TAIL_PER_ENTITY * entities))


def tail_length(start: Mapping[TopicPartitionKey, int], reported_ends: Mapping[TopicPartitionKey, int]) -> int:
    """About how many events lie between `start` and the ends the broker reports (which may be a batch short)."""
    return sum(max(reported_ends.get(tp, 0) - first, 0) for tp, first in start.items())


def start_after(header: CheckpointHeader, partitions: Mapping[str, Sequence[int]]) -> dict[TopicPartitionKey, int]:
    """Where the log continues after the checkpoint, for every partition there is now (a new one: at 0)."""
    return {(topic, p): header.cut.end.get((topic, p), 0) for topic, numbers in partitions.items() for p in numbers}


def distrust(checkpoint: CheckpointFacts) -> str | None:
    """Why the checkpoint may not be resumed from, or None (see `checkpoint.why_not_trusted`)."""
    if checkpoint.unreadable is not None:
        return checkpoint.unreadable
    if checkpoint.header is None:
        return None
    return why_not_trusted(checkpoint.header, {t: list(p) for t, p in checkpoint.partitions.items()},
                           dict(checkpoint.marks))


def why_not_delta_yet(request: ReadRequest, checkpoint: CheckpointFacts | None) -> str | None:
    """Why no delta run, from the request and the header alone (None: look at the memo next). Asked first, so
    that a memo listing every projection id is only read when it can be used."""
    if not request.delta_allowed or checkpoint is None:
        return "not asked for"
    if checkpoint.unreadable is not None:
        return checkpoint.unreadable
    if checkpoint.header is None or not checkpoint.header.has_delta_memo:
        return "no delta memo with the checkpoint"
    return distrust(checkpoint)


def plan_read(request: ReadRequest, checkpoint: CheckpointFacts | None, delta: DeltaFacts | None) -> ReadPlan:
    """Decide the mode, where each partition's read starts and what to load, before anything is read.

    `checkpoint` is None without a checkpoint store or when a full replay is asked for; `delta` is None when
    `why_not_delta_yet` already said no."""
    if request.full or checkpoint is None:
        return _full("full replay (asked for)" if request.full else "full replay", request, None)
    not_delta = None if not request.delta_allowed else _why_not_delta(request, checkpoint, delta)
    why = distrust(checkpoint)
    if why is not None:
        return _full(f"{why}: full replay", request, not_delta)
    if checkpoint.header is None:
        return _full("no checkpoint yet: full replay", request, not_delta)
    start = start_after(checkpoint.header, checkpoint.partitions)
    if request.delta_allowed and not_delta is None and delta is not None:
        return ReadPlan(ReplayMode.DELTA, f"delta from the checkpoint of run {delta.memo_run}: a tail of about "
                        f"{delta.tail:,} events", start, Hydration.CHANGED, resumed_from=checkpoint.header.run_id)
    return ReadPlan(ReplayMode.INCREMENTAL, _with(_resumed(checkpoint.header.run_id), not_delta), start,
                    Hydration.EVERY, resumed_from=checkpoint.header.run_id, not_delta=not_delta)


def _why_not_delta(request: ReadRequest, checkpoint: CheckpointFacts, delta: DeltaFacts | None) -> str | None:
    early = why_not_delta_yet(request, checkpoint)
    if early is not None:
        return early
    if delta is None:
        return "the delta memo was not looked at"
    if delta.why_not is not None:
        return delta.why_not
    limit = tail_limit(delta.entities)
    if delta.tail > limit:
        return f"the tail holds about {delta.tail:,} events, more than {limit:,}"
    return None


def _full(reason: str, request: ReadRequest, not_delta: str | None) -> ReadPlan:
    return ReadPlan(ReplayMode.FULL, _with(reason, not_delta), None, Hydration.NOTHING, _parallel(request),
                    not_delta=not_delta)


def _parallel(request: ReadRequest) -> bool:
    return request.workers > 1 and not request.only_ids


def _resumed(run_id: str | None) -> str:
    return f"resumed from checkpoint of run {run_id}"


def _with(reason: str, not_delta: str | None) -> str:
    return reason if not_delta is None else f"{reason} (every entity diffed: {not_delta})"
