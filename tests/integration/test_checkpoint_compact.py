"""The compact checkpoint on the real servers: digests in PostgreSQL, the old format refused, a full save atomic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.builders import EventFactory, project
from support.checkpoint_damage import overwrite_checkpointed_states

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core import checkpoint
from billing_domain.core.checkpoint import EntityRow
from billing_domain.core.cut import Cut
from billing_domain.core.events import AccountCredited, AccountOpened, Event, Payload
from billing_domain.core.findings import Kind
from billing_domain.services.reconcile import reconcile_all

T0 = datetime(2026, 5, 1, tzinfo=UTC)
_new_event = EventFactory(T0, id_prefix="cmp")


def _event(account_id: str, version: int, payload: Payload) -> Event:
    return _new_event(account_id, version, payload, at=T0 + timedelta(seconds=version))


def _streams(n: int, deposits: int) -> dict[str, list[Event]]:
    return {f"acc-{i}": [_event(f"acc-{i}", 1, AccountOpened("o", "EUR", 0, 10**9))]
            + [_event(f"acc-{i}", v, AccountCredited(100, None, "deposit")) for v in range(2, deposits + 2)]
            for i in range(n)}


@pytest.fixture
def checkpoints(projection_store: ProjectionStore) -> CheckpointStore:
    ReconStore(projection_store.engine).migrate()
    return CheckpointStore(projection_store.engine)


@pytest.fixture
def history(event_store: KafkaEventStore, projection_store: ProjectionStore) -> dict[str, list[Event]]:
    streams = _streams(6, 3)
    events = [e for stream in streams.values() for e in stream]
    event_store.append(events)
    project(events, projection_store)
    return streams


def _states(checkpoints: CheckpointStore, topics: str) -> dict[tuple[str, str], bytes]:
    with checkpoints.reading() as view:
        return {(r.entity_type, r.entity_id): r.state for r in view.entities(topics)}


def test_a_resumed_run_tells_a_redelivery_from_a_conflicting_event_by_the_checkpointed_digests(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore,
        history: dict[str, list[Event]]) -> None:
    first = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert first.stats["replay_mode"] == "full" and first.findings == []
    topics = checkpoint.topics_key(event_store.topics.all())
    state = _states(checkpoints, topics)[("account", "acc-1")]
    assert all(e.event_id.encode() not in state for e in history["acc-1"][:-1])  # digests, not ids

    conflicting = _event("acc-2", 2, AccountCredited(5, None, "deposit"))  # another event at a used version
    event_store.append([history["acc-1"][1], conflicting])  # and a redelivered old event of acc-1
    resumed = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    full = reconcile_all(event_store, projection_store)

    assert resumed.stats["replay_mode"] == "incremental" and resumed.stats["events_read"] == 2
    assert [f.to_json() for f in resumed.findings] == [f.to_json() for f in full.findings]
    [finding] = resumed.findings
    assert (finding.entity_id, finding.kind, finding.event_id) == ("acc-2", Kind.STREAM_CORRUPT, conflicting.event_id)
    assert "a different event with a used version" in finding.detail


def test_a_checkpoint_of_the_old_format_means_a_full_replay_that_says_why_and_replaces_it(
        event_store: KafkaEventStore, projection_store: ProjectionStore, checkpoints: CheckpointStore,
        history: dict[str, list[Event]]) -> None:
    reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    old_version = "format-5/" + checkpoint.code_version().split("/", 1)[1]  # as format 5 named itself
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing_recon.checkpoint SET code_version = %s", (old_version,))
    assert overwrite_checkpointed_states(projection_store.engine, b"\x81\xa1a\xc0") > 0  # {"a": nil}

    rerun = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert rerun.stats["replay_mode"] == "full"
    assert rerun.stats["replay_mode_reason"].startswith(f"checkpoint written by {old_version}, ")
    topics = checkpoint.topics_key(event_store.topics.all())
    assert set(_states(checkpoints, topics)) == {("account", i) for i in history}
    assert reconcile_all(event_store, projection_store, checkpoints=checkpoints).stats["replay_mode"] == "incremental"


def test_a_full_save_that_fails_midway_leaves_the_checkpoint_it_would_have_replaced(
        checkpoints: CheckpointStore) -> None:
    def rows(n: int, fail_after: int | None = None) -> Iterator[EntityRow]:
        for i in range(n):
            if i == fail_after:
                raise RuntimeError("the replay died while its rows were written")
            yield EntityRow("account", f"acc-{i}", "t.account-events", 0, b"state")

    def save(run_id: str, entity_rows: Iterator[EntityRow]) -> int | None:
        return checkpoints.save("t.a,t.t", checkpoint.code_version(), Cut(), {}, b"\x80", entity_rows,
                                run_id=run_id, replace_all=True)

    assert save("run-1", rows(3)) == 3
    with pytest.raises(RuntimeError, match="died"):
        save("run-2", rows(5, fail_after=4))
    header = checkpoints.header("t.a,t.t")
    assert header is not None and header.run_id == "run-1"
    assert set(_states(checkpoints, "t.a,t.t")) == {("account", f"acc-{i}") for i in range(3)}
