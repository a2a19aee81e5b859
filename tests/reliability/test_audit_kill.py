"""No committed write without its audit record: `billing-recon` SIGKILLed at every step of a rebuild, a shadow
swap and a saga recovery (a real subprocess, stopped at the step by billing_domain.services.crashpoints).

After each kill, every projection row that changed (or, for a recovery, every event it appended to the log) is
named by a `pending` audit row written before the first write, with the values it now has; the completion row
exists only once the operation got that far.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from paused_process import start_cli
from reliability_helpers import Damaged, create_database, damaged_history, twin_of
from support.builders import EventFactory, project

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.config import Topics
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    Event,
    TransactionCompleted,
    TransactionInitiated,
    decode_event,
)

BATCH = 10
REBUILD_STEPS = ["rebuild.locked", "rebuild.planned", "rebuild.pending_audited", "rebuild.batch_committed",
                 "rebuild.written", "rebuild.verified", "rebuild.audited"]
SHADOW_STEPS = ["shadow.locked", "shadow.diffed", "shadow.pending_audited", "shadow.swapped", "shadow.verified",
                "shadow.audited"]
SAGA_STEPS = ["saga.locked", "saga.pending_audited", "saga.refunds_appended", "saga.sagas_appended",
              "saga.verified", "saga.audited"]


def _env(servers: Any, database_url: str, topics: Topics) -> dict[str, str]:
    return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers, "BILLING_DATABASE_URL": database_url,
            "BILLING_TOPIC_PREFIX": topics.accounts.removesuffix("account-events"), "BILLING_TOPIC_PARTITIONS": "3",
            "REL_BATCH": str(BATCH)}


@pytest.fixture(scope="module")
def damaged(servers: Any) -> Iterator[Damaged]:
    """A history whose account rows were damaged (a third deleted, a third off by one); copied per test."""
    history = damaged_history(servers.bootstrap_servers, create_database(servers.database_url), seed=83, accounts=45)
    yield history
    history.event_store.close()


def _audit(recon: ReconStore, operation: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [r for r in recon.audit_records(1000) if r["operation"] == operation]
    return [r for r in rows if r["outcome"] == "pending"], [r for r in rows if r.get("completes") is not None]


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {i for i in set(before) | set(after) if before.get(i) != after.get(i)}


@pytest.mark.parametrize("step", REBUILD_STEPS)
def test_a_rebuild_killed_at_any_step_left_no_written_row_without_its_audit_record(
        servers: Any, damaged: Damaged, step: str, tmp_path: Path, figures: Any) -> None:
    copy = twin_of(damaged, servers.database_url)
    before = copy.projections.read_accounts()
    to_write = set(copy.deleted) | set(copy.corrupted)
    figures.injected("rebuild process SIGKILLed at a named step")
    running = start_cli(["rebuild", "accounts", "--all", "--reason", f"killed at {step}", "--operator", "rel"],
                        _env(servers, copy.database_url, Topics.with_prefix(_prefix(copy))), tmp_path, "rebuild",
                        pause_at=step)
    running.kill()

    after = copy.projections.read_accounts()
    changed = _changed(before, after)
    pending, completions = _audit(copy.recon, "rebuild_accounts")
    planned = {i: r["after"].get(i) for r in pending for i in r["entity_ids"]}
    assert changed <= set(planned), f"rows written with no audit record: {sorted(changed - set(planned))[:5]}"
    for entity_id in changed:  # each written row is the one its audit record announced
        assert (after[entity_id].balance_minor, after[entity_id].version) == (
            planned[entity_id]["balance_minor"], planned[entity_id]["version"])
    reached = REBUILD_STEPS.index(step)
    assert len(changed) == {3: BATCH}.get(reached, len(to_write) if reached > 3 else 0)
    assert len(pending) == (reached >= REBUILD_STEPS.index("rebuild.pending_audited"))
    assert len(completions) == (step == "rebuild.audited")
    assert [o["outcome"] for o in copy.recon.audit_operations()] == (
        [] if not pending else ["applied"] if completions else ["pending"])
    copy.engine.dispose()
    figures.survived("rebuild process SIGKILLed at a named step")


@pytest.mark.parametrize("step", ["rebuild.batch_committed", "rebuild.written"])
def test_with_billing_recon_in_another_database_the_pending_row_still_comes_first(
        servers: Any, damaged: Damaged, step: str, tmp_path: Path, figures: Any) -> None:
    """BILLING_RECON_DATABASE_URL elsewhere: no transaction spans both databases, the pending row is the guarantee."""
    copy = twin_of(damaged, servers.database_url)
    recon_url = create_database(servers.database_url)
    before = copy.projections.read_accounts()
    figures.injected("rebuild process SIGKILLed at a named step")
    running = start_cli(["rebuild", "accounts", "--all", "--reason", f"killed at {step}", "--operator", "rel"],
                        {**_env(servers, copy.database_url, Topics.with_prefix(_prefix(copy))),
                         "BILLING_RECON_DATABASE_URL": recon_url}, tmp_path, "rebuild", pause_at=step)
    running.kill()

    changed = _changed(before, copy.projections.read_accounts())
    recon = ReconStore(make_engine(recon_url))
    pending, completions = _audit(recon, "rebuild_accounts")
    assert _audit(copy.recon, "rebuild_accounts") == ([], [])  # nothing went to the projections' database
    assert changed and changed <= {i for r in pending for i in r["entity_ids"]}
    assert (len(pending), len(completions)) == (1, 0)
    recon.engine.dispose()
    copy.engine.dispose()
    figures.survived("rebuild process SIGKILLed at a named step")


def _prefix(damaged: Damaged) -> str:
    return damaged.event_store.topics.accounts.removesuffix("account-events")


@pytest.mark.parametrize("step", SHADOW_STEPS)
def test_a_shadow_swap_killed_at_any_step_left_no_swapped_row_without_its_audit_record(
        servers: Any, damaged: Damaged, step: str, tmp_path: Path, figures: Any) -> None:
    copy = twin_of(damaged, servers.database_url)
    before = copy.projections.read_accounts()
    figures.injected("shadow swap SIGKILLed at a named step")
    running = start_cli(["shadow-rebuild", "--approve", "--reason", f"killed at {step}", "--operator", "rel"],
                        _env(servers, copy.database_url, Topics.with_prefix(_prefix(copy))), tmp_path, "shadow",
                        pause_at=step)
    running.kill()

    changed = _changed(before, copy.projections.read_accounts())
    pending, completions = _audit(copy.recon, "shadow_rebuild")
    announced = {i.removeprefix("account:") for r in pending for i in r["entity_ids"] if i.startswith("account:")}
    assert changed <= announced, f"rows swapped with no audit record: {sorted(changed - announced)[:5]}"
    swapped = SHADOW_STEPS.index(step) >= SHADOW_STEPS.index("shadow.swapped")
    assert changed == (set(copy.deleted) | set(copy.corrupted) if swapped else set())  # one transaction: all or none
    assert len(pending) == (SHADOW_STEPS.index(step) >= SHADOW_STEPS.index("shadow.pending_audited"))
    assert len(completions) == (step == "shadow.audited")
    copy.engine.dispose()
    figures.survived("shadow swap SIGKILLed at a named step")


# --- saga recovery: the writes are events in Kafka -------------------------------------------------------
def _stuck_history() -> list[Event]:
    """A transfer that moved no money, one whose source was debited only, one debited and credited: all stuck."""
    event = EventFactory(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
    return [
        event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        event("tx-nomoney", 1, TransactionInitiated("acc-a", "acc-b", 100, "EUR"), 2),
        event("tx-debited", 1, TransactionInitiated("acc-a", "acc-b", 200, "EUR"), 3),
        event("acc-a", 3, AccountDebited(200, "tx-debited", "transfer_out"), 3, "tx-debited"),
        event("tx-both", 1, TransactionInitiated("acc-a", "acc-b", 300, "EUR"), 4),
        event("acc-a", 4, AccountDebited(300, "tx-both", "transfer_out"), 4, "tx-both"),
        event("acc-b", 2, AccountCredited(300, "tx-both", "transfer_in"), 4, "tx-both"),
        event("tx-done", 1, TransactionInitiated("acc-b", "acc-a", 50, "EUR"), 5),
        event("tx-done", 2, TransactionCompleted(), 5),
    ]


def _log_event_ids(store: KafkaEventStore) -> set[str]:
    return {decode_event(m.value(), m.key()).event_id for batch in store.read_cut() for m in batch}


@pytest.mark.parametrize("step", SAGA_STEPS)
def test_a_saga_recovery_killed_at_any_step_appended_no_event_without_its_audit_record(
        servers: Any, step: str, tmp_path: Path, figures: Any) -> None:
    topics = Topics.with_prefix(f"sk{uuid.uuid4().hex[:8]}.")
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=3)
    database_url = create_database(servers.database_url)
    projections = ProjectionStore(make_engine(database_url))
    projections.ensure_schema()
    history = _stuck_history()
    store.ensure_topics()
    store.append(history)
    project(history, projections)
    figures.injected("saga recovery SIGKILLed at a named step")
    running = start_cli(["recover-sagas", "--execute", "--reason", f"killed at {step}", "--operator", "rel"],
                        _env(servers, database_url, topics), tmp_path, "recover", pause_at=step)
    running.kill()

    appended = _log_event_ids(store) - {e.event_id for e in history}
    pending, completions = _audit(ReconStore(projections.engine), "saga_recovery")
    announced = {e["payload"]["event_id"] for r in pending for action in r["after"].values()
                 for e in action["events"]}
    assert appended <= announced, f"events appended with no audit record: {sorted(appended - announced)}"
    reached = SAGA_STEPS.index(step)
    expected = {2: 1, 3: 4}.get(reached, 4 if reached > 3 else 0)  # the refund first, then the 3 saga events
    assert len(appended) == expected
    assert len(pending) == (reached >= SAGA_STEPS.index("saga.pending_audited"))
    assert len(completions) == (step == "saga.audited")
    projections.engine.dispose()
    store.close()
    figures.survived("saga recovery SIGKILLed at a named step")
