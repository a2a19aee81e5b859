"""`partitioned_reconciliation`: the daily reconciliation fanned out over Kafka partitions.

Plan (read the projections first, deal the partitions into groups) → fold each group in its own
step → merge and report. Locally the multiprocess executor runs the folds on both cores; past one
machine the same job runs on the Kubernetes or Celery executor with an object-store IO manager
(see docs/features/benchmark.md). The steps are the domain's own functions: `fold_group`,
`Replay.merge`, `build_report`.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from billing_domain.config import Settings
from billing_domain.cut import Cut
from billing_domain.reconcile.parallel import GroupTask, fold_group, partition_groups
from billing_domain.reconcile.replay import Replay
from billing_domain.reconcile.service import ReconcileOptions, ReplayOutcome, build_report
from billing_pipelines.constants import RECONCILE_TAGS, SOURCE
from billing_pipelines.resources import EventStoreResource, ProjectionsResource


class PartitionedConfig(dg.Config):
    groups: int = 2
    """How many groups of partitions to fold in parallel (one step each)."""


@dg.op(out={"rows": dg.Out(), "tasks": dg.DynamicOut()})
def plan_partition_groups(context: dg.OpExecutionContext, config: PartitionedConfig, event_store: EventStoreResource,
                          projections: ProjectionsResource) -> Iterator[dg.Output | dg.DynamicOutput]:
    """Read the projections (before any event), then deal the partitions into groups."""
    store = event_store.get_store()
    rows = (projections.projection_store().read_accounts(), projections.projection_store().read_transactions())
    yield dg.Output(rows, "rows")
    partitions = [(t, p) for t in store.topics.all() for p in store.partitions_of(t)]
    for index, group in enumerate(partition_groups(partitions, config.groups)):
        context.log.info(f"group {index}: {sorted(group)}")
        yield dg.DynamicOutput(GroupTask(store.bootstrap_servers, store.topics, frozenset(group), None,
                                         {k: r.version for k, r in rows[0].items()},
                                         {k: r.version for k, r in rows[1].items()}),
                               output_name="tasks", mapping_key=f"group_{index}")


@dg.op
def fold_partition_group(context: dg.OpExecutionContext, task: GroupTask) -> tuple[Replay, Cut]:
    replay, cut = fold_group(task)
    context.log.info(f"folded {replay.events_read:,} events of {len(task.partitions)} partitions")
    return replay, cut


@dg.op
def merge_and_report(context: dg.OpExecutionContext, rows: tuple[dict, dict],
                     parts: list[tuple[Replay, Cut]], projections: ProjectionsResource) -> dg.Output[None]:
    """Join the groups, then diff, check sagas and the ledger exactly as a single pass would."""
    replay, cut = parts[0]
    for other, other_cut in parts[1:]:
        replay.merge(other)
        cut.start.update(other_cut.start)
        cut.end.update(other_cut.end)
    options = ReconcileOptions(stuck_after=timedelta(minutes=Settings.from_env().stuck_after_minutes))
    outcome = ReplayOutcome(replay, cut, rows[0], rows[1], mode="full", mode_reason=f"{len(parts)} partition groups")
    report = build_report(outcome, run_id=context.run.run_id, scope="all", started_at=datetime.now(UTC),
                          options=options)
    projections.recon_store().save_report(report, source=SOURCE)
    context.log.info(f"stored {len(report.findings)} findings under run {context.run.run_id}")
    metadata = {f"kind/{k}": dg.MetadataValue.int(n) for k, n in report.counts_by_kind().items()}
    metadata["findings"] = dg.MetadataValue.int(len(report.findings))
    metadata["events_read"] = dg.MetadataValue.int(replay.events_read)
    return dg.Output(None, metadata=metadata)


@dg.job(executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}), tags=RECONCILE_TAGS,
        description="The daily reconciliation with the replay fanned out over Kafka partitions (one step per "
                    "group); stores its findings under this run's id like daily_reconciliation.")
def partitioned_reconciliation() -> None:
    rows, tasks = plan_partition_groups()
    parts = tasks.map(fold_partition_group)
    merge_and_report(rows, parts.collect())
