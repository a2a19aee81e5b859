"""The `ShadowTables` port's contract (the shadow of `ports.ShadowProjections`), on PostgreSQL and on the fake.

What the shadow rebuild relies on: the shadow filled at once, each row classified by what a swap would do with
it (insert, repair, catch up, keep a newer live row, reset a row ahead, orphan, refused, unchanged), the rows
that would change named and sampled, and a swap in which a live row of a higher version always wins, rows ahead
are reset only while still as seen and orphans are deleted only when asked.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from support.fakes import InMemoryProjectionStore

from billing_domain.adapters.postgres.projection_store import ProjectionStore as PostgresProjectionStore
from billing_domain.core.accounts import AccountState
from billing_domain.core.transactions import TransactionState
from billing_domain.ports import ShadowPlan, ShadowProjections

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def account(account_id: str, version: int, balance: int = 0) -> AccountState:
    return AccountState(account_id, "owner", "EUR", balance, 0, 1_000_000, "active", version, f"e-{version}", AT)


def transaction(transaction_id: str, version: int, status: str = "pending") -> TransactionState:
    return TransactionState(transaction_id, "acc-a", "acc-b", 100, "EUR", status, None, version, AT, AT)


# live and shadow rows giving each action once (accounts), and a plan that names the refused, orphan and ahead ids
LIVE = [account("a-catch", 1), account("a-keep", 5), account("a-orphan", 1), account("a-refused", 2),
        account("a-repair", 3, 10), account("a-reset", 9), account("a-same", 2, 50), account("a-newer-only", 4)]
SHADOW = [account("a-catch", 2), account("a-insert", 1), account("a-keep", 4), account("a-repair", 3, 20),
          account("a-reset", 6), account("a-same", 2, 50)]
ACTIONS = {"a-catch": "catch_up", "a-insert": "insert", "a-keep": "keep_live_newer", "a-newer-only": "live_only_newer",
           "a-orphan": "orphan", "a-refused": "refused", "a-repair": "repair", "a-reset": "reset_ahead"}


def plan() -> ShadowPlan:
    return ShadowPlan(refused={"account": {"a-refused": "refused: the event stream is corrupt"}, "transaction": {}},
                      orphans={"account": ["a-orphan"], "transaction": []},
                      ahead={"account": [(account("a-reset", 9), account("a-reset", 6))], "transaction": []},
                      shadow_rows={})


class ShadowTablesContract:
    """Every `ShadowProjections` does this with its `shadow`; `store` has empty live and shadow tables."""

    @pytest.fixture
    def store(self) -> ShadowProjections:
        raise NotImplementedError

    def prepare(self, store: ShadowProjections) -> None:
        store.shadow.ensure()
        store.upsert("account", LIVE)
        assert store.shadow.fill(SHADOW, [transaction("t-1", 2)]) == {"account": len(SHADOW), "transaction": 1}

    def test_a_fill_replaces_what_the_shadow_held(self, store: ShadowProjections) -> None:
        store.shadow.ensure()
        store.shadow.fill([account("a-old", 1)], [transaction("t-old", 1)])
        assert store.shadow.fill([account("a-new", 1)], []) == {"account": 1, "transaction": 0}
        diff = store.shadow.diff(ShadowPlan({"account": {}, "transaction": {}}, {"account": [], "transaction": []},
                                            {"account": [], "transaction": []}), 10)
        assert diff["account"].changed_ids == ["a-new"] and diff["transaction"].changed_ids == []

    def test_each_row_is_classified_by_what_a_swap_would_do(self, store: ShadowProjections) -> None:
        self.prepare(store)
        diff = store.shadow.diff(plan(), 100)
        accounts = diff["account"]
        assert accounts.counts == {action: 1 for action in sorted(ACTIONS.values())} | {"unchanged": 1}
        assert accounts.changed_ids == sorted(ACTIONS)
        assert [(r["id"], r["action"]) for r in accounts.sample] == sorted(ACTIONS.items())
        assert (diff["transaction"].counts, diff["transaction"].changed_ids) == ({"insert": 1}, ["t-1"])

    def test_the_sample_holds_the_first_rows_with_both_sides(self, store: ShadowProjections) -> None:
        self.prepare(store)
        accounts = store.shadow.diff(plan(), 2)["account"]
        assert [r["id"] for r in accounts.sample] == sorted(ACTIONS)[:2]
        assert len(accounts.changed_ids) == len(ACTIONS)  # every id, whatever the sample's size
        repair = next(r for r in store.shadow.diff(plan(), 100)["account"].sample if r["id"] == "a-repair")
        assert (repair["live"]["balance_minor"], repair["shadow"]["balance_minor"]) == (10, 20)
        assert repair["live"]["account_id"] == "a-repair" and repair["shadow"]["version"] == 3
        insert = next(r for r in store.shadow.diff(plan(), 100)["account"].sample if r["id"] == "a-insert")
        assert insert["live"] is None and insert["shadow"]["account_id"] == "a-insert"

    def test_a_swap_writes_what_differs_keeps_newer_live_rows_and_resets_rows_ahead(
            self, store: ShadowProjections) -> None:
        self.prepare(store)
        swapped = store.shadow.swap(plan(), delete_orphans=False)
        # written: the catch up, the insert, the repair and the reset; kept: a-keep
        assert (swapped["account"].written, swapped["account"].kept_newer_live) == (4, 1)
        assert (swapped["transaction"].written, swapped["transaction"].kept_newer_live) == (1, 0)
        live = store.read_accounts()
        assert {i: (r.version, r.balance_minor) for i, r in live.items()} == {
            "a-catch": (2, 0), "a-insert": (1, 0), "a-keep": (5, 0), "a-orphan": (1, 0), "a-refused": (2, 0),
            "a-repair": (3, 20), "a-reset": (6, 0), "a-same": (2, 50), "a-newer-only": (4, 0)}
        assert set(store.read_transactions()) == {"t-1"}

    def test_orphans_are_deleted_only_when_asked(self, store: ShadowProjections) -> None:
        self.prepare(store)
        swapped = store.shadow.swap(plan(), delete_orphans=True)
        assert swapped["account"].written == 5
        assert "a-orphan" not in store.read_accounts()
        assert {"a-refused", "a-newer-only"} <= set(store.read_accounts())  # never a refused or newer live row

    def test_live_writes_after_the_diff_win_over_the_shadow(self, store: ShadowProjections) -> None:
        self.prepare(store)
        store.shadow.diff(plan(), 100)
        store.upsert("account", [account("a-catch", 7, 77), account("a-insert", 3, 33)])  # the live projector
        store.compare_and_set("account", account("a-reset", 9), account("a-reset", 10, 1))  # ahead row moved on
        swapped = store.shadow.swap(plan(), delete_orphans=False)
        live = store.read_accounts()
        assert (live["a-catch"].version, live["a-insert"].balance_minor) == (7, 33)
        assert live["a-reset"] == account("a-reset", 10, 1)  # not as seen any more: not reset
        assert swapped["account"].written == 1  # the repair only
        assert swapped["account"].kept_newer_live == 4  # a-catch, a-insert, a-keep, a-reset


class TestPostgresShadowTables(ShadowTablesContract):
    @pytest.fixture
    def store(self, contract_engine: Engine) -> ShadowProjections:
        store: ShadowProjections = PostgresProjectionStore(contract_engine)
        return store


class TestInMemoryShadowTables(ShadowTablesContract):
    @pytest.fixture
    def store(self) -> ShadowProjections:
        store: ShadowProjections = InMemoryProjectionStore()
        return store
