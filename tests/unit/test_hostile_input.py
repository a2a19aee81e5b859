"""Hostile numbers and misplaced messages in the log.

Every malformed fact is a finding naming the event, never a crash and never an allocation that grows
with a number in the event: versions (0, negative, huge, beyond 2**63), gaps of any size, amounts and
limits up to and beyond 2**63, through the whole replay (`Replay`, `build_report`), the checkpoint
encoding and the rebuild planning. And the report does not depend on the order partitions are read in:
an aggregate's events on another partition, or without a key, are `stream_corrupt`, never applied.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.builders import AccountStream, SagaStream, envelope_dict, make_event, new_event_id, to_wire
from support.messages import FakeMessage

from billing_domain.config import Topics
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.aggregate import event_digest
from billing_domain.core.checkpoint import decode_ledger, dump_entities, dump_ledger, load_entities, load_ledger
from billing_domain.core.cut import Cut
from billing_domain.core.events import AccountCredited, AccountSuspended, Event, encode_event
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.findings import Kind, ReconciliationReport
from billing_domain.core.replay import Replay
from billing_domain.services.rebuild import plan_changes
from billing_domain.services.reconcile import ReplayOutcome, build_report
from billing_sandbox.projector import ProjectionBatch

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TOPICS = Topics()
MEMORY_BOUND = 2_000_000  # bytes: a fold of a handful of events, whatever the numbers in them say
EDGES = [0, 1, -1, 2, 3, 4, 5, 2**31 - 1, 2**31, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70,
         -(2**63), -(2**63) - 1, -(2**70), 10**30]
HOSTILE_INTS = st.one_of(st.sampled_from(EDGES), st.integers(-(2**70), 2**70), st.integers(-10, 10))




def _base() -> tuple[list[Event], list[Event]]:
    account = AccountStream("acc-1")
    account.opened(max_balance_minor=10**9)
    account.credited(500)
    account.credited(100)
    saga = SagaStream("tx-1")
    saga.initiated(source="acc-1", destination="acc-2", amount_minor=50)
    return account.events, saga.events


ACCOUNT_EVENTS, SAGA_EVENTS = _base()
HEADS = {"acc-1": AccountAggregate.from_events(ACCOUNT_EVENTS).state()}


def _event(payload: Any, version: int, aggregate_id: str = "acc-1") -> Event:
    """An event at any version (the builders' clock follows the version, which 2**62 overflows)."""
    return make_event(payload, aggregate_id=aggregate_id, version=version, occurred_at=datetime(2024, 3, 2, tzinfo=UTC))


def _messages(events: list[Event], topic: str) -> list[FakeMessage]:
    return [FakeMessage(topic, 0, offset, e.aggregate_id.encode(), encode_event(e)) for offset, e in enumerate(events)]


def _hostile_document(data: st.DataObject) -> tuple[dict[str, Any], str]:
    """An envelope whose integer fields are drawn from anything, and the topic it goes to."""
    kind = data.draw(st.sampled_from(["credited", "debited", "limits", "opened", "suspended", "initiated"]))
    template = {"credited": ACCOUNT_EVENTS[1], "opened": ACCOUNT_EVENTS[0], "initiated": SAGA_EVENTS[0]}.get(kind)
    if kind == "debited":
        template = AccountStream("acc-1").debited(1)
    elif kind == "limits":
        template = AccountStream("acc-1").limits_changed(0, 10)
    elif kind == "suspended":
        template = _event(AccountSuspended("review"), 4)
    assert template is not None
    document = envelope_dict(template) | {"event_id": new_event_id(), "aggregate_version": data.draw(HOSTILE_INTS)}
    if data.draw(st.booleans()):
        document["schema_version"] = data.draw(HOSTILE_INTS)
    for name in ("amount_minor", "min_balance_minor", "max_balance_minor"):
        if name in document["payload"]:
            document["payload"][name] = data.draw(HOSTILE_INTS)
    return document, TOPICS.transactions if kind == "initiated" else TOPICS.accounts


def _replay_with(hostile: FakeMessage) -> ReplayOutcome:
    replay = Replay(TOPICS, account_versions={"acc-1": 3}, transaction_versions={})
    replay.feed([*_messages(ACCOUNT_EVENTS, TOPICS.accounts), hostile])
    replay.feed(_messages(SAGA_EVENTS, TOPICS.transactions))
    return ReplayOutcome(replay, Cut(), dict(HEADS), {})


def _report(outcome: ReplayOutcome) -> ReconciliationReport:
    return build_report(outcome, run_id="hostile", scope="all", started_at=datetime(2026, 1, 1, tzinfo=UTC))


def _names(report: ReconciliationReport, event_id: str, offset: int) -> bool:
    """A stream_corrupt finding lists the event where it sits, with the field it breaks."""
    for finding in report.findings:
        if finding.kind == Kind.STREAM_CORRUPT and finding.expected is not None:
            for problem in finding.expected["problems"]:
                if (problem["event_id"], problem["offset"], problem["partition"]) == (event_id, offset, 0):
                    return bool(problem.get("field"))
    return False


def _round_trip(replay: Replay) -> Replay:
    """Through the checkpoint's encoding and back, as a resumed run would load it."""
    rows = list(dump_entities(replay))
    dump_ledger(replay)
    loaded = Replay(TOPICS)
    load_entities(loaded, rows)
    return loaded


@SETTINGS
@given(st.data())
def test_hostile_integers_are_findings_or_applied_never_a_crash(data: st.DataObject) -> None:
    document, topic = _hostile_document(data)
    offset = len(ACCOUNT_EVENTS) if topic == TOPICS.accounts else len(SAGA_EVENTS)
    aggregate_id = "tx-1" if topic == TOPICS.transactions else "acc-1"
    hostile = FakeMessage(topic, 0, offset, aggregate_id.encode(), to_wire(document))
    tracemalloc.start()
    try:
        outcome = _replay_with(hostile)
        report = _report(outcome)
        plan = plan_changes(outcome, "account", False) + plan_changes(outcome, "transaction", False)
        loaded = _round_trip(outcome.replay)
        json.dumps(report.to_json(), default=str)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND
    aggregates = outcome.replay.transactions if topic == TOPICS.transactions else outcome.replay.accounts
    head = aggregates[aggregate_id]
    if head.last_event_id == document["event_id"]:  # a valid event, applied
        assert head.version == document["aggregate_version"]
    else:
        assert _names(report, document["event_id"], offset), report.findings
        assert all(c.action == "refused" for c in plan if c.entity_id == aggregate_id)
    states = {k: a.state() for k, a in outcome.replay.accounts.items()}
    assert {k: a.state() for k, a in loaded.accounts.items()} == states


def test_a_version_of_2_62_is_a_finding_in_bounded_memory() -> None:
    document = envelope_dict(_event(AccountSuspended("x"), 2**62))
    hostile = FakeMessage(TOPICS.accounts, 0, 3, b"acc-1", to_wire(document))
    tracemalloc.start()
    try:
        report = _report(_replay_with(hostile))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND
    assert _names(report, document["event_id"], 3)


def test_a_gap_of_ten_million_versions_costs_nothing() -> None:
    """Past the decoder's bound a gap still folds (the fold goes on behind it), in memory of the events."""
    hostile = _event(AccountSuspended("x"), 10**7)
    tracemalloc.start()
    try:
        outcome = _replay_with(FakeMessage(TOPICS.accounts, 0, 3, b"acc-1", encode_event(hostile)))
        loaded = _round_trip(outcome.replay)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND
    account = outcome.replay.accounts["acc-1"]
    assert (account.version, account.status, account.last_event_id) == (10**7, "suspended", hostile.event_id)
    assert loaded.accounts["acc-1"].state() == account.state()
    assert _names(_report(outcome), hostile.event_id, 3)


def test_pre_decoded_events_beyond_any_bound_never_crash() -> None:
    """`feed_events` skips the decoder: the fold itself holds against versions it would have refused."""
    for version in (2**62, 2**63, 2**70, 0, -(2**70)):
        replay = Replay(TOPICS, account_versions={"acc-1": 3})
        hostile = _event(AccountCredited(5, None, "deposit"), version)
        tracemalloc.start()
        try:
            replay.feed_events([(e, EventPosition(TOPICS.accounts, 0, i)) for i, e in enumerate(ACCOUNT_EVENTS)]
                               + [(hostile, EventPosition(TOPICS.accounts, 0, 3))])
            report = _report(ReplayOutcome(replay, Cut(), dict(HEADS), {}))
            _round_trip(replay)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_BOUND, version
        assert replay.accounts["acc-1"].version == 3, version  # not applied: the head stays where it was
        assert _names(report, hostile.event_id, 3), version


def test_event_ids_across_a_huge_gap_tell_redeliveries_from_conflicts() -> None:
    stream = AccountStream("acc-1")
    stream.opened()
    stream.credited(5)
    far = _event(AccountCredited(7, None, "deposit"), 2**62)
    after = _event(AccountCredited(1, None, "deposit"), 2**62 + 1)
    account = AccountAggregate.from_events(stream.events[:2])
    tracemalloc.start()
    try:
        account.apply_across_gap(far)
        assert account.apply(after) is True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000
    ids = [stream.events[0].event_id, stream.events[1].event_id, None, None, far.event_id, after.event_id, None,
           None, None]
    assert [account.event_digest_at(v) for v in (1, 2, 3, 2**62 - 1, 2**62, 2**62 + 1, 2**62 + 2, 0, -5)] == [
        event_digest(i) if i else None for i in ids]
    assert account.apply(far) is False and account.apply(stream.events[0]) is False  # redeliveries
    assert account.balance_minor == 13


# --- one aggregate, one partition ------------------------------------------------------------------------
PARTITIONS = 3


@st.composite
def spread_logs(draw: st.DrawFn) -> list[list[FakeMessage]]:
    """Per partition, its messages in offset order: accounts on their own partition, plus events placed
    on another partition or sent without a key (never a second opening: see the README)."""
    per_partition: list[list[tuple[bytes | None, Event]]] = [[] for _ in range(PARTITIONS)]
    for n in range(draw(st.integers(1, 4))):
        stream = AccountStream(f"acc-{n}")
        stream.opened(max_balance_minor=10_000)
        for _ in range(draw(st.integers(0, 5))):
            amount = draw(st.integers(1, 3_000))
            stream.credited(amount) if draw(st.booleans()) else stream.debited(amount)
        home = per_partition[n % PARTITIONS]
        home.extend((e.aggregate_id.encode(), e) for e in stream.events)
        for _ in range(draw(st.integers(0, 3))):
            version = draw(st.integers(2, stream.next_version + 1))
            stray = (stream.events[version - 1] if version < stream.next_version and draw(st.booleans())
                     else make_event(AccountCredited(draw(st.integers(1, 500)), None, "deposit"),
                                     aggregate_id=stream.aggregate_id, version=version))
            keyless = draw(st.booleans())
            where = draw(st.integers(0, PARTITIONS - 1)) if keyless else draw(
                st.sampled_from([p for p in range(PARTITIONS) if p != n % PARTITIONS]))
            target = per_partition[where]
            target.insert(draw(st.integers(0, len(target))), (None if keyless else stray.aggregate_id.encode(), stray))
    return [[FakeMessage(TOPICS.accounts, p, offset, key, encode_event(event))
             for offset, (key, event) in enumerate(ms)] for p, ms in enumerate(per_partition)]


def _interleave(draw: st.DrawFn, partitions: list[list[FakeMessage]]) -> list[list[FakeMessage]]:
    """Batches as a consumer might hand them over: each partition in its own order, partitions mixed."""
    cursors = [0] * len(partitions)
    batches: list[list[FakeMessage]] = []
    while any(c < len(p) for c, p in zip(cursors, partitions, strict=True)):
        batch: list[FakeMessage] = []
        for _ in range(draw(st.integers(1, 6))):
            open_ = [i for i, p in enumerate(partitions) if cursors[i] < len(p)]
            if not open_:
                break
            i = draw(st.sampled_from(open_))
            batch.append(partitions[i][cursors[i]])
            cursors[i] += 1
        batches.append(batch)
    return batches


def _replay_of(batches: list[list[FakeMessage]], rows: dict[str, Any], resume_at: int | None = None) -> Replay:
    """A replay fed these batches; with `resume_at`, one resumed there from the checkpoint's encoding."""
    versions = {k: r.version for k, r in rows.items()}
    replay = Replay(TOPICS, account_versions=versions, transaction_versions={})
    for n, batch in enumerate(batches):
        if n == resume_at:
            resumed = Replay(TOPICS, account_versions=versions, transaction_versions={})
            load_entities(resumed, list(dump_entities(replay)))
            load_ledger(resumed, decode_ledger(dump_ledger(replay)))
            replay = resumed
        replay.feed(batch)
    return replay


def _report_of(batches: list[list[FakeMessage]], rows: dict[str, Any]) -> tuple[Any, ...]:
    report = _report(ReplayOutcome(_replay_of(batches, rows), Cut(), dict(rows), {}))
    findings = [f.to_json() for f in sorted(report.findings, key=lambda f: (f.key, f.detail))]
    return findings, [(i.currency, i.identity, i.left, i.right) for i in report.ledger]


def _fold_of(replay: Replay) -> tuple[Any, ...]:
    """What the fold keeps (the report of a resumed replay also needs the service's second pass)."""
    return ({k: a.state() for k, a in replay.accounts.items() if a.version},
            {k: c.problems for k, c in replay.corrupt.items()}, {c: dict(r) for c, r in replay.credits.items()},
            {c: dict(r) for c, r in replay.debits.items()}, {k: b.event_id for k, b in replay.invariant_breaks.items()},
            {k: p for k, p in replay.partition_of.items() if k[1] in replay.accounts})


@SETTINGS
@given(st.data())
def test_the_report_does_not_depend_on_the_order_partitions_are_read_in(data: st.DataObject) -> None:
    partitions = data.draw(spread_logs())
    opened = {m.key() for p in partitions for m in p if m.key() and b'"AccountOpened"' in (m.value() or b"")}
    rows = {key.decode(): AccountState(key.decode(), "owner-1", "EUR", 0, 0, 10_000, "active", 1, None, None)
            for key in opened if key}  # every row at v1: behind its account, or beside a corrupt one
    in_order = _report_of([list(p) for p in partitions], rows)
    order = data.draw(st.permutations(range(PARTITIONS)))
    assert _report_of([partitions[i] for i in order], rows) == in_order
    batches = _interleave(data.draw, partitions)
    assert _report_of(batches, rows) == in_order
    resumed = _replay_of(batches, rows, resume_at=data.draw(st.integers(0, len(batches))))
    assert _fold_of(resumed) == _fold_of(_replay_of([list(p) for p in partitions], rows))


@SETTINGS
@given(st.data())
def test_partition_groups_folded_apart_and_merged_report_what_one_pass_reports(data: st.DataObject) -> None:
    """The partitioned job and `workers=2` fold groups of partitions apart and merge them: a stream with
    events on both sides (misplaced) must come out as one pass names it."""
    partitions = data.draw(spread_logs())
    opened = {m.key() for p in partitions for m in p if m.key() and b'"AccountOpened"' in (m.value() or b"")}
    rows = {key.decode(): AccountState(key.decode(), "owner-1", "EUR", 0, 0, 10_000, "active", 1, None, None)
            for key in opened if key}
    one_pass = _report_of([list(p) for p in partitions], rows)
    group = data.draw(st.lists(st.booleans(), min_size=PARTITIONS, max_size=PARTITIONS))
    merged = _replay_of([p for p, first in zip(partitions, group, strict=True) if first], rows)
    merged.merge(_replay_of([p for p, first in zip(partitions, group, strict=True) if not first], rows))
    report = _report(ReplayOutcome(merged, Cut(), dict(rows), {}))
    findings = [f.to_json() for f in sorted(report.findings, key=lambda f: (f.key, f.detail))]
    assert (findings, [(i.currency, i.identity, i.left, i.right) for i in report.ledger]) == one_pass


def test_an_event_on_another_partition_or_without_a_key_is_stream_corrupt_and_never_applied() -> None:
    stream = AccountStream("acc-1")
    stream.opened()
    stream.credited(100)
    stray = stream.credited(40)  # v3, keyed, on partition 1
    home = [FakeMessage(TOPICS.accounts, 0, i, b"acc-1", encode_event(e)) for i, e in enumerate(stream.events[:2])]
    keyless = make_event(AccountCredited(9, None, "deposit"), aggregate_id="acc-1", version=3)
    for batches in ([home, [FakeMessage(TOPICS.accounts, 1, 0, b"acc-1", encode_event(stray))]],
                    [[FakeMessage(TOPICS.accounts, 1, 0, b"acc-1", encode_event(stray))], home],
                    [[*home, FakeMessage(TOPICS.accounts, 0, 2, None, encode_event(keyless))]]):
        replay = Replay(TOPICS)
        for batch in batches:
            replay.feed(batch)
        account = replay.accounts["acc-1"]
        assert (account.version, account.balance_minor, account.partition) == (2, 100, 0)
        assert replay.partition_of[("account", "acc-1")] == (TOPICS.accounts, 0)
        [problem] = replay.corrupt[("account", "acc-1")].problems
        if len(batches) == 2:
            assert (problem["partition"], problem["offset"], problem["event_id"], problem["field"]) == (
                1, 0, stray.event_id, "partition")
            assert "on partition 1, but the stream is on partition 0" in problem["reason"]
        else:
            assert (problem["partition"], problem["offset"], problem["event_id"], problem["field"]) == (
                0, 2, keyless.event_id, "key")
            assert problem["reason"].startswith("no message key")


def test_the_projector_hydrates_a_row_at_the_highest_version_without_placeholders() -> None:
    row = AccountState("acc-1", "owner-1", "EUR", 10, 0, 2**63 - 1, "active", 2**31 - 2, "e-last", None)
    tracemalloc.start()
    try:
        batch = ProjectionBatch({"acc-1": row}, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000  # 2**31 placeholders were 16 GB
    assert batch.apply(_event(AccountCredited(5, None, "deposit"), 2**31 - 1)) is True
    assert batch.apply(_event(AccountCredited(5, None, "deposit"), 2**31 - 3)) is False  # below: a redelivery
    [state] = batch.changed_accounts()
    assert (state.version, state.balance_minor) == (2**31 - 1, 15)


def test_the_projector_never_writes_a_balance_bigint_cannot_hold() -> None:
    """Each amount is within bigint (the decoder), a sum of them need not be: such an event is skipped
    and logged, not a row the database refuses, which would stop the projector for good."""
    row = AccountState("acc-1", "owner-1", "EUR", 2**63 - 10, 0, 2**63 - 1, "active", 4, "e-4", None)
    batch = ProjectionBatch({"acc-1": row}, {})
    assert batch.apply(_event(AccountCredited(2**63 - 1, None, "deposit"), 5)) is False
    assert batch.apply(_event(AccountCredited(9, None, "deposit"), 5)) is True
    assert batch.changed_accounts()[0].balance_minor == 2**63 - 1
