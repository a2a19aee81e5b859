"""The admin API tests' history, `support.builders.stuck_transfer_history`, with two known faults.

Three EUR accounts, a deposit, a completed transfer (tx-1) and a transfer pending 26 minutes at the
cut (tx-2: stuck). Faults: acc-a's balance +7 (balance_mismatch), acc-c's row deleted (missing_projection).
"""

from __future__ import annotations

from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.core.events import Event
from support.builders import project


def project_with_faults(events: list[Event], projections: ProjectionStore) -> None:
    """What a live projector would have written, then the two faults."""
    project(events, projections)
    with projections.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             "WHERE account_id = 'acc-a'")
        conn.exec_driver_sql("DELETE FROM billing.account_projection WHERE account_id = 'acc-c'")
