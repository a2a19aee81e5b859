"""Asset checks: short predicates over the findings the run stored in `billing_recon`.

The predicates (`*_verdict`) are plain functions of a list of findings, tested on their own; the
checks only fetch the run's findings and describe the verdict to Dagster.
"""


from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from billing_domain.config import Settings
from billing_domain.core.findings import Finding, Kind, Severity
from billing_pipelines.assets import ACCOUNT_REPORT, LEDGER_REPORT, TRANSACTION_REPORT, findings_markdown
from billing_pipelines.resources import ProjectionsResource

SAMPLE = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    offending: list[Finding] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def no_critical_verdict(findings: Sequence[Finding], entity_type: str) -> Verdict:
    bad = [f for f in findings if f.entity_type == entity_type and f.severity == Severity.CRITICAL]
    return Verdict(not bad, bad, {"critical_findings": len(bad), **_by_kind(bad)})


def accounting_equation_verdict(findings: Sequence[Finding]) -> Verdict:
    bad = [f for f in findings if f.kind == Kind.ACCOUNTING_EQUATION]
    return Verdict(not bad, bad, {"broken_identities": len(bad)})


def no_stuck_verdict(findings: Sequence[Finding]) -> Verdict:
    bad = [f for f in findings if f.kind == Kind.STUCK]
    return Verdict(not bad, bad, {"stuck_transfers": len(bad)})


def lagging_verdict(findings: Sequence[Finding], entity_type: str, max_lagging: int) -> Verdict:
    lagging = [f for f in findings if f.entity_type == entity_type and f.kind == Kind.LAGGING]
    return Verdict(len(lagging) <= max_lagging, lagging, {"lagging": len(lagging), "max_lagging": max_lagging})


def _by_kind(findings: Sequence[Finding]) -> dict[str, int]:
    return {f"kind/{k}": n for k, n in sorted(Counter(f.kind.value for f in findings).items())}


class LaggingConfig(dg.Config):
    max_lagging: int | None = None
    """Lagging rows tolerated; default BILLING_MAX_LAGGING (validated with every other setting)."""


def run_findings(projections: ProjectionsResource, run_id: str) -> tuple[str | None, list[Finding]]:
    """The findings this run stored; a check launched on its own judges the latest stored report."""
    store = projections.recon_store()
    report_run = run_id if store.run_exists(run_id) else store.latest_run_id()
    return report_run, (store.findings(report_run) if report_run else [])


def _result(verdict: Verdict, report_run: str | None, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {k: dg.MetadataValue.int(v) for k, v in verdict.metadata.items()}
    metadata["report_run_id"] = dg.MetadataValue.text(report_run or "<no stored report>")
    if verdict.offending:
        metadata["sample"] = dg.MetadataValue.md(findings_markdown(verdict.offending[:SAMPLE]))
    return dg.AssetCheckResult(passed=verdict.passed, severity=severity, metadata=metadata)


def _check(asset: dg.AssetKey, name: str, description: str, severity: dg.AssetCheckSeverity,
           predicate: Callable[[list[Finding]], Verdict]) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=name, description=description)
    def check(context: dg.AssetCheckExecutionContext, projections: ProjectionsResource) -> dg.AssetCheckResult:
        report_run, findings = run_findings(projections, context.run.run_id)
        return _result(predicate(findings), report_run, severity)

    return check


def _lagging_check(asset: dg.AssetKey, entity_type: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=f"{entity_type}_projections_not_lagging",
                    description=f"At most `max_lagging` {entity_type} projections behind their events (WARN).")
    def check(context: dg.AssetCheckExecutionContext, config: LaggingConfig,
              projections: ProjectionsResource) -> dg.AssetCheckResult:
        report_run, findings = run_findings(projections, context.run.run_id)
        tolerated = config.max_lagging if config.max_lagging is not None else Settings.from_env().max_lagging
        return _result(lagging_verdict(findings, entity_type, tolerated), report_run,
                       dg.AssetCheckSeverity.WARN)

    return check


ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
reconciliation_checks = [
    _check(ACCOUNT_REPORT, "no_critical_account_findings", "No critical account finding (ERROR).", ERROR,
           lambda fs: no_critical_verdict(fs, "account")),
    _check(TRANSACTION_REPORT, "no_critical_transaction_findings", "No critical transaction finding (ERROR).",
           ERROR, lambda fs: no_critical_verdict(fs, "transaction")),
    _check(LEDGER_REPORT, "accounting_equation_holds", "Every accounting identity holds per currency (ERROR).",
           ERROR, accounting_equation_verdict),
    _check(TRANSACTION_REPORT, "no_stuck_transfers", "No transfer pending beyond the threshold (WARN).", WARN,
           no_stuck_verdict),
    _lagging_check(ACCOUNT_REPORT, "account"),
    _lagging_check(TRANSACTION_REPORT, "transaction"),
]
ERROR_CHECK_NAMES = ("no_critical_account_findings", "no_critical_transaction_findings", "accounting_equation_holds")
