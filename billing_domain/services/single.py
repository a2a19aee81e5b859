"""Reconciling one account or one transaction without reading the whole log.

With a trusted checkpoint, the entity's state comes from it and only the tail of its own
partition is read (the checkpoint knows the partition). A transfer's money lives on its two
accounts' streams, so for a transaction those two accounts are resumed and followed too.
Without a checkpoint (or when the projection sits below it), the entity's keys are read from
the start, other keys skipped before decoding.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from billing_domain.core.accounts import AccountState
from billing_domain.core.checkpoint import EntityRow, code_version, load_entities, topics_key
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.exceptions import CheckpointUnreadableError
from billing_domain.core.findings import ReconciliationReport
from billing_domain.core.replay import Replay
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import CheckpointStore, EventLog, ProjectionStore
from billing_domain.services import incremental
from billing_domain.services.collector import collector_paused
from billing_domain.services.outcome import ReplayOutcome
from billing_domain.services.read_plan import ReplayMode
from billing_domain.services.reconcile import ReconcileOptions, build_report, judge_from_here, new_run_id

log = logging.getLogger(__name__)


def reconcile_entity(event_store: EventLog, projections: ProjectionStore, entity_type: str, entity_id: str, *,
                     run_id: str | None = None, options: ReconcileOptions | None = None,
                     checkpoints: CheckpointStore | None = None) -> ReconciliationReport:
    """One account or one transaction: its events against its projection row."""
    started_at = datetime.now(UTC)
    options = options or ReconcileOptions()
    # The clock and the projector's offsets before the row (see the service): the lag is judged at them.
    judge = judge_from_here(event_store, options)
    outcome = None
    if checkpoints is not None:
        outcome = _from_checkpoint(event_store, projections, checkpoints, entity_type, entity_id)
    if outcome is None:
        outcome = _from_the_start(event_store, projections, entity_type, entity_id)
    outcome.judge = judge
    report = build_report(outcome, run_id=run_id or new_run_id(), scope=f"{entity_type}:{entity_id}",
                          started_at=started_at, options=options, entity_types=(entity_type,))
    report.findings = [f for f in report.findings if f.entity_type == entity_type and f.entity_id == entity_id]
    return report


def _read_rows(projections: ProjectionStore, entity_type: str, entity_id: str
               ) -> tuple[dict[str, AccountState], dict[str, TransactionState]]:
    """The entity's projection row, read before its events (see the service's note on order)."""
    if entity_type == "account":
        return projections.read_accounts([entity_id]), {}
    return {}, projections.read_transactions([entity_id])


def _replay_for(event_store: EventLog, entity_type: str, accounts: dict[str, AccountState],
                transactions: dict[str, TransactionState], entity_id: str) -> Replay:
    """A replay that knows the rows of the entity's own type only (a transfer's accounts are folded for
    their money, not diffed: they are not missing rows)."""
    return Replay(event_store.topics,
                  account_versions={k: r.version for k, r in accounts.items()} if entity_type == "account" else None,
                  transaction_versions={k: r.version for k, r in transactions.items()}
                  if entity_type == "transaction" else None, only_ids={entity_id})


def _from_the_start(event_store: EventLog, projections: ProjectionStore, entity_type: str,
                    entity_id: str) -> ReplayOutcome:
    accounts, transactions = _read_rows(projections, entity_type, entity_id)
    replay = _replay_for(event_store, entity_type, accounts, transactions, entity_id)
    topic = event_store.topics.accounts if entity_type == "account" else event_store.topics.transactions
    with collector_paused():
        reader = event_store.read_cut(topics=[topic])
        for batch in reader:
            replay.feed(batch)
        saga = replay.transactions.get(entity_id)
        if saga is not None:  # its money: the two accounts' streams
            replay.only_ids = {entity_id, saga.source_account_id, saga.destination_account_id}
            for batch in event_store.read_cut(topics=[event_store.topics.accounts]):
                replay.feed(batch)
    return ReplayOutcome(replay, reader.cut, accounts, transactions, mode=ReplayMode.FULL,
                         mode_reason="no usable checkpoint: read this entity's keys from the start")


def _from_checkpoint(event_store: EventLog, projections: ProjectionStore, checkpoints: CheckpointStore,
                     entity_type: str, entity_id: str) -> ReplayOutcome | None:
    key = topics_key(event_store.topics.all())
    accounts, transactions = _read_rows(projections, entity_type, entity_id)  # rows before events
    try:
        with checkpoints.reading() as view:
            header = view.header(key)
            if header is None or header.code_version != code_version():
                return None
            wanted = [(entity_type, entity_id)] + ([("money", entity_id)] if entity_type == "transaction" else [])
            rows = view.entity_rows(key, wanted)
            replay = _replay_for(event_store, entity_type, accounts, transactions, entity_id)
            load_entities(replay, rows)
            saga = replay.transactions.get(entity_id)
            if saga is not None:
                parties = {saga.source_account_id, saga.destination_account_id}
                party_rows = view.entity_rows(key, [("account", a) for a in parties])
                load_entities(replay, party_rows)
                replay.only_ids = {entity_id, *parties}
                rows += party_rows
    except CheckpointUnreadableError as exc:
        log.warning("not using the checkpoint for %s %s: %s", entity_type, entity_id, exc)
        return None  # read this entity's keys from the start instead
    if incremental.rows_below_checkpoint(replay):
        return None  # the projection is below the checkpoint: needs the older state
    partitions = _partitions(event_store, rows, entity_type)
    start = {tp: header.cut.end.get(tp, 0) for tp in partitions}
    reader = event_store.read_cut(start=start, topics=sorted({tp[0] for tp in partitions}), partitions=partitions)
    for batch in reader:
        if any((message.offset() or 0) < start[(message.topic() or "", message.partition() or 0)]
               for message in batch):
            return None  # the log is shorter than the checkpoint: it was recreated
        replay.feed(batch)
    return ReplayOutcome(replay, reader.cut, accounts, transactions, mode=ReplayMode.INCREMENTAL,
                         mode_reason=f"resumed from checkpoint of run {header.run_id}")


def _partitions(event_store: EventLog, rows: list[EntityRow], entity_type: str) -> set[TopicPartitionKey]:
    """Every partition of the topics holding these entities. The checkpoint knows the partition each
    stream is on, but one of its events placed on another partition since, or sent with no key, is a
    finding only if those tails are read too; other keys are skipped before decoding."""
    own_topic = event_store.topics.accounts if entity_type == "account" else event_store.topics.transactions
    topics = {r.topic for r in rows if r.entity_type in ("account", "transaction") and r.topic} | {own_topic}
    return {(topic, p) for topic in topics for p in event_store.partitions_of(topic)}
