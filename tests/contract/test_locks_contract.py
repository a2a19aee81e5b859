"""The `Locks` port's contract, on PostgreSQL's advisory locks and on the fake.

What the rebuilds, the shadow rebuild and the saga recovery rely on: one operation of a kind at a time for its
whole length, a second refused at once (never queued) with `ConcurrentOperationError`, from this process or
another, and the lock free again once the holder's block ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import pytest
from sqlalchemy.engine import Engine
from support.fakes import InMemoryLocks

from billing_domain.adapters.postgres.locks import AdvisoryLocks
from billing_domain.adapters.postgres.projection_store import make_engine
from billing_domain.core.exceptions import ConcurrentOperationError
from billing_domain.ports import Locks


class LocksHarness(Protocol):
    @property
    def locks(self) -> Locks: ...

    @property
    def elsewhere(self) -> Locks:
        """The same locks as another process sees them (another connection pool, for the real ones)."""
        ...


@dataclass
class Harness:
    locks: Locks
    elsewhere: Locks


class Boom(Exception):
    pass


def granted(lock: AbstractContextManager[None]) -> bool:
    """Whether the lock was granted (and released again at once); False if it was refused."""
    try:
        with lock:
            return True
    except ConcurrentOperationError:
        return False


class LocksContract:
    """Every `Locks` does this; nothing is held at the start."""

    @pytest.fixture
    def harness(self) -> LocksHarness:
        raise NotImplementedError

    def test_a_second_rebuild_of_one_entity_type_is_refused_at_once(self, harness: LocksHarness) -> None:
        with harness.locks.rebuild("account"):
            assert not granted(harness.locks.rebuild("account"))
            assert not granted(harness.elsewhere.rebuild("account"))

    def test_a_refusal_says_which_operation_holds_the_lock(self, harness: LocksHarness) -> None:
        with (harness.locks.rebuild("account"), pytest.raises(ConcurrentOperationError, match="account rebuild"),
              harness.elsewhere.rebuild("account")):
            pass
        with (harness.locks.saga_recovery(), pytest.raises(ConcurrentOperationError, match="saga recovery"),
              harness.elsewhere.saga_recovery()):
            pass

    def test_rebuilds_of_other_entity_types_and_a_saga_recovery_run_alongside(self, harness: LocksHarness) -> None:
        with harness.locks.rebuild("account"):
            assert granted(harness.elsewhere.rebuild("transaction"))
            assert granted(harness.elsewhere.saga_recovery())
        with harness.locks.saga_recovery():
            assert granted(harness.elsewhere.rebuild("account"))

    def test_a_second_saga_recovery_is_refused(self, harness: LocksHarness) -> None:
        with harness.elsewhere.saga_recovery():
            assert not granted(harness.locks.saga_recovery())
            assert not granted(harness.elsewhere.saga_recovery())

    def test_the_lock_is_free_once_its_block_ends_even_by_an_error(self, harness: LocksHarness) -> None:
        assert granted(harness.locks.rebuild("transaction"))
        with pytest.raises(Boom), harness.locks.rebuild("transaction"):
            raise Boom
        assert granted(harness.elsewhere.rebuild("transaction"))
        with pytest.raises(Boom), harness.locks.saga_recovery():
            raise Boom
        assert granted(harness.elsewhere.saga_recovery())

    def test_a_refused_operation_leaves_the_holder_holding(self, harness: LocksHarness) -> None:
        with harness.locks.rebuild("account"):
            assert not granted(harness.elsewhere.rebuild("account"))
            assert not granted(harness.elsewhere.rebuild("account"))  # the refusal released nothing
        assert granted(harness.elsewhere.rebuild("account"))


class TestAdvisoryLocks(LocksContract):
    @pytest.fixture
    def harness(self, contract_engine: Engine) -> Iterator[LocksHarness]:
        other = make_engine(contract_engine.url.render_as_string(hide_password=False))
        locks: Locks = AdvisoryLocks(contract_engine)
        yield Harness(locks, AdvisoryLocks(other))
        other.dispose()


class TestInMemoryLocks(LocksContract):
    @pytest.fixture
    def harness(self) -> LocksHarness:
        locks: Locks = InMemoryLocks()
        return Harness(locks, locks)
