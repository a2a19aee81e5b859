"""The read plan: the mode, its reason, where each partition's read starts and what is loaded, decided from
plain values before any event is read (no servers)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from billing_domain.core.checkpoint import CheckpointHeader, code_version
from billing_domain.core.cut import Cut
from billing_domain.services.read_plan import (
    MIN_TAIL_LIMIT,
    CheckpointFacts,
    DeltaFacts,
    Hydration,
    ReadRequest,
    ReplayMode,
    plan_read,
    start_after,
    tail_length,
    tail_limit,
    why_not_delta_yet,
)

ACC, TX = "billing.account-events", "billing.transaction-events"
PARTITIONS = {ACC: [0, 1], TX: [0, 1]}
ENDS = {(ACC, 0): 10, (ACC, 1): 0, (TX, 0): 4, (TX, 1): 7}
MARKS = {f"{t}:{p}": 100 + end for (t, p), end in ENDS.items()}
HEADER = CheckpointHeader(f"{ACC},{TX}", code_version(), Cut({tp: 0 for tp in ENDS}, dict(ENDS)),
                          {key: mark for key, mark in MARKS.items() if not key.endswith(f"{ACC}:1")},
                          {}, "run-1", has_delta_memo=True)
TRUSTED = CheckpointFacts(HEADER, PARTITIONS, MARKS)
DAILY = ReadRequest(checkpoints=True, delta=True)
SHORT_TAIL = DeltaFacts("run-1", entities=1_000, tail=40)


def test_a_trusted_checkpoint_with_a_usable_memo_and_a_short_tail_plans_a_delta_run() -> None:
    plan = plan_read(DAILY, TRUSTED, SHORT_TAIL)
    assert plan.mode is ReplayMode.DELTA and str(plan.mode) == "delta"
    assert plan.reason == "delta from the checkpoint of run run-1: a tail of about 40 events"
    assert plan.start == ENDS and plan.hydrate is Hydration.CHANGED
    assert plan.resumed_from == "run-1" and not plan.parallel


def test_a_tail_too_long_for_delta_is_read_once_by_the_incremental_plan_and_says_why() -> None:
    limit = tail_limit(1_000)
    plan = plan_read(DAILY, TRUSTED, replace(SHORT_TAIL, tail=limit + 1))
    assert plan.mode is ReplayMode.INCREMENTAL and plan.hydrate is Hydration.EVERY and plan.start == ENDS
    assert plan.reason == (f"resumed from checkpoint of run run-1 (every entity diffed: the tail holds about "
                           f"{limit + 1:,} events, more than {limit:,})")
    assert plan_read(DAILY, TRUSTED, replace(SHORT_TAIL, tail=limit)).mode is ReplayMode.DELTA  # at the limit


def test_the_tail_limit_scales_with_the_entities_above_a_floor() -> None:
    assert tail_limit(0) == MIN_TAIL_LIMIT
    assert tail_limit(10 * MIN_TAIL_LIMIT) == 5 * MIN_TAIL_LIMIT


def test_the_tail_length_comes_from_the_reported_ends_and_never_counts_below_zero() -> None:
    start = {(ACC, 0): 10, (ACC, 1): 0, (TX, 0): 4}
    assert tail_length(start, {(ACC, 0): 15, (ACC, 1): 3, (TX, 0): 2}) == 5 + 3


def test_the_memo_facts_say_why_no_delta_run() -> None:
    plan = plan_read(DAILY, TRUSTED, replace(SHORT_TAIL, why_not="the report of run run-1 is not stored"))
    assert plan.mode is ReplayMode.INCREMENTAL
    assert plan.reason == "resumed from checkpoint of run run-1 (every entity diffed: the report of run run-1 is not " \
                          "stored)"
    assert plan.not_delta == "the report of run run-1 is not stored"


def test_a_checkpoint_without_a_memo_is_resumed_without_looking_for_one() -> None:
    facts = replace(TRUSTED, header=replace(HEADER, has_delta_memo=False))
    assert why_not_delta_yet(DAILY, facts) == "no delta memo with the checkpoint"
    plan = plan_read(DAILY, facts, None)
    assert plan.mode is ReplayMode.INCREMENTAL
    assert plan.reason.endswith("(every entity diffed: no delta memo with the checkpoint)")


def test_a_new_partition_is_read_from_its_start() -> None:
    facts = replace(TRUSTED, partitions={ACC: [0, 1, 2], TX: [0, 1]})
    assert start_after(HEADER, facts.partitions) == ENDS | {(ACC, 2): 0}
    assert plan_read(ReadRequest(checkpoints=True), facts, None).start == ENDS | {(ACC, 2): 0}


@pytest.mark.parametrize(("facts", "why"), [
    (replace(TRUSTED, header=replace(HEADER, code_version="format-0/other")), "checkpoint written by format-0/other"),
    (replace(TRUSTED, partitions={ACC: [0], TX: [0, 1]}), f"{ACC}[1] is gone since the checkpoint"),
    (replace(TRUSTED, marks=MARKS | {f"{TX}:0": 1}), f"the message at {TX}[0]@3 is not the one the checkpoint"),
    (CheckpointFacts(None, PARTITIONS, {}, unreadable="the checkpoint's ledger sums do not decode"),
     "the checkpoint's ledger sums do not decode"),
])
def test_a_checkpoint_that_cannot_be_trusted_means_a_full_replay_that_says_why(facts: CheckpointFacts,
                                                                               why: str) -> None:
    plan = plan_read(ReadRequest(checkpoints=True), facts, None)
    assert plan.mode is ReplayMode.FULL and plan.start is None and plan.hydrate is Hydration.NOTHING
    assert plan.reason.startswith(why) and plan.reason.endswith(": full replay")
    daily = plan_read(DAILY, facts, None)  # a delta run asked for says the same reason twice
    assert daily.mode is ReplayMode.FULL and daily.not_delta is not None and why in daily.not_delta


@pytest.mark.parametrize(("request_", "facts", "reason"), [
    (ReadRequest(checkpoints=False), None, "full replay"),
    (ReadRequest(checkpoints=True, full=True, delta=True), None, "full replay (asked for)"),
    (ReadRequest(checkpoints=True), CheckpointFacts(None, PARTITIONS, {}), "no checkpoint yet: full replay"),
    (DAILY, CheckpointFacts(None, PARTITIONS, {}),
     "no checkpoint yet: full replay (every entity diffed: no delta memo with the checkpoint)"),
])
def test_without_a_checkpoint_to_resume_from_the_whole_log_is_read(request_: ReadRequest,
                                                                  facts: CheckpointFacts | None, reason: str) -> None:
    plan = plan_read(request_, facts, None)
    assert (plan.mode, plan.reason, plan.start, plan.resumed_from) == (ReplayMode.FULL, reason, None, None)


@pytest.mark.parametrize("request_", [
    ReadRequest(checkpoints=True, delta=True, only_ids=True),
    ReadRequest(checkpoints=True, delta=True, bounded=True),
    ReadRequest(checkpoints=True, delta=True, every_type=False),
    ReadRequest(checkpoints=True, delta=False),
])
def test_only_a_run_of_every_entity_to_the_end_may_be_a_delta_run(request_: ReadRequest) -> None:
    assert not request_.delta_allowed
    plan = plan_read(request_, TRUSTED, SHORT_TAIL)
    assert plan.mode is ReplayMode.INCREMENTAL and plan.reason == "resumed from checkpoint of run run-1"


def test_only_a_full_replay_of_every_id_is_folded_in_worker_processes() -> None:
    assert plan_read(ReadRequest(checkpoints=False, workers=2), None, None).parallel
    assert not plan_read(ReadRequest(checkpoints=False, workers=2, only_ids=True), None, None).parallel
    assert not plan_read(ReadRequest(checkpoints=True, workers=2), TRUSTED, None).parallel  # the tail: one pass


def test_what_is_only_known_once_the_tail_is_read_widens_the_plan_without_another_read_of_it() -> None:
    plan = plan_read(DAILY, TRUSTED, SHORT_TAIL)
    wider = plan.every_entity("the tail changed entities the pre-scan did not name: acc-1")
    assert (wider.mode, wider.start, wider.hydrate) == (ReplayMode.INCREMENTAL, ENDS, Hydration.EVERY)
    assert wider.reason == ("resumed from checkpoint of run run-1 (every entity diffed: the tail changed entities "
                            "the pre-scan did not name: acc-1)")
    whole = plan.without_checkpoint("the checkpointed state of account 'acc-1' does not decode", DAILY)
    assert (whole.mode, whole.start, whole.hydrate) == (ReplayMode.FULL, None, Hydration.NOTHING)
    assert whole.reason == "the checkpointed state of account 'acc-1' does not decode: full replay"
    resumed = plan_read(replace(DAILY, delta=False), TRUSTED, None).without_checkpoint("a state is damaged", DAILY)
    assert resumed.reason == "a state is damaged: full replay"
