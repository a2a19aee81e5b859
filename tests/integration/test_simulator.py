"""The simulator on the real broker and PostgreSQL: determinism, clean histories, the fault manifest."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.config import Topics
from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.events import AccountCredited, AccountDebited, decode_event
from billing_domain.core.transactions import PENDING, TransactionAggregate
from billing_sandbox.simulate import Manifest, SimulationConfig, simulate

ALL_KINDS = {"missing_projection", "orphan_projection", "balance_mismatch", "field_mismatch", "version_ahead",
             "lagging", "invariant_violation", "stream_corrupt", "stuck", "saga_mismatch", "accounting_equation"}


@pytest.fixture
def other_stack(servers: Any) -> Iterator[tuple[KafkaEventStore, ProjectionStore]]:
    """A second, empty topic set and database on the same servers (to compare two runs)."""
    url = make_url(servers.database_url)
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(url.set(database=name).render_as_string(hide_password=False))
    store = KafkaEventStore(servers.bootstrap_servers, Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}."),
                            partitions=3)
    yield store, ProjectionStore(engine)
    store.close()
    engine.dispose()


def _messages(event_store: KafkaEventStore) -> dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]:
    """Every message as stored, per topic (without its prefix) and partition, in offset order."""
    stored: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    for batch in event_store.read_cut():
        for message in batch:
            topic = (message.topic() or "").rsplit(".", 1)[-1]
            stored[(topic, message.partition() or 0)].append((message.key(), message.value()))
    return dict(stored)


def _fold(event_store: KafkaEventStore) -> tuple[dict[str, AccountAggregate], dict[str, TransactionAggregate]]:
    accounts: dict[str, AccountAggregate] = {}
    transactions: dict[str, TransactionAggregate] = {}
    for batch in event_store.read_cut():
        for message in batch:
            event = decode_event(message.value(), message.key())
            if event.aggregate_type == "account":
                accounts.setdefault(event.aggregate_id, AccountAggregate(event.aggregate_id)).apply(event)
            else:
                transactions.setdefault(event.aggregate_id, TransactionAggregate(event.aggregate_id)).apply(event)
    return accounts, transactions


def test_the_same_seed_gives_identical_events_and_manifest(
        event_store: KafkaEventStore, projection_store: ProjectionStore,
        other_stack: tuple[KafkaEventStore, ProjectionStore]) -> None:
    config = SimulationConfig(seed=11, accounts=80, days=1, bulk_projections=True)

    first = simulate(event_store, projection_store, config)
    second = simulate(*other_stack, config)

    assert first.to_json() == second.to_json()
    assert _messages(event_store) == _messages(other_stack[0])
    assert sum(len(m) for m in _messages(event_store).values()) == first.counts["events"] + first.counts[
        "fault_messages"]


def test_faults_cover_every_finding_kind_and_the_manifest_round_trips(
        event_store: KafkaEventStore, projection_store: ProjectionStore, tmp_path: Path) -> None:
    manifest = simulate(event_store, projection_store, SimulationConfig(seed=5, accounts=150, days=1))

    kinds = {kind for _, _, kind in manifest.expected_findings()}
    assert kinds == ALL_KINDS
    assert manifest.projections_written == "projector"
    faulted = [(f.entity_type, f.entity_id) for f in manifest.faults]
    assert len(faulted) == len(set(faulted)), "each entity carries one fault at most"
    assert {f.fault for f in manifest.faults if not f.expected_findings} == {"duplicates"}
    manifest.write(tmp_path / "manifest.json")
    assert Manifest.read(tmp_path / "manifest.json") == manifest
    assert Manifest.from_json(manifest.to_json()).expected_findings() == manifest.expected_findings()


def test_a_clean_history_keeps_every_invariant_and_projects_to_the_fold(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    manifest = simulate(event_store, projection_store, SimulationConfig(seed=9, accounts=120, days=2, faults=False))

    accounts, transactions = _fold(event_store)
    assert manifest.faults == [] and manifest.expected_findings() == set()
    assert len(accounts) == manifest.counts["accounts"] == 120
    for account in accounts.values():
        account.validate_invariants()
    for saga in transactions.values():
        saga.validate_invariants()
    assert projection_store.read_accounts() == {k: a.state() for k, a in accounts.items()}
    assert projection_store.read_transactions() == {k: t.state() for k, t in transactions.items()}
    cut = max(a.updated_at for a in [*accounts.values(), *transactions.values()] if a.updated_at)
    assert manifest.history_end == cut.isoformat().replace("+00:00", "Z")
    stuck = [t for t in transactions.values() if t.status == PENDING and t.initiated_at
             and cut - t.initiated_at > timedelta(minutes=5)]
    assert stuck == []


def test_a_clean_history_moves_saga_money_by_the_contract(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    simulate(event_store, projection_store, SimulationConfig(seed=13, accounts=100, days=1, faults=False,
                                                             bulk_projections=True))
    moves: dict[str, Counter[str]] = defaultdict(Counter)
    for batch in event_store.read_cut():
        for message in batch:
            payload = decode_event(message.value()).payload
            if isinstance(payload, AccountCredited | AccountDebited) and payload.transaction_id:
                moves[payload.transaction_id][payload.reason] += 1
    _, transactions = _fold(event_store)

    wanted = {"completed": Counter(transfer_out=1, transfer_in=1), "compensated": Counter(transfer_out=1, refund=1),
              "failed": Counter()}
    # The loop below checks something only if there are transfers of every ending to check.
    checked = Counter(saga.status for saga in transactions.values())
    assert all(checked[status] > 0 for status in wanted), checked
    for transaction_id, saga in transactions.items():
        got = moves.get(transaction_id, Counter())
        if saga.status == PENDING:
            assert got in (Counter(), Counter(transfer_out=1))
        else:
            assert got == wanted[saga.status], (transaction_id, saga.status, got)
    # Every money leg belongs to a transfer the saga topic knows: none was left out of the loop's reach.
    assert set(moves) <= set(transactions)
