"""Resuming a replay from its checkpoint, and writing the next one.

The daily run replays only what came after the checkpoint. Rows whose projection sits *below*
the checkpointed version need the state at that older version, which the checkpoint does not
hold: those few entities are replayed from the start of the log in a second, key-filtered pass.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore, CheckpointView
from billing_domain.core.checkpoint import (
    CheckpointHeader,
    code_version,
    dump_entities,
    dump_ledger,
    load_entities,
    load_ledger,
    marks_key,
    tail_mark,
    topics_key,
    why_not_trusted,
)
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.exceptions import CheckpointUnreadableError
from billing_domain.core.replay import AGGREGATE_TYPES, Replay

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resumed:
    start: dict[TopicPartitionKey, int] | None  # None: replay from the beginning
    reason: str  # why it resumed, or why it could not
    run_id: str | None = None  # of the checkpoint resumed from


def resume(event_store: KafkaEventStore, checkpoints: CheckpointStore, replay: Replay,
           entity_types: tuple[str, ...] = AGGREGATE_TYPES) -> Resumed:
    """Load the checkpoint into `replay` if it can be trusted; say why not otherwise.

    A replay limited to `only_ids` loads just those entities' states, one limited to `entity_types`
    just those types' (a transaction's money goes with it). The states go into `replay` only once
    every one of them decoded: a damaged checkpoint leaves it untouched for the full replay.
    """
    key = topics_key(event_store.topics.all())
    loaded = Replay(replay.topics, account_versions=replay.account_versions,
                    transaction_versions=replay.transaction_versions, only_ids=replay.only_ids)
    header: CheckpointHeader | None = None
    reason: str | None = None
    try:
        with checkpoints.reading() as view:  # the header and the states of one checkpoint, even if one is saved now
            header = view.header(key)
            if header is None:
                return Resumed(None, "no checkpoint yet: full replay")
            reason = distrust(event_store, header)
            if reason is None:
                _load_states(view, key, loaded, entity_types)
    except CheckpointUnreadableError as exc:
        reason = str(exc)
    if reason is not None or header is None:
        log.warning("not resuming from the checkpoint: %s; replaying in full", reason)
        return Resumed(None, f"{reason}: full replay")
    replay.merge(loaded)
    load_ledger(replay, header.ledger)
    replay.touched = set()
    return Resumed(start_after(event_store, header), f"resumed from checkpoint of run {header.run_id}",
                   header.run_id)


def _load_states(view: CheckpointView, key: str, replay: Replay, entity_types: tuple[str, ...]) -> None:
    kinds = [*entity_types, *(["money"] if "transaction" in entity_types else [])]
    if replay.only_ids is None:
        # Closed here if loading fails: its cursor must go before `reading()` ends the transaction.
        with closing(view.entities(key, kinds)) as rows:
            load_entities(replay, rows)
    else:
        load_entities(replay, view.entity_rows(key, [(kind, entity_id) for entity_id in replay.only_ids
                                                     for kind in kinds]))


def distrust(event_store: KafkaEventStore, header: CheckpointHeader) -> str | None:
    """Why this checkpoint may not be resumed from (see `why_not_trusted`), or None."""
    partitions = {topic: event_store.partitions_of(topic) for topic in event_store.topics.all()}
    marks = current_marks(event_store, header.cut)
    return why_not_trusted(header, partitions, {marks_key(tp): m for tp, m in marks.items()})


def start_after(event_store: KafkaEventStore, header: CheckpointHeader) -> dict[TopicPartitionKey, int]:
    """Where the log continues after the checkpoint, for every partition there is now."""
    return {(topic, p): header.cut.end.get((topic, p), 0) for topic in event_store.topics.all()
            for p in event_store.partitions_of(topic)}


def current_marks(event_store: KafkaEventStore, cut: Cut) -> dict[TopicPartitionKey, int]:
    values = event_store.read_values({tp: end - 1 for tp, end in cut.end.items() if end > 0})
    return {tp: tail_mark(value) for tp, value in values.items()}


def rows_below_checkpoint(replay: Replay) -> set[str]:
    """The ids whose projection row sits below their checkpointed version, or that have no row: they need
    the second pass, for the state at the row's version and for the first event the row lacks (the lag-aware
    diff judges a row behind, or missing, by when that event occurred). A row at the checkpointed version
    needs nothing here (see `Replay.touched`)."""
    older: set[str] = set()
    for entity_type, aggregates, wanted in (("account", replay.accounts, replay.account_versions),
                                            ("transaction", replay.transactions, replay.transaction_versions)):
        for entity_id, version in wanted.items():
            aggregate = aggregates.get(entity_id)
            if aggregate is not None and version < aggregate.version and not replay.is_corrupt(entity_type,
                                                                                                 entity_id):
                older.add(entity_id)
        if replay.rows_read[entity_type]:
            older.update(entity_id for entity_id, aggregate in aggregates.items()
                         if aggregate.version > 0 and entity_id not in wanted
                         and (entity_type, entity_id) not in replay.unapplied
                         and not replay.is_corrupt(entity_type, entity_id))
    return older


def fill_older_snapshots(event_store: KafkaEventStore, replay: Replay, ids: set[str],
                         stop: dict[TopicPartitionKey, int]) -> None:
    """Replay just `ids` from the start of the log up to the checkpoint, for their older states."""
    if not ids:
        return
    log.info("%d projection rows are below the checkpoint: replaying those entities from the start", len(ids))
    earlier = Replay(event_store.topics, account_versions={i: replay.account_versions[i] for i in ids
                                                           if i in replay.account_versions}
                     if replay.rows_read["account"] else None,
                     transaction_versions={i: replay.transaction_versions[i] for i in ids
                                           if i in replay.transaction_versions}
                     if replay.rows_read["transaction"] else None, only_ids=ids)
    for batch in event_store.read_cut(stop=stop):
        earlier.feed(batch)
    replay.account_snapshots.update(earlier.account_snapshots)
    replay.transaction_snapshots.update(earlier.transaction_snapshots)
    for key, unapplied in earlier.unapplied.items():
        replay.unapplied.setdefault(key, unapplied)  # the tail's record of the same event is the same


def save_checkpoint(event_store: KafkaEventStore, checkpoints: CheckpointStore, replay: Replay, cut: Cut,
                    run_id: str, *, full: bool, delta: bytes | None = None,
                    resumed_from: str | None = None) -> int | None:
    """Write the checkpoint for `cut`: everything after a full replay, only what the tail touched otherwise
    (and then only over the checkpoint of `resumed_from`: None when another run saved meanwhile)."""
    covered = Cut(start={tp: 0 for tp in cut.end}, end=dict(cut.end))
    marks = {marks_key(tp): mark for tp, mark in current_marks(event_store, covered).items()}
    rows = dump_entities(replay, None if full else replay.touched)
    return checkpoints.save(topics_key(event_store.topics.all()), code_version(), covered, marks, dump_ledger(replay),
                            rows, run_id=run_id, replace_all=full, delta=delta, resumed_from=resumed_from)
