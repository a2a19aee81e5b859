"""A client nobody here wrote: the billing engine's own Kafka client, kafkajs, appends the history.

The engine is a NestJS service; its usual client is kafkajs (npm), whose default partitioner is murmur2
(Java's), where librdkafka's (ours, through confluent-kafka) is `consistent_random` (CRC32). The same key
then lands on another partition. These tests have kafkajs append a contract history (tests/interop/kafkajs/,
pinned in its package-lock.json, installed with `npm ci` once per session) to fresh topics on the session's
broker, and check that:

- the history reconciles exactly (clean; then one projection fault and exactly that finding), where the test
  also shows kafkajs put keys on other partitions than librdkafka would (so it covers the difference);
- one-entity commands (reconcile one account, from the start and from a checkpoint, rebuild one account,
  balances as of a time) find the entity's events wherever kafkajs placed them;
- the saga recovery, which appends to the engine's streams, puts each event on its stream's partition (as
  read from the log), not where our producer's partitioner would hash the key.

kafkajs's producer is idempotent (acks all) on Apache Kafka. Tansu 0.6 refuses its InitProducerId (kafkajs
speaks v0-v1, which carry no producer id and epoch; Tansu answers UNKNOWN_SERVER_ERROR), so there append.js
falls back to a producer that is not idempotent, still acks all, and says so; anywhere but on Tansu that fallback
fails the test. Without Node.js and npm the tests skip with a reason; on CI (CI set) they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.builders import EventFactory, envelope_dict, project
from typer.testing import CliRunner

from billing_cli.app import EXIT_CLEAN, EXIT_FINDINGS, app
from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.checkpoint_store import CheckpointStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.events import (
    AccountClosed,
    AccountCredited,
    AccountDebited,
    AccountLimitsChanged,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    Event,
    TransactionCompensated,
    TransactionCompleted,
    TransactionFailed,
    TransactionInitiated,
    decode_event,
)
from billing_domain.core.records import Topics
from billing_domain.services.reconcile import ReconcileOptions, new_run_id, reconcile_all
from billing_domain.services.run_reconciliation import ReconciliationRequest, RunStores, run_reconciliation
from billing_domain.services.saga_recovery import execute_plan, plan_recovery

KAFKAJS_DIR = Path(__file__).resolve().parents[1] / "interop" / "kafkajs"
NPM_CI_TIMEOUT_S = 300
APPEND_TIMEOUT_S = 120


# --- the partitioners ------------------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java's `Utils.murmur2`, kafkajs's `DefaultPartitioner`), as an unsigned 32-bit value."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & _M32
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    tail, rest = length & ~3, length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h = ((h ^ data[tail]) * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    return h ^ (h >> 15)


def kafkajs_partition(key: str, partitions: int) -> int:
    """kafkajs 2.x's default: `toPositive(murmur2(key)) % partitions` (Java's DefaultPartitioner)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def librdkafka_partition(key: str, partitions: int) -> int:
    """librdkafka's default (`consistent_random`): CRC32 of the key."""
    return zlib.crc32(key.encode()) % partitions


def test_murmur2_matches_the_published_values() -> None:
    # Kafka's own test vectors (and kafkajs's), as signed 32-bit integers.
    for text, signed in (("21", -973932308), ("0", 971027396), ("1", -1993445489), ("128", -326012175),
                         ("2187", -1508407203), ("279936", 1462227128), ("10000000", -1830336757), ("", 275646681)):
        assert murmur2(text.encode()) == signed & _M32, text


# --- kafkajs ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placed:
    """Where kafkajs says one record went."""

    topic: str
    key: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Kafkajs:
    node: str
    workdir: Path  # a copy of tests/interop/kafkajs with its node_modules installed by `npm ci`
    version: str

    def append(self, event_store: KafkaEventStore, events: Sequence[Event]) -> list[Placed]:
        """Append `events` to `event_store`'s broker and topics with kafkajs, in order; where each went."""
        history = self.workdir / f"history-{uuid.uuid4().hex[:8]}.jsonl"
        history.write_text("".join(json.dumps({"topic": event_store.topic_for(e.aggregate_type),
                                               "key": e.aggregate_id, "value": envelope_dict(e)}) + "\n"
                                   for e in events))
        env = {**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"}
        done = subprocess.run([self.node, str(self.workdir / "append.js"), event_store.bootstrap_servers,
                               str(history)], cwd=self.workdir, env=env, capture_output=True, text=True,
                              timeout=APPEND_TIMEOUT_S, check=False)
        assert done.returncode == 0, f"kafkajs append failed ({done.returncode}):\n{done.stderr[-3000:]}"
        sent = json.loads(done.stdout)
        assert sent["client"] == "kafkajs" and sent["version"] == self.version
        # Idempotent wherever the broker lets kafkajs be: only Tansu refuses its InitProducerId (v1).
        assert sent["idempotent"] or broker_is_tansu(event_store.bootstrap_servers), sent["refused"]
        placed = [Placed(r["topic"], r["key"], r["partition"], r["offset"]) for r in sent["records"]]
        assert [(p.topic, p.key) for p in placed] == [(event_store.topic_for(e.aggregate_type), e.aggregate_id)
                                                      for e in events]
        return placed


def broker_is_tansu(bootstrap_servers: str) -> bool:
    """Is the broker at these (loopback) servers a Tansu process on this machine?"""
    ports = {int(server.rsplit(":", 1)[1]) for server in bootstrap_servers.split(",")
             if server.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")}
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port in ports \
                and connection.pid is not None:
            with contextlib.suppress(psutil.Error):
                return "tansu" in Path(psutil.Process(connection.pid).exe()).name
    return False


@pytest.fixture
def event_store(broker_event_store: KafkaEventStore) -> KafkaEventStore:
    """Every test here runs on both brokers: the engine's own client against the production broker as well."""
    return broker_event_store


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(why: str) -> None:
    if _on_ci():
        pytest.fail(f"the kafkajs interoperability test cannot run on CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def kafkajs(tmp_path_factory: pytest.TempPathFactory) -> Kafkajs:
    """kafkajs, installed once per session with `npm ci` from the committed lock file.

    Into a copy of tests/interop/kafkajs under the session's temporary folder: sessions sharing a work tree
    never delete each other's node_modules (npm ci removes it first), and the work tree stays clean."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("no Node.js/npm on this machine: install Node.js 18+ with npm to run the kafkajs "
                     "interoperability test")
    assert node is not None and npm is not None
    workdir = tmp_path_factory.mktemp("kafkajs")
    for name in ("package.json", "package-lock.json", "append.js"):
        shutil.copy2(KAFKAJS_DIR / name, workdir / name)
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                              cwd=workdir, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm ci in {workdir} took more than {NPM_CI_TIMEOUT_S} s (is the npm registry reachable?)")
    if done.returncode != 0:
        pytest.fail(f"npm ci in {workdir} failed ({done.returncode}); the registry must be reachable:\n"
                    f"{(done.stdout + done.stderr)[-3000:]}")
    locked = json.loads((KAFKAJS_DIR / "package-lock.json").read_text())["packages"]["node_modules/kafkajs"]
    pinned = json.loads((KAFKAJS_DIR / "package.json").read_text())["dependencies"]["kafkajs"]
    installed = json.loads((workdir / "node_modules" / "kafkajs" / "package.json").read_text())["version"]
    assert installed == locked["version"] == pinned  # an exact pin, not a range
    return Kafkajs(node, workdir, installed)


# --- histories -------------------------------------------------------------------------------------------------
def engine_history(event: EventFactory) -> list[Event]:
    """Every event type of the contract on eight accounts (seven EUR, one USD) and three transfers: completed,
    compensated (debited, then refunded) and failed. Nothing pending, everything long past the lag window."""
    return [
        *(event(a, 1, AccountOpened(f"owner-{a}", "EUR", 0, 1_000_000)) for a in
          ("acc-a", "acc-b", "acc-c", "acc-d", "acc-e", "acc-f", "acc-h")),
        event("acc-g", 1, AccountOpened("owner-acc-g", "USD", 0, 5_000_000)),
        event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        event("acc-c", 2, AccountCredited(4_000, None, "deposit"), 1),
        event("acc-e", 2, AccountCredited(2_000, None, "deposit"), 1),
        event("acc-g", 2, AccountCredited(70_000, None, "deposit"), 1),
        event("tx-1", 1, TransactionInitiated("acc-a", "acc-b", 2_500, "EUR"), 2, "tx-1"),
        event("acc-a", 3, AccountDebited(2_500, "tx-1", "transfer_out"), 2, "tx-1"),
        event("acc-b", 2, AccountCredited(2_500, "tx-1", "transfer_in"), 2, "tx-1"),
        event("tx-1", 2, TransactionCompleted(), 3, "tx-1"),
        event("tx-2", 1, TransactionInitiated("acc-c", "acc-d", 700, "EUR"), 4, "tx-2"),
        event("acc-c", 3, AccountDebited(700, "tx-2", "transfer_out"), 4, "tx-2"),
        event("acc-c", 4, AccountCredited(700, "tx-2", "refund"), 5, "tx-2"),
        event("tx-2", 2, TransactionCompensated(), 5, "tx-2"),
        event("tx-3", 1, TransactionInitiated("acc-e", "acc-f", 300, "EUR"), 6, "tx-3"),
        event("tx-3", 2, TransactionFailed("insufficient funds"), 6, "tx-3"),
        event("acc-e", 3, AccountDebited(100, None, "withdrawal"), 7),
        event("acc-e", 4, AccountDebited(5, None, "fee"), 7),
        event("acc-d", 2, AccountLimitsChanged(0, 2_000_000), 8),
        event("acc-f", 2, AccountSuspended("kyc review"), 8),
        event("acc-f", 3, AccountReactivated(), 9),
        event("acc-h", 2, AccountClosed(), 9),
        event("acc-g", 3, AccountDebited(1_000, None, "adjustment"), 10),
    ]


# An account kafkajs and librdkafka place differently on three partitions (the tests check that they do).
MISPLACED_ACCOUNT = "acc-a"


def _partitions(event_store: KafkaEventStore, topic: str) -> int:
    return len(event_store.partitions_of(topic))


def _read_back(event_store: KafkaEventStore) -> dict[tuple[str, int, int], Event]:
    """Every record of the store's topics by (topic, partition, offset), decoded."""
    return {(m.topic() or "", m.partition() or 0, m.offset() or 0): decode_event(m.value(), m.key())
            for batch in event_store.read_cut() for m in batch}


def _stores(event_store: KafkaEventStore, projection_store: ProjectionStore) -> RunStores:
    recon = ReconStore(projection_store.engine)
    recon.migrate()
    return RunStores(event_store, projection_store, recon, CheckpointStore(projection_store.engine))


def _reconcile(stores: RunStores, **request: Any) -> Any:
    return run_reconciliation(stores, ReconciliationRequest(run_id=new_run_id("kafkajs"), source="test", **request),
                              ReconcileOptions()).report


# --- the history reconciles exactly ----------------------------------------------------------------------------
def test_a_history_appended_by_kafkajs_reconciles_exactly(
        kafkajs: Kafkajs, event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = engine_history(EventFactory())
    placed = kafkajs.append(event_store, events)

    # kafkajs placed every key with murmur2, and said truly where each record went
    for record in placed:
        assert record.partition == kafkajs_partition(record.key, _partitions(event_store, record.topic)), record
    stored = _read_back(event_store)
    assert {(p.topic, p.partition, p.offset): p.key for p in placed} == {
        position: event.aggregate_id for position, event in stored.items()}
    assert [stored[(p.topic, p.partition, p.offset)].event_id for p in placed] == [e.event_id for e in events]

    # the same keys through our producer (librdkafka's default partitioner) land elsewhere, for some keys
    ours = KafkaEventStore(event_store.bootstrap_servers, Topics.with_prefix(f"t{uuid.uuid4().hex[:10]}."),
                           partitions=event_store.partitions)
    ours.ensure_topics()
    try:
        ours.append(events)
        by_librdkafka = {(ours.topics.all().index(t), e.aggregate_id): p
                         for (t, p, _), e in _read_back(ours).items()}
    finally:
        ours.close()
    by_kafkajs = {(event_store.topics.all().index(p.topic), p.key): p.partition for p in placed}
    assert set(by_librdkafka) == set(by_kafkajs)
    for (topic_index, key), partition in by_librdkafka.items():
        assert partition == librdkafka_partition(key, _partitions(ours, ours.topics.all()[topic_index])), key
    differ = {key for k, key in by_kafkajs if by_kafkajs[(k, key)] != by_librdkafka[(k, key)]}
    assert MISPLACED_ACCOUNT in differ and len(differ) >= 5, differ  # the test covers the difference

    # a caught-up projector's rows: the report is exactly clean
    project(events, projection_store)
    stores = _stores(event_store, projection_store)
    clean = _reconcile(stores, full=True)
    assert clean.findings == []
    assert clean.ledger and all(identity.holds for identity in clean.ledger)
    assert clean.stats["events_read"] == len(events) and clean.stats["duplicates_ignored"] == 0

    # one projection fault, on an account kafkajs placed where librdkafka would not: exactly that finding,
    # from the checkpoint the clean run left and from the whole log alike
    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET owner_id = 'someone-else' "
                             f"WHERE account_id = '{MISPLACED_ACCOUNT}'")
    for full in (False, True):
        faulted = _reconcile(stores, full=full)
        assert [f.key for f in faulted.findings] == [("account", MISPLACED_ACCOUNT, "field_mismatch")], full
        [finding] = faulted.findings
        assert finding.expected is not None and finding.expected["owner_id"] == f"owner-{MISPLACED_ACCOUNT}"
        assert finding.actual is not None and finding.actual["owner_id"] == "someone-else"
        assert all(identity.holds for identity in faulted.ledger)


# --- one entity on a kafkajs history ---------------------------------------------------------------------------
@pytest.fixture
def cli_env(event_store: KafkaEventStore, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI on this test's broker (the one `event_store` uses), database and topics."""
    for name, value in {"BILLING_KAFKA_BOOTSTRAP_SERVERS": event_store.bootstrap_servers,
                        "BILLING_DATABASE_URL": database_url,
                        "BILLING_TOPIC_PREFIX": event_store.topics.accounts.removesuffix("account-events"),
                        "BILLING_TOPIC_PARTITIONS": str(event_store.partitions)}.items():
        monkeypatch.setenv(name, value)
    yield


def _cli(*args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    try:
        return result.exit_code, json.loads(result.stdout)
    except json.JSONDecodeError:
        return result.exit_code, result.output


def _finding_keys(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["entity_type"], f["entity_id"], f["kind"]) for f in report["findings"]]


def test_one_entity_commands_find_the_events_wherever_kafkajs_put_them(
        kafkajs: Kafkajs, event_store: KafkaEventStore, projection_store: ProjectionStore, cli_env: None) -> None:
    events = engine_history(EventFactory())
    placed = kafkajs.append(event_store, events)
    home = {p.partition for p in placed if p.key == MISPLACED_ACCOUNT}
    assert home == {kafkajs_partition(MISPLACED_ACCOUNT, event_store.partitions)}
    assert home != {librdkafka_partition(MISPLACED_ACCOUNT, event_store.partitions)}
    project(events, projection_store)
    ReconStore(projection_store.engine).migrate()

    # from the start (no checkpoint yet), then from the checkpoint `reconcile all` leaves
    for mode in ("full", "incremental"):
        code, report = _cli("reconcile", "account", MISPLACED_ACCOUNT, "--json")
        assert (code, _finding_keys(report)) == (EXIT_CLEAN, []), report
        assert report["stats"]["replay_mode"] == mode and report["stats"]["accounts"] == 1, report["stats"]
        code, report = _cli("reconcile", "transaction", "tx-1", "--json")
        assert (code, _finding_keys(report)) == (EXIT_CLEAN, []), report
        code, report = _cli("reconcile", "all", "--json")
        assert (code, _finding_keys(report)) == (EXIT_CLEAN, []), report

    with projection_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE billing.account_projection SET balance_minor = balance_minor + 7 "
                             f"WHERE account_id = '{MISPLACED_ACCOUNT}'")
    code, report = _cli("reconcile", "account", MISPLACED_ACCOUNT, "--json")
    assert (code, _finding_keys(report)) == (EXIT_FINDINGS, [("account", MISPLACED_ACCOUNT, "balance_mismatch")])

    code, rebuilt = _cli("rebuild", "account", MISPLACED_ACCOUNT, "--reason", "kafkajs interop", "--actor", "ci",
                         "--json")
    assert (code, rebuilt["outcome"]) == (EXIT_CLEAN, {MISPLACED_ACCOUNT: "fixed"}), rebuilt
    assert projection_store.read_accounts([MISPLACED_ACCOUNT])[MISPLACED_ACCOUNT].balance_minor == 7_500
    code, report = _cli("reconcile", "account", MISPLACED_ACCOUNT, "--json")
    assert (code, _finding_keys(report)) == (EXIT_CLEAN, [])

    # balances as of a time: after the deposit, before the transfer's debit
    at = (EventFactory().base_time + timedelta(minutes=1, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, as_of = _cli("as-of", "--at", at, "--json")
    assert code == EXIT_CLEAN, as_of
    balances = {(b["account_id"], b["currency"]): b["balance_minor"] for b in as_of["balances"]["accounts"]}
    assert balances[(MISPLACED_ACCOUNT, "EUR")] == 10_000 and balances[("acc-g", "USD")] == 70_000


# --- the saga recovery appends to the engine's streams ---------------------------------------------------------
NOW = datetime.now(UTC).replace(microsecond=0)


def _clock() -> datetime:
    return NOW


def stuck_history(event: EventFactory) -> list[Event]:
    """Two transfers from acc-a stuck for an hour: one debited (to refund and compensate), one with no money
    moved (to fail); acc-a sits where kafkajs and librdkafka disagree."""
    return [
        event("acc-a", 1, AccountOpened("owner-a", "EUR", 0, 1_000_000)),
        event("acc-b", 1, AccountOpened("owner-b", "EUR", 0, 1_000_000)),
        event("acc-a", 2, AccountCredited(10_000, None, "deposit"), 1),
        event("tx-1", 1, TransactionInitiated("acc-a", "acc-b", 200, "EUR"), 2, "tx-1"),
        event("acc-a", 3, AccountDebited(200, "tx-1", "transfer_out"), 2, "tx-1"),
        event("tx-4", 1, TransactionInitiated("acc-a", "acc-b", 100, "EUR"), 3, "tx-4"),
    ]


def test_the_saga_recovery_appends_each_event_to_its_streams_partition(
        kafkajs: Kafkajs, event_store: KafkaEventStore, projection_store: ProjectionStore) -> None:
    events = stuck_history(EventFactory(NOW - timedelta(hours=1)))
    placed = kafkajs.append(event_store, events)
    home = {p.key: (p.topic, p.partition) for p in placed}
    moved = {k for k, (topic, partition) in home.items() if partition != librdkafka_partition(
        k, _partitions(event_store, topic))}
    assert {"acc-a", "tx-1", "tx-4"} <= moved  # every stream the recovery appends to
    project(events, projection_store)
    recon = ReconStore(projection_store.engine)
    recon.migrate()
    options = ReconcileOptions(clock=_clock)
    assert {f.key for f in reconcile_all(event_store, projection_store, options=options).findings} == {
        ("transaction", "tx-1", "stuck"), ("transaction", "tx-4", "stuck")}

    plan = plan_recovery(event_store, projection_store, recon, reason="kafkajs interop", actor="ci", clock=_clock)
    assert {a.transaction_id: a.action for a in plan.actions} == {"tx-1": "compensate", "tx-4": "fail"}
    result = execute_plan(event_store, projection_store, recon, plan, reason="kafkajs interop", actor="ci")
    assert result.appended == 3
    assert result.outcome == {"tx-1": "appended", "tx-4": "appended"}  # read back on the streams' partitions

    after = _read_back(event_store)
    appended = {e.event_id: (topic, partition) for (topic, partition, _), e in after.items()
                if e.event_id not in {x.event_id for x in events}}
    assert sorted(after[k].event_type for k in after if after[k].event_id in appended) == [
        "AccountCredited", "TransactionCompensated", "TransactionFailed"]
    for (topic, partition, _), event in after.items():
        assert (topic, partition) == home[event.aggregate_id], event  # every stream on one partition

    # the recovered events applied as a projector would: the sagas reconcile and the equation holds
    project([e for e in after.values()], projection_store)
    report = reconcile_all(event_store, projection_store, options=options)
    assert report.findings == []
    assert all(identity.holds for identity in report.ledger)
    statuses = {k: v.status for k, v in projection_store.read_transactions().items()}
    assert statuses == {"tx-1": "compensated", "tx-4": "failed"}

