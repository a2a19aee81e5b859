"""The `CheckpointStore` port's contract (and its `CheckpointView`), on PostgreSQL and on the fake.

What the incremental and delta runs rely on: one checkpoint per pair of topics saved all at once, a resumed
run's save kept only while the checkpoint it resumed is still the stored one, a reading view whose header and
rows belong together, and a damaged blob refused rather than trusted.
"""

from __future__ import annotations

import msgspec
import pytest
from sqlalchemy.engine import Engine
from support.fakes import InMemoryCheckpointStore

from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore as PostgresCheckpointStore
from billing_domain.core.checkpoint import EntityRow
from billing_domain.core.cut import Cut
from billing_domain.core.exceptions import CheckpointUnreadableError
from billing_domain.ports import CheckpointStore

TOPICS = "t.account-events,t.transaction-events"
OTHER = "u.account-events,u.transaction-events"
LEDGER = {"credits": {"EUR": {"deposit": "100"}}, "debits": {}, "cut_time": None, "events_read": 4}


def cut(end: int) -> Cut:
    return Cut({("t.account-events", 0): 0, ("t.transaction-events", 1): 2},
               {("t.account-events", 0): end, ("t.transaction-events", 1): end + 2})


def row(entity_type: str, entity_id: str, state: bytes = b"s1", partition: int = 0) -> EntityRow:
    return EntityRow(entity_type, entity_id, f"t.{entity_type}-events", partition, state)


def save(store: CheckpointStore, rows: list[EntityRow], *, run_id: str, replace_all: bool = True,
         resumed_from: str | None = None, delta: bytes | None = None, end: int = 4, topics: str = TOPICS,
         ledger: bytes | None = None) -> int | None:
    return store.save(topics, "format-5/test", cut(end), {"t.account-events:0": 77}, ledger or
                      msgspec.msgpack.encode(LEDGER), rows, run_id=run_id, replace_all=replace_all, delta=delta,
                      resumed_from=resumed_from)


def entities(store: CheckpointStore, topics: str = TOPICS, kinds: list[str] | None = None) -> dict[tuple[str, str],
                                                                                                   EntityRow]:
    with store.reading() as view:
        return {(r.entity_type, r.entity_id): r for r in view.entities(topics, kinds)}


class CheckpointStoreContract:
    """Every `CheckpointStore` does this; `store` holds no checkpoint."""

    @pytest.fixture
    def store(self) -> CheckpointStore:
        raise NotImplementedError

    def test_a_saved_checkpoint_reads_back_header_and_rows(self, store: CheckpointStore) -> None:
        rows = [row("account", "acc-a"), row("transaction", "tx-1", b"\x00\x01", 2), row("money", "tx-1", b"m")]
        assert save(store, rows, run_id="run-1") == 3
        header = store.header(TOPICS)
        assert header is not None
        assert (header.topics, header.code_version, header.run_id, header.has_delta_memo) == (
            TOPICS, "format-5/test", "run-1", False)
        assert (header.cut.start, header.cut.end) == (cut(4).start, cut(4).end)
        assert header.tail_marks == {"t.account-events:0": 77}
        assert header.ledger == LEDGER
        assert entities(store) == {(r.entity_type, r.entity_id): r for r in rows}
        assert store.header(OTHER) is None

    def test_rows_are_read_by_kind_and_by_key(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a"), row("account", "acc-b"), row("transaction", "tx-1"),
                     row("money", "tx-1")], run_id="run-1")
        assert set(entities(store, kinds=["transaction", "money"])) == {("transaction", "tx-1"), ("money", "tx-1")}
        assert entities(store, kinds=[]) == {}
        keys = [("account", "acc-b"), ("money", "tx-1"), ("account", "acc-missing")]
        assert sorted((r.entity_type, r.entity_id) for r in store.entity_rows(TOPICS, keys)) == [
            ("account", "acc-b"), ("money", "tx-1")]
        with store.reading() as view:
            assert [r.entity_id for r in view.entity_rows(TOPICS, [("account", "acc-a")])] == ["acc-a"]
        assert store.entity_rows(OTHER, keys) == []

    def test_each_pair_of_topics_has_its_own_checkpoint(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a")], run_id="run-1")
        save(store, [row("account", "acc-z")], run_id="run-9", topics=OTHER)
        assert set(entities(store)) == {("account", "acc-a")}
        assert set(entities(store, OTHER)) == {("account", "acc-z")}
        assert store.header(TOPICS).run_id == "run-1"  # type: ignore[union-attr]

    def test_a_full_save_replaces_every_row(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a"), row("account", "acc-b")], run_id="run-1")
        assert save(store, [row("account", "acc-c")], run_id="run-2", end=9) == 1
        assert set(entities(store)) == {("account", "acc-c")}
        assert store.header(TOPICS).cut.end == cut(9).end  # type: ignore[union-attr]

    def test_a_resumed_save_writes_only_its_rows_onto_the_checkpoint_it_resumed(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a"), row("account", "acc-b")], run_id="run-1")
        assert save(store, [row("account", "acc-b", b"s2"), row("account", "acc-c")], run_id="run-2",
                    replace_all=False, resumed_from="run-1", end=6) == 2
        assert {k: r.state for k, r in entities(store).items()} == {
            ("account", "acc-a"): b"s1", ("account", "acc-b"): b"s2", ("account", "acc-c"): b"s1"}
        assert store.header(TOPICS).run_id == "run-2"  # type: ignore[union-attr]

    def test_a_resumed_save_after_another_run_saved_writes_nothing(self, store: CheckpointStore) -> None:
        assert save(store, [row("account", "acc-x")], run_id="run-0", replace_all=False, resumed_from=None) is None
        assert store.header(TOPICS) is None  # nothing to resume from: nothing saved
        save(store, [row("account", "acc-a")], run_id="run-1")
        save(store, [row("account", "acc-a", b"s3")], run_id="run-3")  # another run saved meanwhile
        assert save(store, [row("account", "acc-b")], run_id="run-2", replace_all=False, resumed_from="run-1") is None
        assert store.header(TOPICS).run_id == "run-3"  # type: ignore[union-attr]
        assert {k: r.state for k, r in entities(store).items()} == {("account", "acc-a"): b"s3"}

    def test_the_delta_memo_is_kept_apart_from_the_header(self, store: CheckpointStore) -> None:
        save(store, [], run_id="run-1", delta=b"memo-bytes")
        with store.reading() as view:
            header = view.header(TOPICS)
            assert header is not None and header.has_delta_memo
            assert view.delta_memo(TOPICS) == b"memo-bytes"
            assert view.delta_memo(OTHER) is None
        save(store, [], run_id="run-2")
        with store.reading() as view:
            assert view.delta_memo(TOPICS) is None
            assert not view.header(TOPICS).has_delta_memo  # type: ignore[union-attr]

    def test_a_reading_keeps_the_checkpoint_it_began_with(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a")], run_id="run-1", delta=b"memo-1")
        with store.reading() as view:
            header = view.header(TOPICS)  # the view's first read: its picture is fixed from here
            save(store, [row("account", "acc-b")], run_id="run-2", delta=b"memo-2")
            assert header is not None and header.run_id == "run-1"
            assert view.header(TOPICS).run_id == "run-1"  # type: ignore[union-attr]
            assert [r.entity_id for r in view.entities(TOPICS)] == ["acc-a"]
            assert view.delta_memo(TOPICS) == b"memo-1"
        assert store.header(TOPICS).run_id == "run-2"  # type: ignore[union-attr]

    def test_a_dropped_checkpoint_is_gone_with_its_rows(self, store: CheckpointStore) -> None:
        save(store, [row("account", "acc-a")], run_id="run-1")
        save(store, [row("account", "acc-z")], run_id="run-9", topics=OTHER)
        store.drop(TOPICS)
        assert store.header(TOPICS) is None and entities(store) == {}
        assert store.entity_rows(TOPICS, [("account", "acc-a")]) == []
        assert set(entities(store, OTHER)) == {("account", "acc-z")}
        store.drop(TOPICS)  # dropping what is not there is no error

    def test_a_damaged_ledger_is_refused_not_trusted(self, store: CheckpointStore) -> None:
        save(store, [], run_id="run-1", ledger=b"\xc1 not msgpack")
        with pytest.raises(CheckpointUnreadableError):
            store.header(TOPICS)


class TestPostgresCheckpointStore(CheckpointStoreContract):
    @pytest.fixture
    def store(self, contract_engine: Engine) -> CheckpointStore:
        store: CheckpointStore = PostgresCheckpointStore(contract_engine)
        return store


class TestInMemoryCheckpointStore(CheckpointStoreContract):
    @pytest.fixture
    def store(self) -> CheckpointStore:
        store: CheckpointStore = InMemoryCheckpointStore()
        return store
