"""Partition-parallel replay: Kafka partitions are the unit of parallel work.

The partitions of both topics are dealt into groups; this process folds one group and worker
processes fold the others, each into its own `Replay`, which is then merged here. A key lives in
one partition, so aggregates never straddle groups; what joins across partitions (a transfer's
money on two accounts, the ledger sums, in-flight money, stuck transfers measured at the cut's
time) is computed after the merge by the same diff, saga and ledger code as a single pass.

Workers come from a `forkserver` (never a bare fork of a process holding librdkafka threads).
Past one machine the same split runs as partitioned Dagster assets on the Kubernetes or Celery
executor (docs/features/scale-out.md); nothing here schedules work across machines.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from billing_domain.core.cut import Cut, TopicPartitionKey
from billing_domain.core.records import Topics
from billing_domain.core.replay import Replay
from billing_domain.ports import EventLog
from billing_domain.services.collector import collector_paused


@dataclass(frozen=True, slots=True)
class GroupTask:
    open_log: Callable[[], EventLog]  # picklable: opens the same log in a worker (`EventLog.reopener`)
    topics: Topics
    partitions: frozenset[TopicPartitionKey]
    stop: dict[TopicPartitionKey, int] | None
    account_versions: Mapping[str, int]
    transaction_versions: Mapping[str, int]


def partition_groups(partitions: list[TopicPartitionKey], groups: int) -> list[set[TopicPartitionKey]]:
    """Deal partitions round-robin, accounts and transactions alike, into at most `groups` groups."""
    ordered = sorted(partitions, key=lambda tp: (tp[1], tp[0]))
    dealt: list[set[TopicPartitionKey]] = [set() for _ in range(max(1, min(groups, len(ordered))))]
    for index, tp in enumerate(ordered):
        dealt[index % len(dealt)].add(tp)
    return dealt


def fold_group(task: GroupTask, progress: Callable[[int], None] | None = None) -> tuple[Replay, Cut]:
    """Fold one group of partitions (runs in a worker, or in this process for the first group)."""
    store = task.open_log()
    replay = Replay(task.topics, account_versions=task.account_versions,
                    transaction_versions=task.transaction_versions)
    reader = store.read_cut(stop=task.stop, partitions=set(task.partitions), on_batch=progress)
    with collector_paused():
        for batch in reader:
            replay.feed(batch)
    return replay, reader.cut


def _fold_group_pickled(task: GroupTask) -> bytes:
    replay, cut = fold_group(task)
    return pickle.dumps((replay, cut), protocol=pickle.HIGHEST_PROTOCOL)


def replay_in_parallel(event_store: EventLog, replay: Replay, workers: int,
                       stop: dict[TopicPartitionKey, int] | None = None,
                       progress: Callable[[int], None] | None = None) -> Cut:
    """Fold every partition into `replay` using `workers` processes (this one included).

    The transaction topic is folded first, here, and only then are the account partitions dealt
    out: as in a single pass, a completed transfer's money is then always on the streams read.
    """
    def task(group: set[TopicPartitionKey]) -> GroupTask:
        return GroupTask(event_store.reopener(), event_store.topics, frozenset(group), stop,
                         replay.account_versions, replay.transaction_versions)

    transactions = event_store.topics.transactions
    cut = Cut()
    sagas, saga_cut = fold_group(task({(transactions, p) for p in event_store.partitions_of(transactions)}),
                                 progress)
    replay.merge(sagas)
    _merge_cut(cut, saga_cut)
    accounts = event_store.topics.accounts
    tasks = [task(g) for g in partition_groups([(accounts, p) for p in event_store.partitions_of(accounts)],
                                               workers)]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=max(1, len(tasks) - 1), mp_context=context) as pool:
        futures: list[Future[bytes]] = [pool.submit(_fold_group_pickled, t) for t in tasks[1:]]
        mine, my_cut = fold_group(tasks[0], progress)
        replay.merge(mine)
        _merge_cut(cut, my_cut)
        for future in futures:
            theirs, their_cut = pickle.loads(future.result())
            replay.merge(theirs)
            _merge_cut(cut, their_cut)
            if progress:
                progress(theirs.events_read)
    return cut


def _merge_cut(into: Cut, other: Cut) -> None:
    into.start.update(other.start)
    into.end.update(other.end)
