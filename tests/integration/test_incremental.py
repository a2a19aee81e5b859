"""Incremental replay: resuming from a checkpoint gives the same report as a full replay."""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.builders import EventFactory, project
from support.checkpoint_damage import overwrite_checkpointed_states

from billing_domain.adapters.kafka.event_store import KafkaEventStore, RawRecord
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore, CheckpointView
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core import checkpoint
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.events import AccountCredited, AccountDebited, AccountOpened, Event, Payload
from billing_domain.core.findings import ReconciliationReport
from billing_domain.services import incremental
from billing_domain.services.reconcile import reconcile_all
from billing_domain.services.single import reconcile_entity

T0 = datetime(2026, 4, 1, tzinfo=UTC)
_new_event = EventFactory(T0, id_prefix="inc")


def _event(account_id: str, version: int, payload: Payload) -> Event:
    """An account's event at version seconds after T0."""
    return _new_event(account_id, version, payload, at=T0 + timedelta(seconds=version))


def _accounts(n: int, deposits: int) -> dict[str, list[Event]]:
    return {f"acc-{i}": [_event(f"acc-{i}", 1, AccountOpened("o", "EUR", 0, 10**9))]
            + [_event(f"acc-{i}", v, AccountCredited(100, None, "deposit")) for v in range(2, deposits + 2)]
            for i in range(n)}


def _project(projections: ProjectionStore, streams: dict[str, list[Event]]) -> None:
    project([e for stream in streams.values() for e in stream], projections)


def _append_and_project(event_store: KafkaEventStore, projections: ProjectionStore,
                        streams: dict[str, list[Event]]) -> None:
    event_store.append([e for stream in streams.values() for e in stream])
    _project(projections, streams)


@pytest.fixture
def checkpoints(projection_store: ProjectionStore) -> CheckpointStore:
    ReconStore(projection_store.engine).migrate()
    return CheckpointStore(projection_store.engine)


def _keys(report: object) -> set[tuple[str, str, str]]:
    return {f.key for f in report.findings}  # type: ignore[attr-defined]


def test_the_incremental_run_reads_only_the_tail_and_reports_like_a_full_one(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    streams = _accounts(40, 3)
    _append_and_project(event_store, projection_store, streams)
    first = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert first.stats["replay_mode"] == "full" and first.findings == []

    # New events: most projected, one account left behind, one overdrawn, one redelivered old event.
    for account_id in ("acc-1", "acc-2", "acc-3"):
        streams[account_id].append(_event(account_id, 5, AccountCredited(7, None, "deposit")))
    streams["acc-4"].append(_event("acc-4", 5, AccountDebited(10_000, None, "withdrawal")))
    event_store.append([streams[a][-1] for a in ("acc-1", "acc-2", "acc-3", "acc-4")] + [streams["acc-5"][1]])
    _project(projection_store, {a: streams[a] for a in ("acc-1", "acc-2", "acc-4")})
    with projection_store.engine.begin() as conn:  # a row corrupted below the checkpointed version
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 5, version = 2 "
                             "WHERE account_id = 'acc-9'")

    resumed = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    full = reconcile_all(event_store, projection_store)

    assert resumed.stats["replay_mode"] == "incremental"
    assert resumed.stats["events_read"] == 5  # the tail only
    assert _keys(resumed) == _keys(full) == {
        ("account", "acc-3", "lagging"), ("account", "acc-4", "invariant_violation"),
        ("account", "acc-9", "balance_mismatch"), ("ledger", "EUR:balances_match_events", "accounting_equation")}
    assert resumed.ledger == full.ledger


def test_a_recreated_topic_or_another_code_version_means_a_full_replay(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    streams = _accounts(5, 2)
    _append_and_project(event_store, projection_store, streams)
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)

    monkeypatch.setattr(checkpoint, "CHECKPOINT_FORMAT", 999)
    other_code = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert other_code.stats["replay_mode"] == "full"
    assert "checkpoint written by" in other_code.stats["replay_mode_reason"]
    monkeypatch.undo()
    assert reconcile_all(event_store, projection_store, checkpoints=checkpoints).stats["replay_mode"] == "full"

    # Pretend the log was recreated: the message the checkpoint ended on is not the same any more.
    key = checkpoint.topics_key(event_store.topics.all())
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing_recon.checkpoint SET tail_marks = "
                             "(SELECT jsonb_object_agg(k, 0) FROM jsonb_object_keys(tail_marks) k) "
                             "WHERE topics = %(k)s", {"k": key})
    recreated = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert recreated.stats["replay_mode"] == "full"
    assert "recreated or truncated" in recreated.stats["replay_mode_reason"]
    assert recreated.findings == []


def test_a_poison_event_before_the_checkpoint_is_still_reported_after_it(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    streams = _accounts(3, 1)
    _append_and_project(event_store, projection_store, streams)
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-0", b"garbage")])
    first = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    again = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert again.stats["replay_mode"] == "incremental"
    assert _keys(first) == _keys(again) == {("account", "acc-0", "stream_corrupt")}
    assert again.findings[0].offset == first.findings[0].offset


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_single_entity_reconcile(event_store: KafkaEventStore, projection_store: ProjectionStore,
                                 checkpoints: CheckpointStore, with_checkpoint: bool) -> None:
    streams = _accounts(10, 2)
    _append_and_project(event_store, projection_store, streams)
    if with_checkpoint:
        reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    late = _event("acc-3", 4, AccountCredited(5, None, "deposit"))
    event_store.append([late])
    _project(projection_store, {"acc-3": [*streams["acc-3"], late]})
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 1 WHERE account_id = 'acc-3'")
    store = checkpoints if with_checkpoint else None
    one = reconcile_entity(event_store, projection_store, "account", "acc-3", checkpoints=store)
    assert _keys(one) == {("account", "acc-3", "balance_mismatch")}
    assert one.findings[0].expected == {"balance_minor": 205, "version": 4}
    assert one.stats["replay_mode"] == ("incremental" if with_checkpoint else "full")
    assert one.stats["events_read"] == (1 if with_checkpoint else 31)  # the tail of one partition
    assert reconcile_entity(event_store, projection_store, "account", "acc-4", checkpoints=store).findings == []


@pytest.mark.parametrize("selection", ["all", "flagged"])
def test_a_rebuild_from_the_checkpoint_writes_the_same_rows_as_one_from_the_start(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore,
        selection: str) -> None:
    from billing_domain.services.rebuild import RebuildSelection, rebuild

    recon = ReconStore(projection_store.engine)
    streams = _accounts(12, 3)
    _append_and_project(event_store, projection_store, streams)
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    late = _event("acc-2", 5, AccountCredited(9, None, "deposit"))  # after the checkpoint
    event_store.append([late])
    streams["acc-2"].append(late)
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = 0 "
                             "WHERE account_id IN ('acc-1', 'acc-2', 'acc-3')")
    recon.save_report(reconcile_all(event_store, projection_store), source="test")

    chosen = RebuildSelection(all=True) if selection == "all" else RebuildSelection()
    result = rebuild(event_store, projection_store, recon, entity_type="account", selection=chosen,
                     dry_run=False, reason="test", actor="tester", checkpoints=checkpoints)

    assert {k: v for k, v in result.outcome.items() if v != "unchanged"} == {
        "acc-1": "fixed", "acc-2": "fixed", "acc-3": "fixed"}
    expected = {a: AccountAggregate.from_events(e).state() for a, e in streams.items()}
    rows = projection_store.read_accounts()
    assert {a: (r.balance_minor, r.version) for a, r in rows.items()} == {
        a: (s.balance_minor, s.version) for a, s in expected.items()}


def test_a_transaction_rebuild_from_the_checkpoint_repairs_what_a_full_replay_finds(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    from billing_domain.services.rebuild import RebuildSelection, rebuild
    from billing_sandbox.simulate import SimulationConfig, simulate

    simulate(event_store, projection_store, SimulationConfig(seed=2, accounts=30, days=1, faults=False))
    recon = ReconStore(projection_store.engine)
    recon.save_report(reconcile_all(event_store, projection_store, checkpoints=checkpoints), source="test")
    broken = sorted(projection_store.read_transactions())[:5]
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.transaction_projection SET amount_minor = amount_minor + 1 "
                             "WHERE transaction_id = ANY(%(ids)s)", {"ids": broken})

    result = rebuild(event_store, projection_store, recon, entity_type="transaction",
                     selection=RebuildSelection(all=True), dry_run=False, reason="test", actor="tester",
                     checkpoints=checkpoints)

    assert sorted(i for i, outcome in result.outcome.items() if outcome == "fixed") == broken
    assert reconcile_all(event_store, projection_store).findings == []  # a full replay, no checkpoint


def test_a_key_filtered_replay_keeps_keyless_events_of_its_entities(
        event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    from billing_domain.core.events import encode_event
    from billing_domain.services.reconcile import replay_all

    streams = _accounts(3, 0)  # one event each: keyless messages land on any partition, in no order
    keyless = [RawRecord(event_store.topics.accounts, None, encode_event(e)) for s in streams.values() for e in s]
    event_store.append_raw([*keyless, RawRecord(event_store.topics.accounts, None, b"garbage")])

    only = replay_all(event_store, projection_store, only_ids={"acc-1"}).replay
    # Seen (once it was dropped before decoding), and refused: every message is keyed by its aggregate id.
    assert set(only.corrupt) == {("account", "acc-1")} and not only.accounts
    assert only.corrupt[("account", "acc-1")].problems[0]["field"] == "key"  # the poison names no entity asked for
    everything = replay_all(event_store, projection_store).replay
    assert not everything.accounts and len(everything.corrupt) == 4


def test_a_failed_checkpoint_load_closes_its_cursor_before_the_transaction_ends(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The states stream through a server-side cursor. Left suspended (the traceback keeps it alive), it
    would send its CLOSE later on a pooled connection that another caller may be using."""
    streams = _accounts(5, 2)
    _append_and_project(event_store, projection_store, streams)
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    opened: list[Generator[object, None, None]] = []
    entities = CheckpointView.entities

    def spied(self: CheckpointView, topics: str, kinds: object = None) -> Generator[object, None, None]:
        opened.append(entities(self, topics, kinds))  # type: ignore[arg-type]
        return opened[-1]

    def fails_after_one_row(replay: object, rows: Iterator[object]) -> None:
        next(iter(rows))
        raise RuntimeError("a state that does not decode")

    monkeypatch.setattr(CheckpointView, "entities", spied)
    monkeypatch.setattr(incremental, "load_entities", fails_after_one_row)
    with pytest.raises(RuntimeError, match="does not decode"):
        reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert [inspect.getgeneratorstate(g) for g in opened] == [inspect.GEN_CLOSED]


def _resumed_like_full(event_store: KafkaEventStore, projection_store: ProjectionStore,
                       checkpoints: CheckpointStore) -> ReconciliationReport:
    """Reconcile from the checkpoint, then in full; the two must report the same, word for word."""
    resumed = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    full = reconcile_all(event_store, projection_store, checkpoints=checkpoints, full=True)
    assert resumed.stats["replay_mode"] in ("incremental", "delta")
    assert [(f.key, f.detail) for f in resumed.findings] == [(f.key, f.detail) for f in full.findings]
    return full


def test_a_row_at_version_0_of_an_account_the_tail_opens_is_reported_as_a_full_replay_does(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    streams = _accounts(3, 1)
    _append_and_project(event_store, projection_store, streams)
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    event_store.append([_event("acc-new", 1, AccountOpened("o", "EUR", 0, 10**9)),
                        _event("acc-new", 2, AccountCredited(100, None, "deposit"))])
    with projection_store.engine.begin() as conn:  # a hand-made row that claims no event at all
        projection_store.upsert_accounts(conn, [AccountState("acc-new", "o", "EUR", 0, 0, 10**9, "active", 0,
                                                             None, T0)])
    full = _resumed_like_full(event_store, projection_store, checkpoints)
    assert ("account", "acc-new", "field_mismatch") in _keys(full)


def test_a_corrupt_account_moved_on_by_the_tail_is_reported_as_a_full_replay_does(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    streams = _accounts(3, 2)
    _append_and_project(event_store, projection_store, streams)
    event_store.append_raw([RawRecord(event_store.topics.accounts, b"acc-0", b"garbage")])
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    event_store.append([_event("acc-0", 4, AccountCredited(5, None, "deposit"))])  # the row stays at v3
    full = _resumed_like_full(event_store, projection_store, checkpoints)
    assert ("account", "acc-0", "stream_corrupt") in _keys(full)


def _damage_checkpointed_state(projections: ProjectionStore, entity_type: str, entity_id: str) -> None:
    # 0xc1 is never valid MessagePack
    assert overwrite_checkpointed_states(projections.engine, b"\xc1\xff", (entity_type, entity_id)) == 1


def test_a_damaged_checkpoint_state_means_a_full_replay_that_names_the_entity(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore) -> None:
    streams = _accounts(5, 2)
    _append_and_project(event_store, projection_store, streams)
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    _damage_checkpointed_state(projection_store, "account", "acc-3")
    streams["acc-3"].append(_event("acc-3", 4, AccountCredited(5, None, "deposit")))  # the tail touches it
    event_store.append(streams["acc-3"][-1:])
    _project(projection_store, streams)

    report = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert report.stats["replay_mode"] == "full"
    assert "the checkpointed state of account 'acc-3' does not decode" in report.stats["replay_mode_reason"]
    assert report.findings == []
    # That run wrote a whole new checkpoint; damage it again for the single-entity path.
    _damage_checkpointed_state(projection_store, "account", "acc-3")
    single = reconcile_entity(event_store, projection_store, "account", "acc-3", checkpoints=checkpoints)
    assert single.stats["replay_mode"] == "full" and single.findings == []
