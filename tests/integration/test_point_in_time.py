"""Point in time against the real broker and PostgreSQL: the stop-cut, balances, findings and the CSV as of a time
equal a fold of exactly the events that occurred by then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import confluent_kafka
import dagster as dg
import pytest
from support.builders import EventFactory, fold, project
from typer.testing import CliRunner

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.config import Topics
from billing_domain.core.cut import TopicPartitionKey
from billing_domain.core.events import (
    AccountCredited,
    AccountDebited,
    AccountOpened,
    AccountSuspended,
    Event,
    TransactionInitiated,
    decode_event,
    encode_event,
)
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.services.point_in_time import (
    balances_as_of,
    cut_at,
    cut_at_offsets,
    month_end,
    plan_rebuild_as_of,
    reconcile_as_of,
)
from billing_pipelines.month_end import month_end_balances
from billing_pipelines.resources import EventStoreResource
from billing_sandbox.simulate.history import HistoryGenerator, SimulationConfig

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
JANUARY_END = month_end("2026-01")
JANUARY_CSV = ("account_id,owner_id,currency,status,version,balance_minor\n"
               "acc-1,owner-1,EUR,active,2,1000\n"
               "acc-2,owner-2,USD,suspended,3,5000\n")


_event = EventFactory(T0)  # every event of this module gives its time: at=...


def small_history() -> list[Event]:
    """Two accounts in January (one EUR, one USD, suspended), and a withdrawal and a third account in February."""
    return [
        _event("acc-1", 1, AccountOpened("owner-1", "EUR", 0, 1_000_000), at=T0),
        _event("acc-1", 2, AccountCredited(1_000, None, "deposit"), at=T0 + timedelta(hours=1)),
        _event("acc-2", 1, AccountOpened("owner-2", "USD", 0, 1_000_000), at=T0 + timedelta(hours=2)),
        _event("acc-2", 2, AccountCredited(5_000, None, "deposit"), at=T0 + timedelta(hours=3)),
        _event("acc-2", 3, AccountSuspended("review"), at=T0 + timedelta(hours=4)),
        _event("acc-1", 3, AccountDebited(300, None, "withdrawal"), at=T0 + timedelta(days=1)),
        _event("acc-3", 1, AccountOpened("owner-3", "EUR", 0, 1_000_000), at=T0 + timedelta(days=1, hours=1)),
    ]


def _all_messages(event_store: KafkaEventStore) -> list[tuple[TopicPartitionKey, int, Event]]:
    return [((m.topic() or "", m.partition() or 0), m.offset() or 0, decode_event(m.value(), m.key()))
            for batch in event_store.read_cut() for m in batch]


def _expected_stop(messages: list[tuple[TopicPartitionKey, int, Event]], at: datetime,
                   partitions: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    stop = {tp: 0 for tp in partitions}
    for tp, offset, event in messages:
        if event.occurred_at <= at:
            stop[tp] = offset + 1
    return stop


def test_balances_as_of_equal_a_fold_of_the_events_that_occurred_by_then(event_store: KafkaEventStore) -> None:
    config = SimulationConfig(seed=5, accounts=25, days=3, faults=False)
    events = list(HistoryGenerator(config).events())
    event_store.append(events)
    messages = _all_messages(event_store)
    partitions = {(t, p) for t in event_store.topics.all() for p in range(3)}

    for at in (config.start + timedelta(days=1, hours=7, minutes=13), config.start + timedelta(days=2),
               config.start - timedelta(days=1), config.start + timedelta(days=30)):
        cut = cut_at(event_store, at)
        assert cut.stop == _expected_stop(messages, at, partitions), at
        assert cut.late_events == {}

        balances = balances_as_of(event_store, at)
        expected = fold(e for e in events if e.occurred_at <= at).accounts
        assert [(a.account_id, a.currency, a.balance_minor, a.version, a.status) for a in balances.accounts] == [
            (k, a.currency, a.balance_minor, a.version, a.status) for k, a in sorted(expected.items())], at
        totals: dict[str, int] = {}
        for account in expected.values():
            totals[account.currency] = totals.get(account.currency, 0) + account.balance_minor
        assert balances.totals() == dict(sorted(totals.items()))
        assert balances.events_read == sum(1 for e in events if e.occurred_at <= at)
        assert balances.corrupt_accounts == []


def test_the_csv_is_exact_and_explicit_offsets_give_the_same_balances(event_store: KafkaEventStore) -> None:
    event_store.append(small_history())

    balances = balances_as_of(event_store, JANUARY_END)
    assert balances.to_csv() == JANUARY_CSV
    assert balances.totals() == {"EUR": 1_000, "USD": 5_000}
    assert balances.as_of == "2026-01-31T23:59:59.999999Z"

    cut = cut_at(event_store, JANUARY_END)
    assert cut_at_offsets(event_store, cut.stop).stop == cut.stop
    assert balances_as_of(event_store, cut.stop).to_csv() == JANUARY_CSV
    with pytest.raises(ConfigurationError, match="every partition"):
        cut_at_offsets(event_store, dict(list(cut.stop.items())[:1]))
    with pytest.raises(ConfigurationError, match="no time zone"):
        balances_as_of(event_store, datetime(2026, 1, 31))


def _append_stamped(event_store: KafkaEventStore, events: list[Event]) -> None:
    """Append with each message's broker timestamp (CreateTime) set to its event's `occurred_at`, as the engine's
    producer stamps its commit: the messages' times are the events' own, not when the test happened to run."""
    producer = confluent_kafka.Producer({"bootstrap.servers": event_store.bootstrap_servers})
    for event in events:
        producer.produce(event_store.topics.accounts, key=event.aggregate_id.encode(), value=encode_event(event),
                         timestamp=int(event.occurred_at.timestamp() * 1000))
    assert producer.flush(30) == 0, "every message delivered"


def test_the_stop_is_found_by_the_events_own_times_whatever_the_brokers_time_index_answers(
        event_store: KafkaEventStore) -> None:
    # Explicit times a second either side of `at` (no sleeping to make the broker's clock move). The broker's time
    # index only says where to start reading: the embedded broker indexes by append time, so it answers the start
    # of each partition here, and the stop must still be exactly the first event that occurred after `at`.
    at = T0 + timedelta(days=1)
    before = [_event(f"acc-{i}", 1, AccountOpened("o", "EUR", 0, 100), at=at - timedelta(seconds=1, milliseconds=i))
              for i in range(12)]
    after = [_event(f"acc-{i}", 2, AccountCredited(5, None, "deposit"), at=at + timedelta(seconds=1, milliseconds=i))
             for i in range(12)]
    _append_stamped(event_store, before)
    _append_stamped(event_store, after)
    messages = _all_messages(event_store)
    partitions = {(t, p) for t in event_store.topics.all() for p in range(3)}

    cut = cut_at(event_store, at, clock_skew=timedelta(milliseconds=100))

    assert cut.stop == _expected_stop(messages, at, partitions)
    assert sum(cut.stop.values()) == len(before) and cut.late_events == {}
    # Each partition is read up to its first event beyond the horizon, never to its end.
    assert cut.scanned <= len(before) + len(partitions), cut.scanned


def stuck_and_broken_history() -> list[Event]:
    """A transfer whose source is debited on day 2 and never completes; an overdraft on day 3."""
    day = timedelta(days=1)
    return [
        _event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000), at=T0),
        _event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000), at=T0),
        _event("acc-a", 2, AccountCredited(10_000, None, "deposit"), at=T0 + timedelta(hours=1)),
        _event("tx-1", 1, TransactionInitiated("acc-a", "acc-b", 2_500, "EUR"), correlation="tx-1", at=T0 + day),
        _event("acc-a", 3, AccountDebited(2_500, "tx-1", "transfer_out"), correlation="tx-1",
               at=T0 + day + timedelta(seconds=1)),
        _event("acc-b", 2, AccountDebited(5_000, None, "withdrawal"), at=T0 + 2 * day),
    ]


def test_the_as_of_report_has_the_events_own_findings_at_that_time(event_store: KafkaEventStore) -> None:
    events = stuck_and_broken_history()
    event_store.append(events)
    day = timedelta(days=1)

    def found(at: datetime) -> set[tuple[str, str, str]]:
        report = reconcile_as_of(event_store, at)
        assert report.scope == f"as-of {at.isoformat().replace('+00:00', 'Z')}"
        conserve = next(i for i in report.ledger if i.identity == "transfers_conserve_money")
        assert conserve.holds
        assert {i.identity for i in report.ledger} == {"transfers_conserve_money", "ledger_balances"}
        return {f.key for f in report.findings}

    assert found(T0 + timedelta(hours=2)) == set()
    assert found(T0 + day + timedelta(minutes=3)) == set()  # pending 3 minutes: in flight, not stuck
    assert found(T0 + day + timedelta(hours=1)) == {("transaction", "tx-1", "stuck")}
    assert found(T0 + 2 * day + timedelta(hours=1)) == {("transaction", "tx-1", "stuck"),
                                                          ("account", "acc-b", "invariant_violation")}
    in_flight = reconcile_as_of(event_store, T0 + day + timedelta(minutes=3))
    assert next(i for i in in_flight.ledger if i.identity == "transfers_conserve_money").left == 2_500


def test_a_rebuild_up_to_a_point_is_only_ever_planned(event_store: KafkaEventStore,
                                                       projection_store: ProjectionStore) -> None:
    events = small_history()
    event_store.append(events)
    project(events, projection_store)
    rows_before = projection_store.read_accounts()

    with pytest.raises(ConfigurationError, match="dry_run: a projection is never rebuilt to an older state"):
        plan_rebuild_as_of(event_store, projection_store, JANUARY_END, entity_type="account", dry_run=False)
    plan = plan_rebuild_as_of(event_store, projection_store, JANUARY_END, entity_type="account")

    assert plan.dry_run
    assert {c.entity_id: c.action for c in plan.changes} == {"acc-1": "reset_ahead", "acc-2": "unchanged",
                                                             "acc-3": "kept_orphan"}
    acc_1 = next(c for c in plan.changes if c.entity_id == "acc-1")
    assert acc_1.after is not None and (acc_1.after["version"], acc_1.after["balance_minor"]) == (2, 1_000)
    assert projection_store.read_accounts() == rows_before


def test_month_end_balances_asset_writes_the_csv_and_totals(event_store: KafkaEventStore, servers: Any,
                                                           topics: Topics, tmp_path: Path) -> None:
    event_store.append(small_history())
    resource = EventStoreResource(bootstrap_servers=servers.bootstrap_servers, partitions=3,
                                  topic_prefix=topics.accounts.removesuffix("account-events"))

    result = dg.materialize([month_end_balances], partition_key="2026-01-01", resources={"event_store": resource},
                            run_config={"ops": {"month_end_balances": {"config": {"export_dir": str(tmp_path)}}}})

    metadata = result.asset_materializations_for_node("month_end_balances")[0].metadata
    assert metadata["total_minor/EUR"] == dg.MetadataValue.int(1_000)
    assert metadata["total_minor/USD"] == dg.MetadataValue.int(5_000)
    assert metadata["accounts"].value == 2 and metadata["accounts/EUR"].value == 1
    assert metadata["as_of"].value == "2026-01-31T23:59:59.999999Z"
    path = tmp_path / "month_end_balances_2026-01.csv"
    assert metadata["csv"] == dg.MetadataValue.path(str(path))
    assert path.read_text() == JANUARY_CSV


def test_the_commands(event_store: KafkaEventStore, servers: Any, topics: Topics, database_url: str,
                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from billing_cli.app import app

    event_store.append(stuck_and_broken_history())
    monkeypatch.setenv("BILLING_KAFKA_BOOTSTRAP_SERVERS", servers.bootstrap_servers)
    monkeypatch.setenv("BILLING_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_TOPIC_PREFIX", topics.accounts.removesuffix("account-events"))
    runner = CliRunner()

    clean = runner.invoke(app, ["as-of", "--at", "2026-01-31T12:00:00Z", "--json"])
    assert clean.exit_code == 0, clean.output
    assert '"EUR": 10000' in clean.output
    later = runner.invoke(app, ["as-of", "--at", "2026-02-02T12:00:00Z", "--csv", str(tmp_path / "b.csv")])
    assert later.exit_code == 1  # stuck and invariant_violation
    assert (tmp_path / "b.csv").read_text().splitlines()[1:] == ["acc-a,owner-a,EUR,active,3,7500",
                                                                  "acc-b,owner-b,EUR,active,2,-5000"]
    assert runner.invoke(app, ["month-end", "2026-01", "--csv", str(tmp_path / "m.csv")]).exit_code == 0
    assert (tmp_path / "m.csv").read_text().splitlines()[1:] == ["acc-a,owner-a,EUR,active,2,10000",
                                                                  "acc-b,owner-b,EUR,active,1,0"]
    assert runner.invoke(app, ["as-of", "--at", "2026-01-31"]).exit_code == 2  # no time zone
