"""Fault 2: PostgreSQL is killed (SIGKILL) in the middle of a rebuild of all accounts.

Every batch is one transaction, so after the restart each batch is either wholly there or wholly
absent; a rerun then converges, byte for byte, to what an undisturbed rebuild writes.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy.exc
from reliability_helpers import (
    Damaged,
    create_database,
    damaged_history,
    dump_projections,
    kill_postgres,
    rebuild_all_accounts,
)

from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.services import rebuild as rebuild_module
from billing_sandbox.stack import EmbeddedStack, StackInfo

SEED = 21
BATCH = 40  # small batches, so a few hundred rows make many transactions
KILL_IN_BATCH = 4


def _undisturbed_twin(damaged: Damaged, server_url: str) -> Damaged:
    damaged.engine.dispose()  # a template database must have no other connection
    url = create_database(server_url, template=damaged.database_url.rsplit("/", 1)[1])
    projections = ProjectionStore(make_engine(url))
    return Damaged(damaged.event_store, url, projections, ReconStore(projections.engine), damaged.deleted,
                   damaged.corrupted)


def test_a_killed_postgres_leaves_whole_batches_and_a_rerun_converges(
        crash_stack: tuple[EmbeddedStack, StackInfo], crash_db: str, monkeypatch: pytest.MonkeyPatch,
        figures: Any) -> None:
    stack, info = crash_stack
    damaged = damaged_history(info.bootstrap_servers, crash_db, seed=SEED, accounts=300)
    twin = _undisturbed_twin(damaged, info.database_url)
    before = damaged.projections.read_accounts()
    assert rebuild_all_accounts(twin).written == len(damaged.deleted) + len(damaged.corrupted)
    expected = twin.projections.read_accounts()
    to_write = sorted(damaged.deleted + damaged.corrupted)
    batches = [to_write[i:i + BATCH] for i in range(0, len(to_write), BATCH)]
    assert len(batches) > KILL_IN_BATCH

    monkeypatch.setattr(rebuild_module, "BATCH_SIZE", BATCH)
    original = ProjectionStore.upsert_accounts
    calls = {"n": 0}

    def upsert_then_kill(self: ProjectionStore, conn: Any, states: Any) -> int:
        written = original(self, conn, states)
        calls["n"] += 1
        if calls["n"] == KILL_IN_BATCH:  # the batch is written but not committed
            kill_postgres(stack)
        return written

    monkeypatch.setattr(ProjectionStore, "upsert_accounts", upsert_then_kill)
    figures.injected("PostgreSQL killed mid-rebuild")
    with pytest.raises(sqlalchemy.exc.DBAPIError):
        rebuild_all_accounts(damaged)
    monkeypatch.undo()
    stack.start_postgres()

    after_crash = damaged.projections.read_accounts()
    for number, batch in enumerate(batches, start=1):
        rebuilt = sum(1 for i in batch if after_crash.get(i) == expected[i])
        untouched = sum(1 for i in batch if after_crash.get(i) == before.get(i))
        assert (rebuilt, untouched) == ((len(batch), 0) if number < KILL_IN_BATCH else (0, len(batch))), \
            f"batch {number} is partly written"
    assert all(after_crash.get(i) == row for i, row in before.items() if i not in to_write)

    result = rebuild_all_accounts(damaged, reason="rerun after the crash")
    assert result.written == sum(len(b) for b in batches[KILL_IN_BATCH - 1:])
    assert dump_projections(damaged.engine) == dump_projections(twin.engine)
    figures.rows_checked_after_races += len(expected)
    figures.survived("PostgreSQL killed mid-rebuild")
