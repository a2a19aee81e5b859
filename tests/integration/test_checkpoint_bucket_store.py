"""The checkpoint's states in buckets on PostgreSQL: a table row per bucket, not per entity; a resumed save
merges into its buckets; a damaged bucket means a full replay that names it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from support.builders import EventFactory, project

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres import checkpoint_buckets
from billing_domain.adapters.postgres.checkpoint_buckets import BUCKETS_PER_KIND, KINDS, bucket_of
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.checkpoint import EntityRow
from billing_domain.core.cut import Cut
from billing_domain.core.events import AccountCredited, AccountOpened
from billing_domain.services.reconcile import reconcile_all

TOPICS = "b.account-events,b.transaction-events"
T0 = datetime(2026, 5, 1, tzinfo=UTC)
_new_event = EventFactory(T0, id_prefix="bkt")


@pytest.fixture
def store(engine: Engine) -> CheckpointStore:
    ReconStore(engine).migrate()
    return CheckpointStore(engine)


def _save(store: CheckpointStore, rows: list[EntityRow], run_id: str, resumed_from: str | None = None) -> int | None:
    return store.save(TOPICS, "test", Cut({}, {}), {}, b"\x80", rows, run_id=run_id,
                      replace_all=resumed_from is None, resumed_from=resumed_from)


def _stored(store: CheckpointStore) -> dict[tuple[str, str], bytes]:
    with store.reading() as view:
        return {(r.entity_type, r.entity_id): r.state for r in view.entities(TOPICS)}


def _table_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM billing_recon.checkpoint_bucket "
                                        "WHERE topics = %s", (TOPICS,)).scalar_one())


def test_a_full_save_stores_a_row_per_bucket_and_reads_back_every_entity(store: CheckpointStore) -> None:
    rows = [EntityRow(kind, f"{kind}-{n}", f"b.{kind}", n % 3, n.to_bytes(4, "big"))
            for kind in KINDS for n in range(4000)]
    assert _save(store, rows, "run-1") == len(rows)
    assert _table_rows(store.engine) <= len(KINDS) * BUCKETS_PER_KIND < len(rows)
    assert _stored(store) == {(r.entity_type, r.entity_id): r.state for r in rows}
    assert [(r.entity_id, r.partition) for r in store.entity_rows(TOPICS, [("money", "money-7")])] == [("money-7", 1)]


def test_a_resumed_save_keeps_the_other_entities_of_the_buckets_it_writes(store: CheckpointStore) -> None:
    ids = [f"acc-{n}" for n in range(5000)]
    same_bucket = [i for i in ids if bucket_of("account", i) == bucket_of("account", ids[0])]
    assert len(same_bucket) >= 2
    _save(store, [EntityRow("account", i, "b.account", 0, b"old") for i in ids], "run-1")
    changed, added = same_bucket[0], "acc-new"
    assert _save(store, [EntityRow("account", changed, "b.account", 0, b"new"),
                         EntityRow("account", added, "b.account", 0, b"new")], "run-2", resumed_from="run-1") == 2
    stored = _stored(store)
    assert stored == {("account", i): b"old" for i in ids} | {("account", changed): b"new", ("account", added): b"new"}


def test_a_save_that_may_hold_little_writes_buckets_in_parts_and_a_resumed_one_merges_them(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_buckets, "PART_BYTES", 20_000)  # about 150 entities held at a time
    ids = [f"acc-{n}" for n in range(6000)]
    _save(store, [EntityRow("account", i, "b.account", 0, b"old" * 30) for i in ids], "run-1")
    parts = _parts_per_bucket(store.engine)
    assert max(parts.values()) > 1
    assert _stored(store) == {("account", i): b"old" * 30 for i in ids}
    bucket = bucket_of("account", ids[0])
    assert _save(store, [EntityRow("account", ids[0], "b.account", 0, b"new")], "run-2", resumed_from="run-1") == 1
    assert _stored(store) == {("account", i): b"old" * 30 for i in ids} | {("account", ids[0]): b"new"}
    assert _parts_per_bucket(store.engine) == parts | {bucket: 1}


def _parts_per_bucket(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT bucket, count(*) FROM billing_recon.checkpoint_bucket "
                                         "WHERE topics = %s GROUP BY bucket", (TOPICS,)).all())


def test_a_damaged_bucket_means_a_full_replay_that_names_it(event_store: KafkaEventStore,
                                                            projection_store: ProjectionStore,
                                                            store: CheckpointStore) -> None:
    events = [_new_event(f"acc-{n}", 1, AccountOpened("o", "EUR", 0, 10**9), at=T0) for n in range(4)]
    events += [_new_event(f"acc-{n}", 2, AccountCredited(5, None, "deposit"), at=T0 + timedelta(seconds=1))
               for n in range(4)]
    event_store.append(events)
    project(events, projection_store)
    reconcile_all(event_store, projection_store, checkpoints=store)
    bucket = bucket_of("account", "acc-2")
    with store.engine.begin() as conn:  # 0xc1 is never valid MessagePack
        conn.exec_driver_sql("UPDATE billing_recon.checkpoint_bucket SET entities = '\\xc1'::bytea WHERE bucket = %s",
                             (bucket,))

    report = reconcile_all(event_store, projection_store, checkpoints=store)
    assert report.stats["replay_mode"] == "full"
    assert f"checkpoint bucket {bucket} of " in report.stats["replay_mode_reason"]
    assert report.findings == []
    again = reconcile_all(event_store, projection_store, checkpoints=store)  # the full replay wrote it anew
    assert again.stats["replay_mode"] == "incremental"
