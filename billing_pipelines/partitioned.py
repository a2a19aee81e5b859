"""`partitioned_reconciliation`: the daily reconciliation fanned out over Kafka partitions.

Plan (read the projections first, deal the partitions into groups) → fold each group in its own
step → merge and report. Locally the multiprocess executor runs the folds on both cores; past one
machine the same job runs on the Kubernetes or Celery executor with an object-store IO manager
(docs/features/scale-out.md: configuration, and time and memory on paper). The steps are the
domain's own functions: `fold_group`, `Replay.merge`, then `run_reconciliation` (which stores the
report and updates the finding lifecycle).
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from billing_domain.config import Settings
from billing_domain.core.cut import Cut
from billing_domain.core.lag import LagJudge
from billing_domain.core.replay import Replay
from billing_domain.services.parallel import GroupTask, fold_group, partition_groups
from billing_domain.services.reconcile import ReconcileOptions, ReplayMode, ReplayOutcome, judge_from_here
from billing_domain.services.run_reconciliation import ReconciliationRequest, run_reconciliation
from billing_pipelines.constants import RECONCILE_TAGS, SOURCE
from billing_pipelines.resources import EventStoreResource, ProjectionsResource


class PartitionedConfig(dg.Config):
    groups: int = 2
    """How many groups of partitions to fold in parallel (one step each)."""


@dg.op(out={"rows": dg.Out(), "transactions": dg.Out()})
def plan_partition_groups(context: dg.OpExecutionContext, event_store: EventStoreResource,
                          projections: ProjectionsResource) -> Iterator[dg.Output]:
    """Read the projections (before any event) and plan the transaction topic's fold, which goes first:
    a completed transfer's money events are appended before it completes, so after it they are all there."""
    store = event_store.get_store()
    # The run's clock and the projector's offsets first: the lag is judged as of this read (reconcile.lag).
    judge = judge_from_here(store, ReconcileOptions.from_settings(Settings.from_env()))
    rows = (projections.projection_store().read_accounts(), projections.projection_store().read_transactions(), judge)
    yield dg.Output(rows, "rows")
    topic = store.topics.transactions
    yield dg.Output(_task(store, {(topic, p) for p in store.partitions_of(topic)}, rows), "transactions")


@dg.op(out=dg.DynamicOut())
def plan_account_groups(context: dg.OpExecutionContext, config: PartitionedConfig, event_store: EventStoreResource,
                        rows: tuple[dict, dict, LagJudge], sagas: tuple[Replay, Cut]) -> Iterator[dg.DynamicOutput]:
    """Deal the account partitions into groups, once the transactions are folded."""
    store = event_store.get_store()
    topic = store.topics.accounts
    for index, group in enumerate(partition_groups([(topic, p) for p in store.partitions_of(topic)], config.groups)):
        context.log.info(f"group {index}: {sorted(group)}")
        yield dg.DynamicOutput(_task(store, group, rows), mapping_key=f"group_{index}")


def _task(store: Any, group: set[tuple[str, int]], rows: tuple[dict, dict, LagJudge]) -> GroupTask:
    return GroupTask(store.reopener(), store.topics, frozenset(group), None,
                     {k: r.version for k, r in rows[0].items()}, {k: r.version for k, r in rows[1].items()})


@dg.op
def fold_partition_group(context: dg.OpExecutionContext, task: GroupTask) -> tuple[Replay, Cut]:
    replay, cut = fold_group(task)
    context.log.info(f"folded {replay.events_read:,} events of {len(task.partitions)} partitions")
    return replay, cut


@dg.op
def merge_and_report(context: dg.OpExecutionContext, rows: tuple[dict, dict, LagJudge], sagas: tuple[Replay, Cut],
                     parts: list[tuple[Replay, Cut]], projections: ProjectionsResource,
                     event_store: EventStoreResource) -> dg.Output[None]:
    """Join the groups, then diff, check sagas and the ledger exactly as a single pass would."""
    replay, cut = sagas
    for other, other_cut in parts:
        replay.merge(other)
        cut.start.update(other_cut.start)
        cut.end.update(other_cut.end)
    options = ReconcileOptions.from_settings(Settings.from_env())  # the thresholds, lag window, projector group
    outcome = ReplayOutcome(replay, cut, rows[0], rows[1], mode=ReplayMode.FULL,
                            mode_reason=f"{len(parts)} partition groups", judge=rows[2])
    # No checkpoint: the groups' merged state has never been checkpointed (the daily job writes them).
    request = ReconciliationRequest(run_id=context.run.run_id, source=SOURCE, checkpoint=False)
    report = run_reconciliation(projections.run_stores(event_store), request, options, replayed=outcome).report
    context.log.info(f"stored {len(report.findings)} findings under run {context.run.run_id}")
    metadata = {f"kind/{k}": dg.MetadataValue.int(n) for k, n in report.counts_by_kind().items()}
    metadata["findings"] = dg.MetadataValue.int(len(report.findings))
    metadata["events_read"] = dg.MetadataValue.int(replay.events_read)
    return dg.Output(None, metadata=metadata)


@dg.job(executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}), tags=RECONCILE_TAGS,
        description="The daily reconciliation with the replay fanned out over Kafka partitions (one step per "
                    "group); stores its findings under this run's id like daily_reconciliation.")
def partitioned_reconciliation() -> None:
    rows, transactions = plan_partition_groups()
    sagas = fold_partition_group.alias("fold_transactions")(transactions)
    parts = plan_account_groups(rows, sagas).map(fold_partition_group)
    merge_and_report(rows, sagas, parts.collect())
