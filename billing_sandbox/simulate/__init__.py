"""Simulated billing histories for tests, demos and scale runs: `simulate` and its manifest.

`simulate` appends a clean, deterministic history to the event store, fills the projections as
the engine would (its live projector, or for large histories one bulk write of the folded
states, which is what a caught-up projector holds), then optionally injects faults and returns
the manifest naming every fault and the findings the reconciler must report for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Topics
from billing_domain.core.events import Event, encode_event
from billing_sandbox.projector import LiveProjector
from billing_sandbox.simulate.faults import FaultInjector, Project
from billing_sandbox.simulate.history import History, HistoryGenerator, SimulationConfig
from billing_sandbox.simulate.manifest import ExpectedFinding, InjectedFault, Manifest

__all__ = ["ExpectedFinding", "InjectedFault", "Manifest", "SimulationConfig", "projector_group", "simulate"]
log = logging.getLogger(__name__)
BULK_THRESHOLD = 200_000  # events; above it the projector would dominate the run time
PROJECTOR_EVENTS_PER_S = 2_000  # a conservative floor, only to size the catch-up timeout


def projector_group(topics: Topics) -> str:
    """The projector's consumer group for these topics (one group per topic set)."""
    return f"billing-projector.{topics.accounts}"


def simulate(event_store: KafkaEventStore, projections: ProjectionStore,
             config: SimulationConfig | None = None) -> Manifest:
    """Append a simulated history, fill the projections, inject faults if asked; returns the manifest."""
    config = config or SimulationConfig()
    projections.ensure_schema()
    event_store.ensure_topics()
    generator = HistoryGenerator(config)
    appended = event_store.append_raw(_records(event_store, generator.events()))
    history = generator.history
    _check_clean(history)
    bulk = config.bulk_projections if config.bulk_projections is not None else appended > BULK_THRESHOLD
    projector = None if bulk else LiveProjector(event_store, projections.engine, projector_group(event_store.topics))
    try:
        if projector is None:
            _write_states(projections, history, set(history.accounts) | set(history.transactions))
        else:
            projector.run_until_caught_up(max(60.0, appended / PROJECTOR_EVENTS_PER_S))
        clean_transactions = len(history.transactions)
        project = _bulk_writer(projections, history) if projector is None else _projector_run(projector)
        faults, fault_messages = (FaultInjector(history, event_store, projections, project, config.seed).inject()
                                  if config.faults else ([], 0))
    finally:
        if projector is not None:
            projector.close()
    assert history.end is not None
    counts = {"accounts": len(history.openings), "transactions": clean_transactions,
              "events": appended, "fault_messages": fault_messages}
    return Manifest(config.seed, config, counts, "bulk" if bulk else "projector",
                    history.end.isoformat().replace("+00:00", "Z"), faults)


def _records(event_store: KafkaEventStore, events: Iterable[Event]) -> Iterator[RawRecord]:
    topics = {"account": event_store.topics.accounts, "transaction": event_store.topics.transactions}
    for event in events:
        yield RawRecord(topics[event.aggregate_type], event.aggregate_id.encode(), encode_event(event))


def _check_clean(history: History) -> None:
    """The generator's own moves must be legal; a violation here is a bug in the generator."""
    broken = [a.aggregate_id for a in history.accounts.values() if a.violations]
    broken += [t.aggregate_id for t in history.transactions.values() if t.violations]
    if broken:
        raise AssertionError(f"generated history breaks the contract on {len(broken)} aggregates: {broken[:5]}")


def _projector_run(projector: LiveProjector) -> Project:
    def project(events: Sequence[Event]) -> None:
        projector.run_until_caught_up()
    return project


def _bulk_writer(projections: ProjectionStore, history: History) -> Project:
    def project(events: Sequence[Event]) -> None:
        _write_states(projections, history, {e.aggregate_id for e in events})
    return project


def _write_states(projections: ProjectionStore, history: History, ids: set[str]) -> None:
    """Write these aggregates' folded states: the rows a caught-up projector would hold."""
    accounts = [a.state() for i, a in history.accounts.items() if i in ids]
    transactions = [t.state() for i, t in history.transactions.items() if i in ids]
    with projections.engine.begin() as conn:
        projections.upsert_accounts(conn, accounts)
        projections.upsert_transactions(conn, transactions)
    log.info("wrote %d account and %d transaction projections in bulk", len(accounts), len(transactions))
