"""Every event delivered twice and the partitions interleaved in every order hypothesis finds.

This is not a fault in a server: the interleavings are made in memory and fed to the fold, so the
figures count them as what they are (interleavings tried / equal to the canonical replay), apart from
the faults injected into real servers. Each example is counted as tried before it runs and as equal
only once every assertion on it held.

The messages are real: a simulated history with faults is appended to the real broker and read back;
only then are they copied into a lightweight message object that the pure replay can be fed with.
Each partition is read by two cursors (every event twice, each copy in partition order), and the
cursors of all partitions are merged in an order hypothesis draws, in batches of drawn sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import create_database
from support.figures import TestFigures
from support.messages import FakeMessage

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.config import Topics
from billing_domain.core.cut import Cut
from billing_domain.core.replay import Replay
from billing_domain.services.reconcile import ReplayOutcome, build_report
from billing_sandbox.simulate import SimulationConfig, simulate

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
STARTED = datetime(2026, 1, 1, tzinfo=UTC)




@dataclass
class Recorded:
    topics: Topics
    partitions: dict[tuple[str, int], list[FakeMessage]]
    outcome: ReplayOutcome  # the canonical replay: partitions one after the other, each once


@pytest.fixture(scope="module")
def recorded(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    topics = Topics.with_prefix(f"perm{tmp_path_factory.mktemp('p').name[-6:]}.")
    store = KafkaEventStore(servers.bootstrap_servers, topics, partitions=3)
    projections = ProjectionStore(make_engine(create_database(servers.database_url)))
    simulate(store, projections, SimulationConfig(seed=61, accounts=12, days=1, bulk_projections=True))
    partitions: dict[tuple[str, int], list[FakeMessage]] = {}
    for batch in store.read_cut():
        for m in batch:
            partitions.setdefault((m.topic() or "", m.partition() or 0), []).append(
                FakeMessage(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value()))
    rows = (projections.read_accounts(), projections.read_transactions())
    replay = _replay(topics, rows, [m for tp in sorted(partitions) for m in partitions[tp]], [10**9])
    store.close()
    return Recorded(topics, partitions, ReplayOutcome(replay, Cut(), *rows))


def _replay(topics: Topics, rows: tuple[dict[str, Any], dict[str, Any]], messages: list[FakeMessage],
            batch_sizes: list[int]) -> Replay:
    replay = Replay(topics, account_versions={k: r.version for k, r in rows[0].items()},
                    transaction_versions={k: r.version for k, r in rows[1].items()})
    start, sizes = 0, iter(batch_sizes * (len(messages) + 1))
    while start < len(messages):
        size = max(1, next(sizes))
        replay.feed(messages[start:start + size])  # type: ignore[arg-type]
        start += size
    return replay


def _summary(outcome: ReplayOutcome) -> tuple[Any, ...]:
    replay = outcome.replay
    report = build_report(outcome, run_id="r", scope="all", started_at=STARTED)
    return ({k: a.state() for k, a in replay.accounts.items()}, {k: t.state() for k, t in replay.transactions.items()},
            [f.to_json() for f in report.findings], [(i.currency, i.identity, i.left, i.right) for i in report.ledger],
            {k: dict(v) for k, v in replay.credits.items()}, {k: dict(v) for k, v in replay.debits.items()})


@st.composite
def redelivered_interleavings(draw: st.DrawFn, partitions: dict[tuple[str, int], list[FakeMessage]]
                              ) -> tuple[list[FakeMessage], list[int]]:
    cursors = [(tp, copy) for tp in sorted(partitions) for copy in range(2)]
    position = dict.fromkeys(cursors, 0)
    order: list[FakeMessage] = []
    live = [c for c in cursors if partitions[c[0]]]
    while live:
        cursor = live[draw(st.integers(0, len(live) - 1))]
        # Take a run of messages from this cursor: long runs, like real fetches, keep examples small.
        run = draw(st.integers(1, 64))
        messages = partitions[cursor[0]]
        order += messages[position[cursor]:position[cursor] + run]
        position[cursor] = min(len(messages), position[cursor] + run)
        live = [c for c in live if position[c] < len(partitions[c[0]])]
    return order, draw(st.lists(st.integers(1, 500), min_size=1, max_size=5))


def test_duplicates_and_interleavings_change_nothing(recorded: Recorded, figures: TestFigures) -> None:
    expected = _summary(recorded.outcome)
    assert expected[2], "the simulated faults give findings to compare"
    total = sum(len(v) for v in recorded.partitions.values())

    @SETTINGS
    @given(redelivered_interleavings(recorded.partitions))
    def check(drawn: tuple[list[FakeMessage], list[int]]) -> None:
        order, sizes = drawn
        figures.interleaving_tried()
        assert len(order) == 2 * total
        rows = (recorded.outcome.account_rows, recorded.outcome.transaction_rows)
        replay = _replay(recorded.topics, rows, order, sizes)
        assert replay.duplicates >= total - sum(1 for c in replay.corrupt.values() for _ in c.problems)
        assert _summary(ReplayOutcome(replay, Cut(), *rows)) == expected
        figures.interleaving_equal()

    check()
    assert figures.interleavings_tried >= SETTINGS.max_examples // 2, "hypothesis ran too few examples to count"
