"""The alert messages, as plain data: a one-line text and Slack Block Kit blocks.

Findings are compared across runs by their key (entity_type, entity_id, kind): a finding whose
key the previous run also reported is "still open", otherwise it is "new". Where the run was applied to
the finding lifecycle (billing_domain.services.lifecycle), `lifecycle_alert` names only new and escalated findings
and counts the rest (still open, acknowledged, accepted, resolved). Messages carry ids,
kinds and counts only: never a URL with credentials, a token or a projection's full row.

A run's report-level warnings (an event topic configured so that it can lose events: compacted, or with a
finite retention) make a message of their own right, first in it, even when the run found nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from billing_domain.core.findings import SEVERITY_RANK, Finding, Severity

TOP_FINDINGS = 10
MAX_DETAIL = 140


@dataclass(frozen=True, slots=True)
class Alert:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FindingsDigest:
    """The alertable (warning and critical) findings of a run, split against the previous run."""

    alertable: list[Finding]
    new: list[Finding]
    still_open: list[Finding]
    resolved: int  # alertable keys of the previous run that this run no longer reports

    @property
    def counts_by_severity(self) -> dict[str, int]:
        counts = Counter(f.severity.value for f in self.alertable)
        return {s.value: counts.get(s.value, 0) for s in (Severity.CRITICAL, Severity.WARNING)}

    @property
    def counts_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind.value for f in self.alertable).items()))


def digest(findings: Iterable[Finding], previous: Iterable[Finding]) -> FindingsDigest:
    alertable = sorted((f for f in findings if f.severity != Severity.INFO),
                       key=lambda f: (SEVERITY_RANK[f.severity], f.kind.value, f.entity_id))
    previous_keys = {f.key for f in previous if f.severity != Severity.INFO}
    new = [f for f in alertable if f.key not in previous_keys]
    still_open = [f for f in alertable if f.key in previous_keys]
    resolved = len(previous_keys - {f.key for f in alertable})
    return FindingsDigest(alertable, new, still_open, resolved)


def run_url(ui_base_url: str, run_id: str) -> str:
    return f"{ui_base_url.rstrip('/')}/runs/{run_id}"


def findings_alert(run_id: str, findings: Sequence[Finding], previous: Sequence[Finding], ui_base_url: str, *,
                   failed_checks: Sequence[str] = (), top: int = TOP_FINDINGS,
                   warnings: Sequence[str] = ()) -> Alert | None:
    """The one message for a reconciliation run, or None when it found nothing worth a warning."""
    d = digest(findings, previous)
    if not d.alertable and not failed_checks and not warnings:
        return None
    sev = d.counts_by_severity
    url = run_url(ui_base_url, run_id)
    text = _warned(warnings) + (
        f"Billing reconciliation {run_id}: {sev['critical']} critical, {sev['warning']} warning findings "
        f"({len(d.new)} new, {len(d.still_open)} still open, {d.resolved} resolved). {url}")
    new_keys = {f.key for f in d.new}
    lines = [f"• `{f.severity.value}` *{f.kind.value}* {f.entity_type} `{f.entity_id}` "
             f"({'NEW' if f.key in new_keys else 'still open'}): {_short(f.detail)}" for f in d.alertable[:top]]
    if len(d.alertable) > top:
        lines.append(f"… and {len(d.alertable) - top} more")
    kinds = ", ".join(f"{kind}: {n}" for kind, n in d.counts_by_kind.items()) or "none"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Billing reconciliation findings"}},
        *_warning_blocks(warnings),
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Run* `{run_id}`\n*Critical:* {sev['critical']}   *Warning:* {sev['warning']}\n"
            f"*New:* {len(d.new)}   *Still open:* {len(d.still_open)}   *Resolved since last run:* {d.resolved}\n"
            f"*By kind:* {kinds}")}},
    ]
    if failed_checks:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Failed checks:* " + ", ".join(
            f"`{c}`" for c in failed_checks)}})
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Top findings*\n" + "\n".join(lines)}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|Open the run in Dagster>"}})
    return Alert(text, blocks)


# Lifecycle statuses (billing_domain.services.lifecycle) the alert reads; named here so alerts stay plain data.
LISTED_STATUSES = ("new", "escalated")  # the only ones named one by one in a message
COUNTED_STATUSES = ("open", "acknowledged", "accepted", "resolved")  # the daily summary counts these


def lifecycle_alert(run_id: str, findings: Sequence[Finding], statuses: Mapping[tuple[str, str, str], str],
                    severities: Mapping[tuple[str, str, str], str], ui_base_url: str, *,
                    failed_checks: Sequence[str] = (), top: int = TOP_FINDINGS,
                    warnings: Sequence[str] = ()) -> Alert | None:
    """The run's message by the finding lifecycle: new and escalated findings named, the rest counted.

    None when every warning or critical finding is accepted (or there is none): an accepted finding
    is never alerted. `statuses`/`severities` are the run's lifecycle (resolved identities included). The run's
    `warnings` (an event topic that can lose events) are never accepted: they alone make a message.
    """
    alertable = sorted((f for f in findings if f.severity != Severity.INFO),
                       key=lambda f: (SEVERITY_RANK[f.severity], f.kind.value, f.entity_id))
    status_of = {f.key: statuses.get(f.key, "new") for f in alertable}
    if all(s == "accepted" for s in status_of.values()) and not warnings:
        return None
    count = Counter(status_of.values())
    count["resolved"] = sum(1 for k, s in statuses.items() if s == "resolved" and severities.get(k) != "info")
    listed = [f for f in alertable if status_of[f.key] in LISTED_STATUSES]
    standing = [f for f in alertable if status_of[f.key] != "accepted"]
    sev = Counter(f.severity.value for f in standing)
    url = run_url(ui_base_url, run_id)
    text = _warned(warnings) + (
            f"Billing reconciliation {run_id}: {sev['critical']} critical, {sev['warning']} warning findings "
            f"({count['new']} new, {count['open']} still open, {count['escalated']} escalated, "
            f"{count['acknowledged']} acknowledged, {count['accepted']} accepted, {count['resolved']} resolved). "
            f"{url}")
    lines = [f"• `{f.severity.value}` *{f.kind.value}* {f.entity_type} `{f.entity_id}` "
             f"({status_of[f.key].upper()}): {_short(f.detail)}" for f in listed[:top]]
    if len(listed) > top:
        lines.append(f"… and {len(listed) - top} more")
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(f.kind.value for f in standing).items())) or "none"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Billing reconciliation findings"}},
        *_warning_blocks(warnings),
        {"type": "section", "text": {"type": "mrkdwn", "text": (
            f"*Run* `{run_id}`\n*Critical:* {sev['critical']}   *Warning:* {sev['warning']}\n"
            f"*New:* {count['new']}   *Escalated:* {count['escalated']}\n"
            f"*Daily summary:* still open {count['open']}, acknowledged {count['acknowledged']}, "
            f"accepted {count['accepted']}, resolved {count['resolved']}\n*By kind:* {kinds}")}},
    ]
    if failed_checks:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Failed checks:* " + ", ".join(
            f"`{c}`" for c in failed_checks)}})
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*New and escalated findings*\n" + "\n".join(lines)}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|Open the run in Dagster>"}})
    return Alert(text, blocks)


def run_failure_alert(job_name: str, run_id: str, error: str | None, ui_base_url: str) -> Alert:
    url = run_url(ui_base_url, run_id)
    reason = _short(error or "no error message", 500)
    text = f"Dagster run {run_id} of job {job_name} failed: {reason} {url}"
    return Alert(text, [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Job `{job_name}` failed*\n{reason}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|Open the run in Dagster>"}},
    ])


def auto_repair_refused_alert(run_id: str, counts: dict[str, int], cap: int, ui_base_url: str) -> Alert:
    url = run_url(ui_base_url, run_id)
    total = sum(counts.values())
    per_type = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()))
    text = (f"Auto-repair skipped after run {run_id}: {total} entities to rebuild ({per_type}) exceed the cap of "
            f"{cap}. Review and launch rebuild_accounts / rebuild_transactions by hand. {url}")
    return Alert(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}])


WARNING_HEADLINE = "EVENT LOG CAN LOSE EVENTS"


def _warned(warnings: Sequence[str]) -> str:
    """The text's opening when the run carries warnings: before the counts, so no preview hides it."""
    return f":warning: {WARNING_HEADLINE}: {'; '.join(_short(w, 300) for w in warnings)}. " if warnings else ""


def _warning_blocks(warnings: Sequence[str]) -> list[dict[str, Any]]:
    if not warnings:
        return []
    lines = "\n".join(f"• {_short(w, 500)}" for w in warnings)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": (
        f":warning: *{WARNING_HEADLINE}*: the replay cannot be trusted to hold every event until the topics keep "
        f"every event forever (`cleanup.policy=delete`, `retention.ms=-1`, `retention.bytes=-1`).\n{lines}")}}]


def _short(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
