"""Valid amounts whose sums pass 64 bits: a report, its checkpoint and the next run, never a crash (issue 14).

Each amount fits a bigint, as the contract's columns do; three of 2**63 - 1 in one currency add up past
what msgpack's integers and a bigint column hold. The run must store its report and checkpoint, and the
next one resume from it.
"""

from __future__ import annotations

from support.builders import EventFactory, project

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.events import AccountCredited, AccountOpened
from billing_domain.services.reconcile import reconcile_all

BIGGEST = 2**63 - 1


def test_sums_past_64_bits_are_reported_stored_and_resumed(event_store: KafkaEventStore,
                                                           projection_store: ProjectionStore) -> None:
    event = EventFactory()
    events = []
    for n in range(3):
        events += [event(f"acc-{n}", 1, AccountOpened(f"owner-{n}", "EUR", 0, BIGGEST)),
                   event(f"acc-{n}", 2, AccountCredited(BIGGEST, None, "deposit"), 1)]
    event_store.append(events)
    project(events, projection_store)
    recon = ReconStore(projection_store.engine)
    recon.migrate()
    checkpoints = CheckpointStore(recon.engine)

    first = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    recon.save_report(first, source="test")
    assert first.findings == [] and first.stats["checkpoint_saved"] is True
    [identity] = [i for i in first.ledger if i.identity == "balances_match_events"]
    assert identity.left == identity.right == 3 * BIGGEST
    with recon.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT left_minor, right_minor FROM billing_recon.ledger_identity "
                                      "WHERE identity = 'balances_match_events'").one()
    assert (int(stored[0]), int(stored[1])) == (3 * BIGGEST, 3 * BIGGEST)

    again = reconcile_all(event_store, projection_store, checkpoints=checkpoints)
    assert again.stats["replay_mode"] == "incremental" and "no delta memo" in again.stats["replay_mode_reason"]
    assert again.findings == [] and [i.left for i in again.ledger] == [i.left for i in first.ledger]
