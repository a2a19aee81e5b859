"""The retry policy: which errors are transient, and how retries behave (bounded, logged, re-raised)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

from billing_domain.adapters.retry import RetryPolicy, is_transient
from billing_domain.core.exceptions import (
    EventDecodeError,
    EventStoreUnavailableError,
    InvariantViolationError,
    OptimisticLockError,
)

FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01)


def _sqlalchemy_operational(orig: BaseException) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("UPDATE billing.account_projection SET ...", {}, orig)


TRANSIENT: list[tuple[str, BaseException]] = [
    ("psycopg DeadlockDetected", psycopg.errors.DeadlockDetected("deadlock detected")),
    ("psycopg SerializationFailure", psycopg.errors.SerializationFailure("could not serialize access")),
    ("psycopg OperationalError", psycopg.OperationalError("connection refused")),
    ("psycopg LockNotAvailable", psycopg.errors.LockNotAvailable("lock timeout")),
    ("sqlalchemy wrapping DeadlockDetected", _sqlalchemy_operational(psycopg.errors.DeadlockDetected("dl"))),
    ("sqlalchemy wrapping SerializationFailure",
     _sqlalchemy_operational(psycopg.errors.SerializationFailure("serialize"))),
    ("sqlalchemy wrapping OperationalError", _sqlalchemy_operational(psycopg.OperationalError("server closed"))),
    ("sqlalchemy connection invalidated",
     sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)),
    ("ConnectionRefusedError", ConnectionRefusedError(111, "Connection refused")),
    ("ConnectionResetError", ConnectionResetError(104, "Connection reset by peer")),
    ("TimeoutError", TimeoutError("timed out")),
    ("OptimisticLockError", OptimisticLockError("acc-1 changed under us")),
    ("EventStoreUnavailableError", EventStoreUnavailableError("no broker")),
    ("kafka _TRANSPORT", KafkaException(KafkaError(KafkaError._TRANSPORT))),
    ("kafka _ALL_BROKERS_DOWN", KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))),
    ("kafka retriable flag", KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, retriable=True))),
]

NOT_TRANSIENT: list[tuple[str, BaseException]] = [
    ("ValueError", ValueError("bad input")),
    ("KeyError", KeyError("acc-1")),
    ("EventDecodeError", EventDecodeError("bad", position=None, event_id="e-1", field="payload.amount_minor")),
    ("InvariantViolationError", InvariantViolationError("acc-1", "account invariant", "negative", 3)),
    ("psycopg UniqueViolation", psycopg.errors.UniqueViolation("duplicate key")),
    ("sqlalchemy IntegrityError wrapping UniqueViolation",
     sqlalchemy.exc.IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key"))),
    ("sqlalchemy ProgrammingError", sqlalchemy.exc.ProgrammingError("SELEC", {}, psycopg.errors.SyntaxError("x"))),
    ("kafka non-retriable", KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))),
    ("kafka invalid arg", KafkaException(KafkaError(KafkaError._INVALID_ARG))),
    ("kafka without a KafkaError", KafkaException("just a message")),
]


@pytest.mark.parametrize("exc", [e for _, e in TRANSIENT], ids=[n for n, _ in TRANSIENT])
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize("exc", [e for _, e in NOT_TRANSIENT], ids=[n for n, _ in NOT_TRANSIENT])
def test_not_transient(exc: BaseException) -> None:
    assert is_transient(exc) is False


class Flaky:
    """Fails with the given errors in turn, then returns `result`; counts its calls."""

    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def _retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "billing_domain.adapters.retry"]


def test_retries_a_transient_failure_and_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    operation = Flaky([psycopg.errors.DeadlockDetected("deadlock detected"), TimeoutError("slow")],
                      result="rebuilt")
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.retry"):
        assert FAST.run(operation, "rebuild account acc-9") == "rebuilt"
    assert operation.calls == 3
    records = _retry_records(caplog)
    assert len(records) == 2
    first, second = (r.getMessage() for r in records)
    assert "rebuild account acc-9" in first and "rebuild account acc-9" in second
    assert "attempt 1 of 5" in first and "DeadlockDetected" in first
    assert "attempt 2 of 5" in second and "TimeoutError" in second
    assert all(r.levelno == logging.WARNING for r in records)


def test_gives_up_after_max_attempts_and_reraises_the_original(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = [OptimisticLockError(f"lost race {i}") for i in range(10)]
    operation = Flaky(errors)
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.retry"), \
            pytest.raises(OptimisticLockError, match="lost race 2"):
        policy.run(operation, "guarded write")
    assert operation.calls == 3
    messages = [r.getMessage() for r in _retry_records(caplog)]
    assert len(messages) == 2  # no "retrying" line after the last attempt
    assert "attempt 1 of 3" in messages[0]
    assert "attempt 2 of 3" in messages[1]


@pytest.mark.parametrize("make_error", [
    lambda: ValueError("bad input"),
    lambda: EventDecodeError("bad", position=None, event_id=None, field="value"),
    lambda: psycopg.errors.UniqueViolation("duplicate key"),
    lambda: KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)),
], ids=["ValueError", "EventDecodeError", "UniqueViolation", "kafka non-retriable"])
def test_does_not_retry_a_non_transient_error(make_error: Callable[[], BaseException],
                                              caplog: pytest.LogCaptureFixture) -> None:
    error = make_error()
    operation = Flaky([error, error])
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.retry"), pytest.raises(type(error)) as info:
        FAST.run(operation, "read projection")
    assert info.value is error
    assert operation.calls == 1
    assert _retry_records(caplog) == []


def test_no_retry_when_the_first_call_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    operation = Flaky([])
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.retry"):
        assert FAST.run(operation, "noop") == "ok"
    assert operation.calls == 1
    assert _retry_records(caplog) == []


def test_transient_then_non_transient_stops_at_the_non_transient() -> None:
    operation = Flaky([ConnectionRefusedError("refused"), ValueError("bug"), TimeoutError("never reached")])
    with pytest.raises(ValueError, match="bug"):
        FAST.run(operation, "mixed")
    assert operation.calls == 2
