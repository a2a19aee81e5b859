"""A rebuild leaves to the live projector what it is applying right now (issue 13: rebuilds during traffic).

An entity whose row is missing, or behind but right for its version, with the first event it lacks inside
the lag window, is in flight: writing it would only race the projector. Outside the window, or with a row
wrong for its version, the rebuild writes as before.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from support.builders import AccountStream

from billing_domain.config import Topics
from billing_domain.core.accounts import AccountAggregate, AccountState
from billing_domain.core.cut import Cut
from billing_domain.core.exceptions import EventPosition
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import Replay
from billing_domain.services.rebuild import plan_changes
from billing_domain.services.reconcile import ReplayOutcome

TOPICS = Topics.with_prefix("t.")


def _stream() -> AccountStream:
    stream = AccountStream("acc-1")
    stream.opened()
    stream.credited(500)
    stream.credited(700)
    return stream


def _plan(stream: AccountStream, row: AccountState | None, read_at: datetime) -> tuple[str, str]:
    replay = Replay(TOPICS, account_versions={"acc-1": row.version} if row else {}, transaction_versions={})
    replay.feed_events((e, EventPosition(TOPICS.accounts, 0, i)) for i, e in enumerate(stream.events))
    rows = {"acc-1": row} if row else {}
    outcome = ReplayOutcome(replay, Cut(), rows, {}, judge=LagJudge(read_at))
    [change] = plan_changes(outcome, "account", delete_orphans=False)
    return change.action, change.reason


def _row_at(stream: AccountStream, version: int) -> AccountState:
    return AccountAggregate.from_events(stream.events[:version]).state()


def test_a_row_not_projected_yet_inside_the_window_is_left_to_the_projector() -> None:
    stream = _stream()
    opened_at = stream.events[0].occurred_at
    action, reason = _plan(stream, None, opened_at + timedelta(seconds=30))
    assert action == "unchanged" and "live projector" in reason
    assert _plan(stream, None, opened_at + timedelta(minutes=10))[0] == "insert"


def test_a_row_behind_inside_the_window_is_left_and_a_wrong_one_is_written() -> None:
    stream = _stream()
    behind = _row_at(stream, 2)
    lacks_at = stream.events[2].occurred_at
    assert _plan(stream, behind, lacks_at + timedelta(seconds=5))[0] == "unchanged"
    assert _plan(stream, behind, lacks_at + timedelta(minutes=5))[0] == "update"
    wrong = msgspec.structs.replace(behind, balance_minor=behind.balance_minor + 1)
    assert _plan(stream, wrong, lacks_at + timedelta(seconds=5))[0] == "update"
