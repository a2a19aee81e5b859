"""The checkpoint's compact format: event ids kept as 8-byte digests, states as positional arrays.

A digest stands in for an id only where the id is compared (redelivery or conflicting event); every id a
finding prints comes from the event read, so a resumed run reports exactly what a full one does.
"""

from __future__ import annotations

import tracemalloc
from importlib.metadata import PackageNotFoundError, version

import msgspec
import pytest
from support.builders import AccountStream, make_event
from support.messages import FakeMessage

from billing_domain.config import Topics
from billing_domain.core import checkpoint
from billing_domain.core.accounts import AccountAggregate
from billing_domain.core.aggregate import DIGEST_SIZE, event_digest
from billing_domain.core.checkpoint import (
    CheckpointHeader,
    EntityRow,
    dump_entities,
    dump_ledger,
    load_entities,
    why_not_trusted,
)
from billing_domain.core.cut import Cut
from billing_domain.core.events import AccountCredited, Event, encode_event
from billing_domain.core.exceptions import CheckpointUnreadableError
from billing_domain.core.replay import Replay

TOPICS = Topics("t.account-events", "t.transaction-events")


def _messages(events: list[Event], first_offset: int = 0) -> list[FakeMessage]:
    return [FakeMessage(TOPICS.accounts, 0, first_offset + n, e.aggregate_id.encode(), encode_event(e))
            for n, e in enumerate(events)]


def _resumed(replay: Replay) -> Replay:
    """A fresh replay loaded from `replay`'s checkpoint rows, as a resumed run loads them."""
    rows = list(dump_entities(replay))
    dump_ledger(replay)
    loaded = Replay(TOPICS)
    load_entities(loaded, rows)
    return loaded


def _account_history(deposits: int) -> AccountStream:
    stream = AccountStream("acc-1")
    stream.opened()
    for _ in range(deposits):
        stream.credited(10)
    return stream


def test_an_aggregate_keeps_a_digest_per_version_and_only_the_last_id_as_text() -> None:
    stream = _account_history(999)
    tracemalloc.start()
    try:
        account = AccountAggregate.from_events(stream.events)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(account.event_digests) == DIGEST_SIZE * 1_000
    assert account.last_event_id == stream.events[-1].event_id
    assert held < 30_000  # 1,000 ids as strings were ~90 KB; as digests 8 KB
    assert [account.event_digest_at(v) for v in (1, 500, 1_000, 1_001)] == [
        event_digest(stream.events[0].event_id), event_digest(stream.events[499].event_id),
        event_digest(stream.events[-1].event_id), None]


def test_a_checkpointed_state_holds_digests_not_the_earlier_ids() -> None:
    stream = _account_history(20)
    replay = Replay(TOPICS)
    replay.feed(_messages(stream.events))
    [row] = list(dump_entities(replay))
    assert all(e.event_id.encode() not in row.state for e in stream.events[:-1])
    assert stream.events[-1].event_id.encode() in row.state  # the projection's last_event_id
    assert len(row.state) < 400  # 21 ids as text were ~800 bytes alone


def test_after_a_resume_a_redelivery_is_ignored_and_a_conflicting_event_is_corruption() -> None:
    stream = _account_history(4)  # v1..v5
    before, tail = _messages(stream.events), []
    conflicting = make_event(AccountCredited(99, None, "deposit"), aggregate_id="acc-1", version=3)
    tail = _messages([stream.events[2], conflicting, stream.credited(1)], first_offset=len(before))

    full = Replay(TOPICS)
    full.feed(before + tail)
    checkpointed = Replay(TOPICS)
    checkpointed.feed(before)
    resumed = _resumed(checkpointed)
    resumed.feed(tail)

    account = resumed.accounts["acc-1"]
    assert (account.version, account.balance_minor) == (6, 41)  # the copy and the conflict changed nothing
    assert resumed.duplicates == full.duplicates == 1
    assert resumed.corrupt[("account", "acc-1")].finding() == full.corrupt[("account", "acc-1")].finding()
    [problem] = resumed.corrupt[("account", "acc-1")].problems
    assert (problem["reason"], problem["event_id"]) == ("a different event with a used version", conflicting.event_id)
    assert account.state() == full.accounts["acc-1"].state()


def test_the_runs_across_a_gap_survive_the_checkpoint() -> None:
    stream = AccountStream("acc-1")
    stream.opened()
    stream.credited(1)
    lost = stream.credited(2)  # v3, never delivered
    after = stream.credited(3)  # v4, folded across the gap
    replay = Replay(TOPICS)
    replay.feed(_messages([stream.events[0], stream.events[1], after]))
    resumed = _resumed(replay)
    account = resumed.accounts["acc-1"]
    assert account.runs == replay.accounts["acc-1"].runs == [[1, 0], [4, 2]]
    assert account.event_digest_at(3) is None and account.holds_event_at(4, after.event_id)
    resumed.feed(_messages([lost, after], first_offset=3))
    problems = [p["reason"] for p in resumed.corrupt[("account", "acc-1")].problems]
    assert problems == ["version gap", "an event at a version skipped by an earlier gap"]
    assert resumed.duplicates == 1  # the copy of v4


def _old_code_version(format_number: int) -> str:
    try:
        package = version("billing-recon")
    except PackageNotFoundError:
        package = "dev"
    return f"format-{format_number}/billing-recon-{package}"


def test_a_checkpoint_of_the_format_with_event_ids_as_text_is_not_trusted() -> None:
    header = CheckpointHeader("t.a,t.t", _old_code_version(5), Cut(), {}, {}, None)
    reason = why_not_trusted(header, {}, {})
    assert reason is not None and reason.startswith("checkpoint written by format-5/")
    assert why_not_trusted(CheckpointHeader("t.a,t.t", checkpoint.code_version(), Cut(), {}, {}, None), {}, {}) is None
    assert checkpoint.code_version().startswith(f"format-{checkpoint.CHECKPOINT_FORMAT}.")


@pytest.mark.parametrize("damage", ["a slot missing", "digests cut short", "digests as a list"])
def test_a_state_of_another_shape_is_unreadable_and_names_the_entity(damage: str) -> None:
    replay = Replay(TOPICS)
    replay.feed(_messages(_account_history(2).events))
    [row] = list(dump_entities(replay))
    values, problems, broken = msgspec.msgpack.decode(row.state)
    digests_at = checkpoint._ACCOUNT_SLOTS.index("event_digests")
    if damage == "a slot missing":
        values = values[:-1]
    elif damage == "digests cut short":
        values[digests_at] = values[digests_at][:-1]
    else:
        values[digests_at] = list(values[digests_at])
    damaged = EntityRow(row.entity_type, row.entity_id, row.topic, row.partition,
                        msgspec.msgpack.encode((values, problems, broken)))
    with pytest.raises(CheckpointUnreadableError, match="account 'acc-1'"):
        load_entities(Replay(TOPICS), [damaged])


def test_a_resumed_replay_shares_each_id_with_its_key_and_each_place_across_entities() -> None:
    second = AccountStream("acc-2")
    second.opened()
    replay = Replay(TOPICS)
    replay.feed(_messages(_account_history(1).events + second.events))
    resumed = _resumed(replay)
    for key, account in resumed.accounts.items():
        assert account.aggregate_id is key  # the state holds no id of its own
    first_place, second_place = (resumed.partition_of[("account", i)] for i in ("acc-1", "acc-2"))
    assert first_place == (TOPICS.accounts, 0) and first_place is second_place
