"""The projection store on a real PostgreSQL: schema, guarded upserts, compare-and-set, bulk reads."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from msgspec.structs import replace

from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _account(account_id: str = "acc-1", version: int = 2, balance: int = 1_500) -> AccountState:
    return AccountState(account_id, "owner-1", "EUR", balance, 0, 1_000_000, "active", version, f"ev-{version}", AT)


def _transaction(transaction_id: str = "tx-1", version: int = 1, status: str = "pending") -> TransactionState:
    return TransactionState(transaction_id, "acc-1", "acc-2", 2_500, "EUR", status, None, version, AT, AT)


def test_ensure_schema_is_idempotent_and_keeps_rows(projection_store: ProjectionStore) -> None:
    with projection_store.engine.begin() as conn:
        projection_store.upsert_accounts(conn, [_account()])

    projection_store.ensure_schema()
    projection_store.ensure_schema()

    assert projection_store.read_accounts() == {"acc-1": _account()}
    with projection_store.engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_schema = 'billing' ORDER BY table_name")).scalars().all()
    assert tables == ["account_projection", "transaction_projection"]


def test_account_upserts_never_move_a_row_to_a_lower_version(projection_store: ProjectionStore) -> None:
    with projection_store.engine.begin() as conn:
        projection_store.upsert_accounts(conn, [_account(version=2, balance=1_500)])
    with projection_store.engine.begin() as conn:
        lower = projection_store.upsert_accounts(conn, [_account(version=1, balance=999)])
    assert lower == 0
    assert projection_store.read_accounts()["acc-1"].balance_minor == 1_500

    with projection_store.engine.begin() as conn:
        equal = projection_store.upsert_accounts(conn, [_account(version=2, balance=1_600)])
        higher = projection_store.upsert_accounts(conn, [_account("acc-2", version=1, balance=7)])
    assert (equal, higher) == (1, 1)
    assert projection_store.read_accounts() == {"acc-1": _account(version=2, balance=1_600),
                                                "acc-2": _account("acc-2", version=1, balance=7)}


def test_transaction_upserts_never_move_a_row_to_a_lower_version(projection_store: ProjectionStore) -> None:
    with projection_store.engine.begin() as conn:
        projection_store.upsert_transactions(conn, [_transaction(version=2, status="completed")])
        projection_store.upsert_transactions(conn, [_transaction(version=1, status="pending")])
    assert projection_store.read_transactions()["tx-1"].status == "completed"

    with projection_store.engine.begin() as conn:
        projection_store.upsert_transactions(conn, [replace(_transaction(version=2, status="failed"),
                                                            failure_reason="declined")])
    assert projection_store.read_transactions()["tx-1"].failure_reason == "declined"


def test_compare_and_set_writes_only_over_the_row_it_saw(projection_store: ProjectionStore) -> None:
    seen = _account()
    with projection_store.engine.begin() as conn:
        projection_store.upsert_accounts(conn, [seen])
    with projection_store.engine.begin() as conn:
        stale = projection_store.compare_and_set_account(conn, replace(seen, balance_minor=1), _account(version=9))
        fresh = projection_store.compare_and_set_account(conn, seen, replace(seen, version=3, balance_minor=10))
    assert (stale, fresh) == (False, True)
    assert projection_store.read_accounts()["acc-1"] == replace(seen, version=3, balance_minor=10)

    saga = _transaction()
    with projection_store.engine.begin() as conn:
        projection_store.upsert_transactions(conn, [saga])
        assert not projection_store.compare_and_set_transaction(conn, replace(saga, amount_minor=1), saga)
        assert projection_store.compare_and_set_transaction(conn, saga, replace(saga, version=2, status="completed"))
    assert projection_store.read_transactions()["tx-1"].status == "completed"


def test_bulk_reads_return_what_was_written_with_integer_money(projection_store: ProjectionStore) -> None:
    accounts = [_account(f"acc-{n}", version=n, balance=n * 10_000_000_000) for n in range(1, 301)]
    transactions = [_transaction(f"tx-{n}", version=1) for n in range(1, 101)]
    with projection_store.engine.begin() as conn:
        projection_store.upsert_accounts(conn, accounts)
        projection_store.upsert_transactions(conn, transactions)

    read = projection_store.read_accounts()
    assert read == {a.account_id: a for a in accounts}
    assert all(type(a.balance_minor) is int and type(a.max_balance_minor) is int for a in read.values())
    assert projection_store.read_accounts(["acc-7", "nope"]) == {"acc-7": accounts[6]}
    assert projection_store.read_transactions() == {t.transaction_id: t for t in transactions}
    assert all(type(t.amount_minor) is int for t in projection_store.read_transactions().values())


def test_locked_reads_see_the_rows_inside_the_callers_transaction(projection_store: ProjectionStore) -> None:
    with projection_store.engine.begin() as conn:
        projection_store.upsert_accounts(conn, [_account("acc-1"), _account("acc-2")])
        projection_store.upsert_transactions(conn, [_transaction()])
        assert projection_store.lock_accounts(conn, ["acc-2", "acc-9"]) == {"acc-2": _account("acc-2")}
        assert projection_store.lock_transactions(conn, ["tx-1"]) == {"tx-1": _transaction()}
        assert projection_store.lock_accounts(conn, []) == {}
