"""`python -m billing_pipelines.demo`: a faulted history, reconciled, repaired and reconciled again, via Dagster.

Uses the configured servers, or the embedded stack when none are configured. Re-runnable: when the
topics already hold events, the demo writes to fresh topics (`demo-<timestamp>.` prefix) and empties
the `billing` projection tables first, so the findings are those of this simulation alone.

The runs land in the Dagster instance that `make ui` opens: DAGSTER_HOME when it is set (`make demo` sets it to
`.dagster_home`, as `make ui` does), else `./.dagster_home`, created with the repository's dagster.yaml. So the
UI shows the demo's runs, the reports on the asset pages and their plots right after the demo.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
from confluent_kafka import TopicPartition
from rich.console import Console
from rich.table import Table

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.bootstrap import event_store_for, wire, with_topics
from billing_domain.config import Settings, Topics, redact_url
from billing_domain.core.exceptions import EventStoreError
from billing_domain.core.findings import REBUILDABLE_KINDS, Kind
from billing_pipelines.constants import DAILY_RECONCILIATION_JOB, REBUILD_ACCOUNTS_JOB, REBUILD_TRANSACTIONS_JOB
from billing_pipelines.definitions import build_defs, default_resources
from billing_pipelines.resources import EventStoreResource, ProjectionsResource, resolved_settings
from billing_sandbox.simulate import Manifest, SimulationConfig, simulate

console = Console()
DEFAULT_DAGSTER_HOME = ".dagster_home"  # the folder `make ui` opens, beside the Makefile
DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"  # the repository's local instance settings
WHY_IT_REMAINS = {
    Kind.STREAM_CORRUPT: "the events themselves are broken (gap, clash, poison): fix the log, a rebuild would lie",
    Kind.INVARIANT_VIOLATION: "the events break an account rule: a business decision, not a projection bug",
    Kind.STUCK: "a transfer still pending: the saga must finish or be compensated by the engine",
    Kind.SAGA_MISMATCH: "the money events do not match the transfer's status: needs a correcting event",
    Kind.ORPHAN_PROJECTION: "a row with no events is kept unless delete_orphans is asked for",
    Kind.ACCOUNTING_EQUATION: "follows from the faults in the events above (and kept orphans): no projection fix",
    Kind.LAGGING: "the projection is merely behind its events: info only",
}


def main() -> None:
    _refuse_servers_of_yours(Settings.from_env())
    settings = resolved_settings()
    assert settings.kafka_bootstrap_servers and settings.database_url
    topics = _fresh_topics(settings)
    console.rule("[bold]Billing reconciliation demo")
    console.print(f"Kafka {settings.kafka_bootstrap_servers}, topics {topics.accounts} / {topics.transactions}; "
                  f"PostgreSQL {redact_url(settings.database_url)}")

    services = wire(with_topics(settings, topics))  # the composition root's adapters, on this run's topics
    event_store, projections, recon = services.event_store, services.projections, services.recon_store
    projections.ensure_schema()
    _empty_projections(projections)
    started = time.perf_counter()
    manifest = simulate(event_store, projections, SimulationConfig(seed=7, accounts=200, days=3, faults=True))
    event_store.close()
    console.print(f"Simulated {manifest.counts['events']:,} events for {manifest.counts['accounts']} accounts and "
                  f"{manifest.counts['transactions']:,} transfers, with {len(manifest.faults)} injected faults "
                  f"({time.perf_counter() - started:.1f}s).")

    resources: dict[str, Any] = {
        **default_resources(),
        "event_store": EventStoreResource(bootstrap_servers=settings.kafka_bootstrap_servers,
                                          topic_prefix=topics.accounts.removesuffix("account-events"),
                                          partitions=settings.topic_partitions),
        "projections": ProjectionsResource(database_url=settings.database_url,
                                           recon_database_url=settings.recon_database_url),
    }
    defs = build_defs(resources)
    home = dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        first = _run(defs, instance, DAILY_RECONCILIATION_JOB)
        found = recon.findings(first)
        _show_first(first, found, manifest)

        for job, entity in ((REBUILD_ACCOUNTS_JOB, "account"), (REBUILD_TRANSACTIONS_JOB, "transaction")):
            _run(defs, instance, job, {"ops": {f"rebuild_{entity}_projections": {"config": {
                "reason": "demo", "dry_run": False, "actor": "demo"}}}}, show_rebuild=True)

        second = _run(defs, instance, DAILY_RECONCILIATION_JOB)
        _show_second(second, recon.findings(second))
    console.print(f"The runs are in the Dagster instance at {home}: [bold]make ui[/bold], then "
                  "http://127.0.0.1:3000/runs (and Assets > account_reconciliation_report for the report).")


def dagster_home() -> Path:
    """The Dagster instance the demo records its runs in, the one `make ui` opens: DAGSTER_HOME, else
    ./.dagster_home. Given the repository's dagster.yaml when it has none (as `make ui` copies it)."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and DAGSTER_YAML.exists():
        shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    return home


def _refuse_servers_of_yours(settings: Settings) -> None:
    """The demo writes a simulated history and empties the projection tables: never on real servers by
    accident."""
    if settings.uses_embedded_stack or os.environ.get("BILLING_DEMO_ON_CONFIGURED_SERVERS") == "yes":
        return
    console.print("[red]The demo appends a simulated history and empties billing.account_projection and "
                  "billing.transaction_projection, but BILLING_KAFKA_BOOTSTRAP_SERVERS / BILLING_DATABASE_URL "
                  "name servers of yours. Unset them to use the embedded stack, or set "
                  "BILLING_DEMO_ON_CONFIGURED_SERVERS=yes if those servers are disposable.")
    raise SystemExit(2)


def _fresh_topics(settings: Settings) -> Topics:
    """The configured topics, or fresh ones when those already hold events (a second `make demo`)."""
    store = event_store_for(settings)
    if not _holds_events(store):
        return settings.topics
    prefix = f"demo-{time.strftime('%Y%m%d%H%M%S')}."
    console.print(f"[yellow]The topics already hold events: this run uses the topic prefix {prefix!r} and "
                  "empties the billing projection tables.")
    return Topics.with_prefix(prefix)


def _holds_events(store: KafkaEventStore) -> bool:
    consumer = store.new_consumer()
    try:
        for topic in store.topics.all():
            try:
                partitions = store.partitions_of(topic)
            except EventStoreError:
                continue
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:
                    return True
        return False
    finally:
        consumer.close()


def _empty_projections(projections: ProjectionStore) -> None:
    with projections.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE billing.account_projection, billing.transaction_projection")


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, run_config: dict[str, Any] | None = None,
         show_rebuild: bool = False) -> str:
    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the demo prints its own summary
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, run_config={**quiet, **(run_config or {})})
    console.print(f"[green]✓[/green] Dagster job [bold]{job}[/bold] run {result.run_id} "
                  f"({time.perf_counter() - started:.1f}s)")
    if show_rebuild:
        output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
        metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
        actions = {k.removeprefix("action/"): v.value for k, v in metadata.items() if k.startswith("action/")}
        console.print(f"   {actions}; {metadata['written'].value} row(s) written; verification: "
                      f"{metadata['verification'].value}")
    return result.run_id


def _show_first(run_id: str, findings: list[Any], manifest: Manifest) -> None:
    found = Counter(f.kind.value for f in findings)
    expected = Counter(kind for _, _, kind in manifest.expected_findings())
    table = Table(title=f"Findings of run {run_id} against the injected faults")
    for column in ("kind", "severity", "found", "injected", ""):
        table.add_column(column)
    for kind in Kind:
        if found[kind.value] or expected[kind.value]:
            severity = next((f.severity.value for f in findings if f.kind == kind), "")
            ok = "[green]✓" if found[kind.value] == expected[kind.value] else "[yellow]≠"
            table.add_row(kind.value, severity, str(found[kind.value]), str(expected[kind.value]), ok)
    console.print(table)
    keys = {f.key for f in findings if f.kind != Kind.LAGGING}
    missed = manifest.expected_findings() - {f.key for f in findings}
    console.print(f"{len(keys)} findings besides lagging; every injected fault found: "
                  f"{'[green]yes' if not missed else f'[red]no, missed {sorted(missed)[:5]}'}")


def _show_second(run_id: str, findings: list[Any]) -> None:
    found = Counter(f.kind for f in findings)
    table = Table(title=f"After the rebuilds: run {run_id}")
    for column in ("kind", "count", "why it remains"):
        table.add_column(column)
    for kind, n in sorted(found.items()):
        why = WHY_IT_REMAINS.get(kind, "[red]a rebuild should have fixed this")
        table.add_row(kind.value, str(n), why)
    console.print(table if found else "[green]No findings at all.")
    fixable = [f for f in findings if f.kind in REBUILDABLE_KINDS - {Kind.LAGGING}]
    console.print("[green]Everything a rebuild can fix is fixed." if not fixable
                  else f"[red]{len(fixable)} rebuildable findings remain.")


if __name__ == "__main__":
    main()
