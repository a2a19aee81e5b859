"""The reconciliation report as a readable table (the CLI's default output)."""

from __future__ import annotations

from io import StringIO
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from billing_domain.core.cut import Cut
    from billing_domain.core.findings import ReconciliationReport


def render_report(report: ReconciliationReport, *, limit: int = 200, width: int = 160) -> str:
    buffer = StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, no_color=True)
    summary = ", ".join(f"{kind}={n}" for kind, n in report.counts_by_kind().items() if n) or "no findings"
    severity = ", ".join(f"{s}={n}" for s, n in report.counts_by_severity().items() if n) or "-"
    console.print(f"Reconciliation {report.run_id} ({report.scope}): {len(report.findings)} finding(s)")
    console.print(f"  by kind: {summary}")
    console.print(f"  by severity: {severity}")
    console.print(f"  events read: {report.stats.get('events_read', 0):,}; cut: {cut_text(report.cut)}")
    if report.findings:
        table = Table("severity", "entity", "id", "kind", "detail", "where", show_lines=False)
        for finding in report.worst(limit):
            where = (f"{finding.topic}[{finding.partition}]@{finding.offset}" if finding.topic else "")
            table.add_row(finding.severity.value, finding.entity_type, finding.entity_id, finding.kind.value,
                          finding.detail, where)
        console.print(table)
        if len(report.findings) > limit:
            console.print(f"... and {len(report.findings) - limit} more (use --json for all)")
    if report.ledger:
        console.print(render_ledger(report.ledger))
    return buffer.getvalue()


def cut_text(cut: Cut) -> str:
    """The cut in words (its offsets per partition are in --json): `1,234 message(s) on 8 partition(s)`."""
    topics = len({topic for topic, _ in cut.end})
    return (f"{cut.message_count:,} message(s) on {len(cut.end)} partition(s) of {topics} topic(s) "
            "(--json has the offsets)")


def render_ledger(identities: list[Any]) -> Table:
    table = Table("currency", "identity", "left", "right", "difference", "holds",
                  title="Accounting equation (integer minor units)")
    for i in identities:
        table.add_row(i.currency, i.identity, str(i.left), str(i.right), str(i.left - i.right),
                      "yes" if i.holds else "NO")
    return table
