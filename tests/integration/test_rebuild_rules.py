"""The rebuild's safety rules against the real broker and PostgreSQL, each shown by the outcome it promises.

One hand-built history: `acc-good` (right events, a corrupted row), `acc-bad` (its events overdraw it: a
rule broken in the log itself), `acc-ahead` (its row claims versions the log does not have) and
`acc-orphan` (a row with no events).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.builders import EventFactory, fold, project
from typer.testing import CliRunner

from billing_cli.app import app
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.accounts import AccountState
from billing_domain.core.cut import Cut
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened, Event
from billing_domain.services.rebuild import RebuildResult, RebuildSelection, rebuild

_event = EventFactory()


def history() -> list[Event]:
    return [
        _event("acc-good", 1, AccountOpened("owner-g", "EUR", 0, 1_000_000)),
        _event("acc-good", 2, AccountCredited(500, None, "deposit"), 1),
        _event("acc-bad", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        _event("acc-bad", 2, AccountCredited(10, None, "deposit"), 2),
        _event("acc-bad", 3, AccountDebited(50, None, "withdrawal"), 3),  # balance -40: below zero
        _event("acc-ahead", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        _event("acc-ahead", 2, AccountCredited(70, None, "deposit"), 4),
    ]


@dataclass
class World:
    store: KafkaEventStore
    projections: ProjectionStore
    recon: ReconStore
    events: list[Event]

    def rows(self) -> dict[str, AccountState]:
        return self.projections.read_accounts()

    def rebuild(self, **options: Any) -> RebuildResult:
        return rebuild(self.store, self.projections, self.recon, entity_type="account",
                       selection=RebuildSelection(all=True), dry_run=False, reason="rebuild rules test",
                       actor="tester", **options)

    def audit(self, audit_id: int | None) -> dict[str, Any]:
        [row] = [r for r in self.recon.audit_records(1_000) if r["audit_id"] == audit_id]
        return row

    def plan_audit(self, result: dict[str, Any]) -> dict[str, Any]:
        """The audit row with the rebuild's plan (ids, before, after, cut)."""
        return self.audit(result["audit_id"])

    def final_audit(self, result: dict[str, Any]) -> dict[str, Any]:
        """The audit row saying what became of the plan: its completion row where the plan has one."""
        completion = result.get("completion_id")
        return self.audit(completion if completion is not None else result["audit_id"])


def _damage(projections: ProjectionStore) -> None:
    """acc-good's balance off by 3, acc-ahead at v5 (the log ends at v2), and an orphan row."""
    with projections.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 3 "
                             "WHERE account_id = 'acc-good'")
        conn.exec_driver_sql("UPDATE billing.account_projection SET version = 5, balance_minor = 999 "
                             "WHERE account_id = 'acc-ahead'")
        conn.exec_driver_sql("INSERT INTO billing.account_projection VALUES ('acc-orphan', 'nobody', 'EUR', 0, 0, "
                             "100, 'active', 1, NULL, now())")


@pytest.fixture
def world(event_store: KafkaEventStore, projection_store: ProjectionStore) -> Iterator[World]:
    events = history()
    event_store.append(events)
    project(events, projection_store)
    _damage(projection_store)
    recon = ReconStore(projection_store.engine)
    recon.migrate()
    yield World(event_store, projection_store, recon, events)


def _expected(world: World, account_id: str) -> AccountState:
    return fold(e for e in world.events if e.aggregate_id == account_id).accounts[account_id].state()


def _same(row: AccountState, expected: AccountState) -> bool:
    fields = ("owner_id", "currency", "balance_minor", "min_balance_minor", "max_balance_minor", "status", "version")
    return all(getattr(row, f) == getattr(expected, f) for f in fields)


# --- a stream that breaks a rule is refused --------------------------------------------------------
def test_an_account_whose_events_break_an_invariant_is_refused_and_its_row_left_as_it_was(world: World) -> None:
    before = world.rows()["acc-bad"]
    result = world.rebuild()
    change = next(c for c in result.changes if c.entity_id == "acc-bad")
    assert change.action == "refused" and "break a rule" in change.reason, change
    assert "acc-bad" in result.refused
    assert world.rows()["acc-bad"] == before  # not rewritten from events that break the rules
    assert _same(world.rows()["acc-good"], _expected(world, "acc-good"))  # the rest is still repaired
    assert "acc-bad" in world.plan_audit(result.to_json())["entity_ids"]
    assert "acc-bad" in world.final_audit(result.to_json())["details"]["refused"]


# --- every refused or kept entity says why, in words, in the CLI's text and in the audit ----------------------
def test_the_cli_text_of_a_dry_run_says_why_each_entity_is_refused_or_kept(world: World) -> None:
    result = CliRunner().invoke(app, ["rebuild", "accounts", "--all", "--dry-run", "--reason", "look first"],
                                env=_cli_env(world))
    assert result.exit_code == 1, result.output  # a refusal (and a kept orphan) is a finding, not an error
    lines = result.stdout.splitlines()
    assert "1 to update, 1 to reset (ahead of the log), 1 refused, 1 kept (orphan)" in lines[0], lines[0]
    assert "nothing written" in lines[0] and "{" not in lines[0]  # words, not a dict's repr
    assert "  acc-bad: would be refused: the events break a rule (" in result.stdout, result.stdout
    assert ("  acc-orphan: would be kept: an orphan row (no events); delete_orphans removes it"
            in lines), result.stdout
    assert "  acc-good: would be updated" in lines
    assert "  acc-ahead: would be reset to the log's version: row claims v5, the log ends at v2" in lines
    assert "would refused" not in result.stdout and "kept_orphan" not in result.stdout

    [audit] = [r for r in world.recon.audit_records(1_000) if r["reason"] == "look first"]
    details = audit["details"]
    assert details["outcome"]["acc-bad"].startswith("would be refused: the events break a rule (")
    assert set(details["refused"]) == {"acc-bad"} and set(details["kept"]) == {"acc-orphan"}
    assert details["summary"] == "1 to update, 1 to reset (ahead of the log), 1 refused, 1 kept (orphan)"
    assert details["actions"] == {"acc-ahead": "reset_ahead", "acc-bad": "refused", "acc-good": "update",
                                  "acc-orphan": "kept_orphan"}


def test_a_rebuild_in_text_says_what_each_entity_was_verified_to_be(world: World) -> None:
    result = CliRunner().invoke(app, ["rebuild", "accounts", "--all", "--reason", "repair"], env=_cli_env(world))
    assert result.exit_code == 1, result.output
    assert "1 updated, 1 reset (ahead of the log), 1 refused, 1 kept (orphan); 2 row(s) written" in result.stdout
    assert "  acc-good: updated -> fixed" in result.stdout.splitlines(), result.stdout
    assert "  acc-bad: refused: the events break a rule (" in result.stdout
    assert "  acc-orphan: kept: an orphan row (no events); delete_orphans removes it" in result.stdout


# --- orphans: kept unless asked, then deleted, audited, the rest kept -------------------------------
def _cli_env(world: World) -> dict[str, str]:
    return {"BILLING_KAFKA_BOOTSTRAP_SERVERS": world.store.bootstrap_servers,
            "BILLING_DATABASE_URL": world.projections.engine.url.render_as_string(hide_password=False),
            "BILLING_TOPIC_PARTITIONS": "3",
            "BILLING_TOPIC_PREFIX": world.store.topics.accounts.removesuffix("account-events")}


def _cli_rebuild(world: World, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["rebuild", "accounts", "--all", "--json", *args], env=_cli_env(world))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    body: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{"):])
    return body


def test_delete_orphans_deletes_only_the_orphan_and_audits_the_row_it_removed(world: World) -> None:
    orphan = world.rows()["acc-orphan"]
    kept = _cli_rebuild(world, "--reason", "first without")
    assert "acc-orphan" in world.rows(), "without --delete-orphans the orphan is kept"
    assert kept["outcome"]["acc-orphan"] == "kept: an orphan row (no events); delete_orphans removes it"
    assert "acc-orphan" in kept["kept"] and "acc-orphan" not in kept["refused"]  # counted apart

    others = {k: v for k, v in world.rows().items() if k != "acc-orphan"}
    deleted = _cli_rebuild(world, "--delete-orphans", "--reason", "drop orphans")
    after = world.rows()
    assert "acc-orphan" not in after
    assert after == others  # every other row kept as it was (already repaired by the first rebuild)
    plan = world.plan_audit(deleted)
    assert (plan["reason"], plan["dry_run"]) == ("drop orphans", False)
    assert plan["before"]["acc-orphan"]["owner_id"] == orphan.owner_id and plan["after"]["acc-orphan"] is None
    final = world.final_audit(deleted)
    assert final["details"]["outcome"]["acc-orphan"] == "fixed" and final["details"]["counts"].get("delete") == 1


# --- a version_ahead reset is a compare-and-set on the row it saw -----------------------------------
def _bump_after_the_read(world: World) -> Any:
    """The rebuild reads the rows before the events; on its first batch of events, another writer changes
    acc-ahead (a live projector or an operator), so the row the reset would overwrite is not the one it saw."""
    state = {"done": False}

    def on_batch(_: int) -> None:
        if not state["done"]:
            state["done"] = True
            with world.projections.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 1234, version = 6 "
                                     "WHERE account_id = 'acc-ahead'")
    return on_batch


def test_a_version_ahead_reset_whose_row_changed_since_it_was_read_is_not_applied_and_says_so(world: World) -> None:
    result = world.rebuild(progress=_bump_after_the_read(world))
    change = next(c for c in result.changes if c.entity_id == "acc-ahead")
    assert change.action == "reset_ahead"
    row = world.rows()["acc-ahead"]
    assert (row.version, row.balance_minor) == (6, 1234), "the other writer's row stands: the reset did not happen"
    assert "changed since it was read" in change.reason
    assert result.outcome["acc-ahead"].startswith("still"), result.outcome["acc-ahead"]
    final = world.final_audit(result.to_json())
    assert final["outcome"] == "partial" and final["details"]["outcome"]["acc-ahead"].startswith("still")


def test_a_version_ahead_reset_on_the_row_it_saw_is_applied(world: World) -> None:
    result = world.rebuild()
    assert result.outcome["acc-ahead"] == "fixed"
    assert _same(world.rows()["acc-ahead"], _expected(world, "acc-ahead"))  # moved down to the log's v2


# --- the audit records the cut it read --------------------------------------------------------------
def _ends(store: KafkaEventStore) -> dict[str, int]:
    """Each partition of both topics -> one past its last offset, from reading every message."""
    ends = {f"{topic}:{p}": 0 for topic in store.topics.all() for p in range(3)}
    for batch in store.read_cut():
        for message in batch:
            name = f"{message.topic()}:{message.partition()}"
            ends[name] = max(ends[name], (message.offset() or 0) + 1)
    return ends


def test_the_audit_records_the_offsets_of_the_cut_the_rebuild_read(world: World) -> None:
    first = world.plan_audit(world.rebuild().to_json())
    cut = Cut.from_json(first["cut"])
    assert {f"{t}:{p}": end for (t, p), end in cut.end.items()} == _ends(world.store)
    assert all(start == 0 for start in cut.start.values())  # a full replay, from the start of every partition
    assert cut.message_count == len(world.events)

    late = _event("acc-good", 3, AccountCredited(1, None, "deposit"), 9)
    world.store.append([late])
    second = Cut.from_json(world.plan_audit(world.rebuild().to_json())["cut"])
    grown = {tp: end - cut.end[tp] for tp, end in second.end.items() if end != cut.end[tp]}
    assert list(grown.values()) == [1] and next(iter(grown))[0] == world.store.topics.accounts
    assert world.audit(first["audit_id"])["cut"] == first["cut"]  # the earlier record is as it was written
