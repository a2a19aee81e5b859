"""Resuming a replay from its checkpoint, and writing the next one.

The daily run replays only what came after the checkpoint (whether it may is `read_plan`'s decision). Rows
whose projection sits *below* the checkpointed version need the state at that older version, which the
checkpoint does not hold: those few entities are replayed from the start of the log up to the checkpoint in
a second, key-filtered pass.
"""

from __future__ import annotations

import logging
from contextlib import closing

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
)
from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.replay import AGGREGATE_TYPES, Replay
from billing_domain.ports import CheckpointStore, CheckpointView, EventLog

log = logging.getLogger(__name__)


def hydrate_every(view: CheckpointView, header: CheckpointHeader, replay: Replay,
                  entity_types: tuple[str, ...] = AGGREGATE_TYPES) -> None:
    """Load every checkpointed state of `entity_types` into `replay` (just those of `replay.only_ids` when it is
    limited; a transaction's money goes with it), and the ledger sums.

    The states go into `replay` only once every one of them decoded: a damaged checkpoint raises
    `CheckpointUnreadableError` and leaves `replay` untouched for the full replay."""
    loaded = Replay(replay.topics, account_versions=replay.account_versions,
                    transaction_versions=replay.transaction_versions, only_ids=replay.only_ids)
    _load_states(view, header.topics, loaded, entity_types)
    replay.merge(loaded)
    load_ledger(replay, header.ledger)
    replay.touched = set()


def _load_states(view: CheckpointView, key: str, replay: Replay, entity_types: tuple[str, ...]) -> None:
    kinds = [*entity_types, *(["money"] if "transaction" in entity_types else [])]
    if replay.only_ids is None:
        # Closed here if loading fails: its cursor must go before `reading()` ends the transaction.
        with closing(view.entities(key, kinds)) as rows:
            load_entities(replay, rows)
    else:
        load_entities(replay, view.entity_rows(key, [(kind, entity_id) for entity_id in replay.only_ids
                                                     for kind in kinds]))


def current_marks(event_log: EventLog, cut: Cut) -> dict[TopicPartitionKey, int]:
    values = event_log.read_values({tp: end - 1 for tp, end in cut.end.items() if end > 0})
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


def fill_older_snapshots(event_log: EventLog, replay: Replay, ids: set[str],
                         stop: dict[TopicPartitionKey, int]) -> None:
    """Replay just `ids` from the start of the log up to the checkpoint, for their older states."""
    if not ids:
        return
    log.info("%d projection rows are below the checkpoint: replaying those entities from the start", len(ids))
    earlier = Replay(event_log.topics, account_versions={i: replay.account_versions[i] for i in ids
                                                         if i in replay.account_versions}
                     if replay.rows_read["account"] else None,
                     transaction_versions={i: replay.transaction_versions[i] for i in ids
                                           if i in replay.transaction_versions}
                     if replay.rows_read["transaction"] else None, only_ids=ids)
    for batch in event_log.read_cut(stop=stop):
        earlier.feed(batch)
    replay.account_snapshots.update(earlier.account_snapshots)
    replay.transaction_snapshots.update(earlier.transaction_snapshots)
    for key, unapplied in earlier.unapplied.items():
        replay.unapplied.setdefault(key, unapplied)  # the tail's record of the same event is the same


def save_checkpoint(event_log: EventLog, checkpoints: CheckpointStore, replay: Replay, cut: Cut,
                    run_id: str, *, full: bool, delta: bytes | None = None,
                    resumed_from: str | None = None) -> int | None:
    """Write the checkpoint for `cut`: everything after a full replay, only what the tail touched otherwise
    (and then only over the checkpoint of `resumed_from`: None when another run saved meanwhile)."""
    covered = Cut(start={tp: 0 for tp in cut.end}, end=dict(cut.end))
    marks = {marks_key(tp): mark for tp, mark in current_marks(event_log, covered).items()}
    rows = dump_entities(replay, None if full else replay.touched)
    return checkpoints.save(topics_key(event_log.topics.all()), code_version(), covered, marks, dump_ledger(replay),
                            rows, run_id=run_id, replace_all=full, delta=delta, resumed_from=resumed_from)
