"""The `ProjectionStore` port's contract (and its `ProjectionSnapshot`), on PostgreSQL and on the fake.

What the diff, the delta run and the rebuilds rely on: rows read back as written (with the contract's column
rules), writes that never lower a version, a compare-and-set for rows ahead of their events, read marks that
find every row written since, and snapshots that keep one picture of both tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from support.fakes import EPOCH, InMemoryProjectionStore

from billing_domain.adapters.postgres.projection_store import ProjectionStore as PostgresProjectionStore
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import ProjectionStore, ReadMark

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def account(account_id: str, version: int = 1, balance: int = 0, currency: str = "EUR",
            updated_at: datetime | None = AT) -> AccountState:
    return AccountState(account_id, f"owner-{account_id}", currency, balance, 0, 1_000_000, "active", version,
                        f"evt-{account_id}-{version}", updated_at)


def transaction(transaction_id: str, version: int = 1, status: str = "pending",
                initiated_at: datetime | None = AT) -> TransactionState:
    return TransactionState(transaction_id, "acc-a", "acc-b", 2_500, "EUR", status, None, version, initiated_at,
                            AT + timedelta(minutes=version))


class ProjectionStoreContract:
    """Every `ProjectionStore` does this; `store` is an empty one."""

    @pytest.fixture
    def store(self) -> ProjectionStore:
        raise NotImplementedError

    # --- reads and writes ---------------------------------------------------------------------------------
    def test_rows_read_back_as_written(self, store: ProjectionStore) -> None:
        accounts = [account("acc-a", 2, 700), account("acc-b", 1, 0)]
        transactions = [transaction("tx-1", 3, "completed")]
        assert store.upsert("account", accounts) == 2
        assert store.upsert("transaction", transactions) == 1
        assert store.read_accounts() == {a.account_id: a for a in accounts}
        assert store.read_transactions() == {t.transaction_id: t for t in transactions}

    def test_reads_by_id_return_the_rows_found(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a"), account("acc-b"), account("acc-c")])
        store.upsert("transaction", [transaction("tx-1")])
        assert set(store.read_accounts(["acc-a", "acc-c", "acc-missing"])) == {"acc-a", "acc-c"}
        assert store.read_accounts([]) == {}
        assert set(store.read_transactions(["tx-1", "tx-2"])) == {"tx-1"}

    def test_the_tables_column_rules_apply_to_what_is_read_back(self, store: ProjectionStore) -> None:
        # currency is char(3): blank-padded; a missing timestamp is stored as the epoch (the columns are NOT NULL)
        store.upsert("account", [account("acc-a", currency="XY", updated_at=None)])
        store.upsert("transaction", [transaction("tx-1", initiated_at=None)])
        row = store.read_accounts(["acc-a"])["acc-a"]
        assert (row.currency, row.updated_at) == ("XY ", EPOCH)
        assert store.read_transactions(["tx-1"])["tx-1"].initiated_at == EPOCH

    def test_a_write_never_lowers_a_rows_version(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a", 3, 300)])
        assert store.upsert("account", [account("acc-a", 2, 200), account("acc-b", 1, 5)]) == 1
        assert store.read_accounts()["acc-a"] == account("acc-a", 3, 300)
        assert store.read_accounts()["acc-b"] == account("acc-b", 1, 5)

    def test_a_write_at_the_same_version_repairs_the_row(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a", 3, 300)])
        assert store.upsert("account", [account("acc-a", 3, 999)]) == 1
        assert store.read_accounts()["acc-a"].balance_minor == 999

    def test_states_of_the_wrong_type_are_refused_and_nothing_is_written(self, store: ProjectionStore) -> None:
        with pytest.raises(TypeError):
            store.upsert("account", [account("acc-a"), transaction("tx-1")])
        assert store.read_accounts() == {} and store.read_transactions() == {}

    def test_compare_and_set_overwrites_only_the_row_as_seen(self, store: ProjectionStore) -> None:
        seen = account("acc-a", 5, 500)
        store.upsert("account", [seen])
        assert store.compare_and_set("account", seen, account("acc-a", 3, 300))  # may lower: a row ahead
        assert store.read_accounts()["acc-a"] == account("acc-a", 3, 300)
        assert not store.compare_and_set("account", seen, account("acc-a", 4, 400))  # no longer as seen
        assert store.read_accounts()["acc-a"] == account("acc-a", 3, 300)
        assert not store.compare_and_set("account", account("acc-z"), account("acc-z", 2))  # no such row
        assert "acc-z" not in store.read_accounts()
        t = transaction("tx-1", 2)
        store.upsert("transaction", [t])
        assert store.compare_and_set("transaction", t, transaction("tx-1", 1))
        assert store.read_transactions()["tx-1"] == transaction("tx-1", 1)

    def test_compare_and_set_refuses_states_of_another_type(self, store: ProjectionStore) -> None:
        with pytest.raises(TypeError):
            store.compare_and_set("account", account("acc-a"), transaction("tx-1"))

    def test_delete_removes_the_rows_named_and_counts_them(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a"), account("acc-b")])
        assert store.delete("account", ["acc-a", "acc-missing"]) == 1
        assert set(store.read_accounts()) == {"acc-b"}
        assert store.delete("transaction", ["tx-none"]) == 0

    # --- marks and snapshots ------------------------------------------------------------------------------
    def test_rows_written_after_a_mark_are_found_changed_and_rows_before_are_not(
            self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-old"), account("acc-kept")])
        store.upsert("transaction", [transaction("tx-old")])
        mark = store.read_mark()
        store.upsert("account", [account("acc-new"), account("acc-old", 2)])
        store.upsert("transaction", [transaction("tx-new")])
        with store.snapshot() as snap:
            # never fewer; on a quiet database (no other transaction open), no more either
            assert snap.changed_ids("account", mark.xmin) == {"acc-new", "acc-old"}
            assert snap.changed_ids("transaction", mark.xmin) == {"tx-new"}
            assert snap.ids("account") == {"acc-old", "acc-kept", "acc-new"}

    def test_a_row_repaired_by_compare_and_set_is_found_changed(self, store: ProjectionStore) -> None:
        seen = account("acc-a", 4)
        store.upsert("account", [seen])
        mark = store.read_mark()
        assert store.compare_and_set("account", seen, account("acc-a", 2))
        with store.snapshot() as snap:
            assert snap.changed_ids("account", mark.xmin) == {"acc-a"}

    def test_a_snapshot_keeps_its_picture_while_others_write(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a", 1, 100)])
        with store.snapshot() as snap:
            store.upsert("account", [account("acc-a", 2, 200), account("acc-b")])
            assert snap.ids("account") == {"acc-a"}
            assert snap.read_accounts(["acc-a", "acc-b"]) == {"acc-a": account("acc-a", 1, 100)}
            assert snap.balance_sums() == {"EUR": (100, 1)}
        assert set(store.read_accounts()) == {"acc-a", "acc-b"}

    def test_a_snapshot_reads_rows_by_id_and_sums_balances_per_currency(self, store: ProjectionStore) -> None:
        store.upsert("account", [account("acc-a", balance=100), account("acc-b", balance=-30),
                                 account("acc-c", balance=7, currency="USD")])
        store.upsert("transaction", [transaction("tx-1"), transaction("tx-2")])
        with store.snapshot() as snap:
            assert snap.balance_sums() == {"EUR": (70, 2), "USD": (7, 1)}
            assert set(snap.read_accounts(["acc-a", "acc-x"])) == {"acc-a"}
            assert snap.read_accounts([]) == {}
            assert snap.read_transactions(["tx-2"]) == {"tx-2": transaction("tx-2")}
            assert snap.ids("transaction") == {"tx-1", "tx-2"}

    def test_a_snapshot_compares_with_an_earlier_mark_of_the_same_database_only(
            self, store: ProjectionStore) -> None:
        earlier = store.read_mark()
        store.upsert("account", [account("acc-a")])
        with store.snapshot() as snap:
            assert snap.mark.database == earlier.database
            assert snap.mark.xmin >= earlier.xmin
            assert snap.why_not_comparable(earlier) is None
            assert snap.why_not_comparable(ReadMark(earlier.xmin, earlier.database + "-elsewhere"))
            assert snap.why_not_comparable(ReadMark(earlier.xmin + (1 << 31), earlier.database))  # from the future


class TestPostgresProjectionStore(ProjectionStoreContract):
    @pytest.fixture
    def store(self, contract_engine: Engine) -> Iterator[ProjectionStore]:
        store: ProjectionStore = PostgresProjectionStore(contract_engine)
        yield store


class TestInMemoryProjectionStore(ProjectionStoreContract):
    @pytest.fixture
    def store(self) -> ProjectionStore:
        store: ProjectionStore = InMemoryProjectionStore()
        return store

    def test_a_restarted_database_is_not_comparable(self) -> None:
        fake = InMemoryProjectionStore()
        earlier = fake.read_mark()
        fake.restart()
        with fake.snapshot() as snap:
            assert snap.why_not_comparable(earlier)
