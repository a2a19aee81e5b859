"""The retry policy: exponential backoff with jitter, bounded, for transient errors only.

Anything that is not known to be transient surfaces at once: retrying a bug or a bad input only
delays the alert. Each retry is logged with its context and attempt number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import psycopg.errors
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from billing_domain.core.exceptions import EventStoreUnavailableError, OptimisticLockError

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_PG = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,  # statement_timeout
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.OperationalError,  # connection refused or lost
)
_TRANSIENT_OS = (ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later attempt can reasonably expect to succeed past."""
    if isinstance(exc, OptimisticLockError | EventStoreUnavailableError):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and is_transient(exc.orig)
    if isinstance(exc, _TRANSIENT_PG) or isinstance(exc, _TRANSIENT_OS):  # noqa: SIM101
        return True
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return bool(error.retriable()) or error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                                          KafkaError._TIMED_OUT)
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of one retried operation. The defaults suit a database or broker blip."""

    max_attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_total_s: float = 60.0

    def run(self, operation: Callable[[], T], context: str) -> T:
        """Run `operation`, retrying transient errors; `context` names it in the log."""
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_total_s),
            wait=wait_exponential_jitter(multiplier=self.base_delay_s, max=self.max_delay_s, jitter=self.base_delay_s),
            before_sleep=_log_retry(context, self.max_attempts),
            reraise=True,
        )
        return retrying(operation)


def _log_retry(context: str, max_attempts: int) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("retrying %s: attempt %d of %d failed with %s: %s; next try in %.2fs", context,
                    state.attempt_number, max_attempts, type(exc).__name__, exc, wait)
    return before_sleep


DEFAULT_RETRY = RetryPolicy()
