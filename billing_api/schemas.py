"""The API's request and response bodies: close to the original engine's shapes, documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from billing_domain.core.findings import Kind, Severity

# Ids are the engine's aggregate ids: any printable text (no control characters, which PostgreSQL or a
# log line would mangle), at most 256 characters.
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_MAX = 256


class FindingOut(BaseModel):
    entity_type: str = Field(description="account | transaction | ledger")
    entity_id: str
    kind: Kind
    severity: Severity
    detail: str
    expected: dict[str, Any] | None = Field(default=None, description="What the events say.")
    actual: dict[str, Any] | None = Field(default=None, description="What the projection says.")
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    event_id: str | None = None


class EntityReconciliation(BaseModel):
    """One entity: `match` is false when any issue is worse than `info` (a lagging row still matches)."""

    entity_type: str
    entity_id: str
    match: bool
    issues: list[FindingOut]
    run_id: str = Field(description="The report's id in billing_recon.recon_run.")
    replay_mode: str = Field(description="full | incremental (resumed from a checkpoint)")


class ReconcileAllSummary(BaseModel):
    """Every entity of a type against one cut of the log (`matches`/`total`, as the original engine said)."""

    entity_type: str
    run_id: str
    total: int
    matches: int
    mismatches: int
    lagging: int = Field(description="Entities whose only finding is `lagging` (behind, not corrupt); they match.")
    by_kind: dict[str, int]
    findings: list[FindingOut]
    replay_mode: str


class LedgerIdentityOut(BaseModel):
    currency: str
    identity: str
    description: str
    left: int
    right: int
    holds: bool


class AccountingEquation(BaseModel):
    run_id: str
    holds: bool
    identities: list[LedgerIdentityOut]
    findings: list[FindingOut]


class StuckTransactions(BaseModel):
    threshold_minutes: float
    count: int
    judged_at: str = Field(description="The run's clock when it read the projections: 'pending for' is measured "
                                       "to it, so a quiet engine does not stop time.")
    cut_time: str | None = Field(description="The time of the newest event read, for comparison.")
    transactions: list[FindingOut]


BLANK = {"reason": "say why you rebuild (it goes to the audit trail); it is blank",
         "actor": "name who asks for the rebuild, or leave it out; it is blank"}


class RebuildRequest(BaseModel):
    """A rebuild: why (required), whether to write (dry run by default) and who asks."""

    model_config = ConfigDict(extra="forbid")

    # The schema says what the service refuses (a blank reason or actor), so clients and fuzzers see it too;
    # `_printable` refuses it with the service's own words.
    reason: Annotated[str, Field(min_length=1, max_length=2_000, json_schema_extra={"pattern": r"\S"},
                                 description="Why; goes to the audit trail (not blank).")]
    dry_run: bool = Field(default=True, description="Show before/after only, write nothing (the default).")
    actor: Annotated[str | None, Field(default=None, min_length=1, max_length=200,
                                       json_schema_extra={"pattern": r"\S"},
                                       description="Who asks; defaults to 'admin-api' (not blank).")] = None

    @field_validator("reason", "actor")
    @classmethod
    def _printable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        if value is not None and not value.strip():
            raise ValueError(BLANK[info.field_name or ""])
        return value


class RebuildAllRequest(RebuildRequest):
    delete_orphans: bool = Field(default=False, description="Delete projection rows that have no events.")


class LaunchedRun(BaseModel):
    """A Dagster run launched for the request: follow it at `run_url` or through `status_url`."""

    run_id: str
    run_url: str
    status_url: str
    job: str
    status: str
    entity_type: str
    ids: list[str]
    all: bool
    dry_run: bool
    actor: str


class RebuildChangeOut(BaseModel):
    """One entity the rebuild changed, or would change, refused or kept: its row before and after."""

    entity_id: str
    action: str | None = Field(description="insert | update | reset_ahead | delete | refused | kept_orphan")
    outcome: str = Field(description="In words, with why: 'would be refused: the event stream is corrupt', "
                                     "'would be updated', 'fixed', 'kept: an orphan row (no events); ...'.")
    before: dict[str, Any] | None = Field(description="The projection row as read (null: there was none).")
    after: dict[str, Any] | None = Field(description="The row the events say it should be (null: none).")


class RebuildOutcome(BaseModel):
    """A rebuild run's result, read back from its audit record in `billing_recon.rebuild_audit`."""

    audit_id: int = Field(description="The audit record with the plan (the dry run's, or the pending one).")
    completion_id: int | None = Field(description="The record that completes the plan (a rebuild that wrote).")
    operation: str
    entity_type: str
    dry_run: bool
    outcome: str = Field(description="dry_run | nothing_to_do | applied | partial | failed | refused (another "
                                     "rebuild held the lock) | pending (interrupted: its writes are at most the plan)")
    summary: str = Field(description="The counts in words: '1 to update, 1 refused, 1 kept (orphan), 5 unchanged'.")
    counts: dict[str, int] = Field(description="Entities per action; refused and kept orphans counted apart.")
    written: int
    refused: dict[str, str] = Field(description="Refused entity ids and why (a corrupt stream, a broken rule).")
    kept: dict[str, str] = Field(description="Orphan rows kept (delete_orphans off), and why.")
    changes: list[RebuildChangeOut] = Field(description="Entities changed (or that would be), refused or kept, by "
                                                        "id; the first `changes_shown` of `changes_total`.")
    changes_total: int
    changes_shown: int
    error: str | None = None


class RunStatus(BaseModel):
    run_id: str
    status: str = Field(description="Dagster's run status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED...")
    job: str | None
    run_url: str = Field(description="The run in the Dagster UI: its logs, and every row of a large rebuild.")
    rebuild: RebuildOutcome | None = Field(default=None, description=(
        "Once a rebuild run has ended: its before/after and outcome per entity, from its audit record. Null "
        "while it runs, for other jobs, and for a run that failed before it planned (its config was refused)."))
