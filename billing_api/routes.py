"""The original engine's admin endpoints, `/api/v1/admin/...`: reads answer directly, rebuilds launch Dagster jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from billing_api.audit import note
from billing_api.auth import reject_unknown_query, require_read, require_write, token_name
from billing_api.dagster_client import DagsterClient
from billing_api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from billing_api.queries import Reads
from billing_api.schemas import (
    ID_MAX,
    ID_PATTERN,
    AccountingEquation,
    EntityReconciliation,
    LaunchedRun,
    RebuildAllRequest,
    RebuildRequest,
    ReconcileAllSummary,
    RunStatus,
    StuckTransactions,
)
from billing_api.settings import ApiSettings
from billing_domain.config import DEFAULT_STUCK_AFTER_MINUTES, MAX_STUCK_MINUTES
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.operators import API_TOKEN_TAG, DECLARED_ACTOR_TAG
from billing_domain.services.rebuild import RebuildSelection, validate_rebuild_request

PREFIX = "/api/v1/admin"
JOBS = {"account": "rebuild_accounts", "transaction": "rebuild_transactions"}
DEFAULT_ACTOR = "admin-api"
EntityType = Literal["account", "transaction"]

reads = APIRouter(prefix=PREFIX, dependencies=[Depends(require_read), Depends(reject_unknown_query)],
                  responses=ERROR_RESPONSES)
writes = APIRouter(prefix=PREFIX, dependencies=[Depends(require_write), Depends(reject_unknown_query)], responses={
    **ERROR_RESPONSES,
    502: {"model": ErrorBody, "description": "Dagster refused the launch (its message is passed on)."},
    503: {"model": ErrorBody, "description": "The Dagster webserver is unreachable."}})

AccountId = Annotated[str, Path(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN, description="The account's id.")]
TransactionId = Annotated[str, Path(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN,
                                    description="The transaction's id.")]
RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="A Dagster run id.")]


def _reads(request: Request) -> Reads:
    reads_service: Reads = request.app.state.reads
    return reads_service


# --- accounts ------------------------------------------------------------------------------------
@reads.get("/accounts/reconcile-all", response_model=ReconcileAllSummary, tags=["accounts"],
           summary="Reconcile every account (and the ledger identities) against one cut of the log")
async def reconcile_all_accounts(request: Request) -> ReconcileAllSummary:
    return await run_in_threadpool(_reads(request).reconcile_type, "account")


@reads.get("/accounts/accounting-equation", response_model=AccountingEquation, tags=["accounts"],
           summary="The contract's accounting identities, per currency")
async def accounting_equation(request: Request) -> AccountingEquation:
    return await run_in_threadpool(_reads(request).accounting_equation)


@reads.get("/accounts/{account_id}/reconcile", response_model=EntityReconciliation, tags=["accounts"],
           summary="Reconcile one account: its events against its projection row")
async def reconcile_account(request: Request, account_id: AccountId) -> EntityReconciliation:
    return await run_in_threadpool(_reads(request).reconcile_one, "account", account_id)


# --- transactions --------------------------------------------------------------------------------
@reads.get("/transactions/reconcile-all", response_model=ReconcileAllSummary, tags=["transactions"],
           summary="Reconcile every transfer saga: status, fields, money per transfer, stuck transfers")
async def reconcile_all_transactions(request: Request) -> ReconcileAllSummary:
    return await run_in_threadpool(_reads(request).reconcile_type, "transaction")


@reads.get("/transactions/stuck", response_model=StuckTransactions, tags=["transactions"],
           summary="Transfers pending longer than `minutes` when the projections were read (the run's clock)")
async def stuck_transactions(request: Request, minutes: Annotated[float | None, Query(
        gt=0, le=MAX_STUCK_MINUTES,
        description="Pending longer than this many minutes is stuck (default: the server's "
                    f"BILLING_STUCK_AFTER_MINUTES, itself {DEFAULT_STUCK_AFTER_MINUTES:g} when unset).",
        )] = None,
                             ) -> StuckTransactions:
    return await run_in_threadpool(_reads(request).stuck, minutes)


@reads.get("/transactions/{transaction_id}/reconcile", response_model=EntityReconciliation, tags=["transactions"],
           summary="Reconcile one transfer saga: its events and its money against its projection row")
async def reconcile_transaction(request: Request, transaction_id: TransactionId) -> EntityReconciliation:
    return await run_in_threadpool(_reads(request).reconcile_one, "transaction", transaction_id)


# --- runs ----------------------------------------------------------------------------------------
ENDED = ("SUCCESS", "FAILURE", "CANCELED")


@reads.get("/runs/{run_id}", response_model=RunStatus, tags=["runs"],
           summary="The status of a Dagster run this API launched (or any run); a rebuild's result once it ended",
           description="A rebuild run that ended also answers `rebuild`: its summary and, per entity changed (or "
                       "that a dry run would change), refused or kept, the row before and after and the outcome "
                       "in words, read back from its audit record; `run_url` opens it in the Dagster UI.")
async def run_status(request: Request, run_id: RunId) -> RunStatus:
    client: DagsterClient = request.app.state.dagster
    settings: ApiSettings = request.app.state.api_settings
    info = await run_in_threadpool(client.run, run_id)
    if info is None:
        raise ApiError(404, "not_found", f"Dagster has no run {run_id!r}")
    rebuild = None
    if info.status in ENDED and info.job in JOBS.values():  # a running rebuild's record may be only its plan
        rebuild = await run_in_threadpool(_reads(request).rebuild_of_run, info.run_id)
    return RunStatus(run_id=info.run_id, status=info.status, job=info.job, run_url=settings.run_url(info.run_id),
                     rebuild=rebuild)


# --- rebuilds ------------------------------------------------------------------------------------
REBUILD_DOC = "Launches the Dagster job `{job}`; answers 202 with its run id and UI link. Dry run unless dry_run=false."


@writes.post("/accounts/{account_id}/rebuild", response_model=LaunchedRun, status_code=202, tags=["accounts"],
             summary="Rebuild one account's projection from its events",
             description=REBUILD_DOC.format(job=JOBS["account"]))
async def rebuild_account(request: Request, account_id: AccountId, body: Annotated[RebuildRequest, Body()]
                          ) -> LaunchedRun:
    return await _launch_rebuild(request, "account", RebuildSelection(ids=(account_id,)), body)


@writes.post("/accounts/rebuild-all", response_model=LaunchedRun, status_code=202, tags=["accounts"],
             summary="Rebuild every account projection (use with caution)",
             description=REBUILD_DOC.format(job=JOBS["account"]))
async def rebuild_all_accounts(request: Request, body: Annotated[RebuildAllRequest, Body()]) -> LaunchedRun:
    return await _launch_rebuild(request, "account", RebuildSelection(all=True), body)


@writes.post("/transactions/{transaction_id}/rebuild", response_model=LaunchedRun, status_code=202,
             tags=["transactions"], summary="Rebuild one transaction's projection from its events",
             description=REBUILD_DOC.format(job=JOBS["transaction"]))
async def rebuild_transaction(request: Request, transaction_id: TransactionId,
                              body: Annotated[RebuildRequest, Body()]) -> LaunchedRun:
    return await _launch_rebuild(request, "transaction", RebuildSelection(ids=(transaction_id,)), body)


@writes.post("/transactions/rebuild-all", response_model=LaunchedRun, status_code=202, tags=["transactions"],
             summary="Rebuild every transaction projection (use with caution)",
             description=REBUILD_DOC.format(job=JOBS["transaction"]))
async def rebuild_all_transactions(request: Request, body: Annotated[RebuildAllRequest, Body()]) -> LaunchedRun:
    return await _launch_rebuild(request, "transaction", RebuildSelection(all=True), body)


async def _launch_rebuild(request: Request, entity_type: EntityType, selection: RebuildSelection,
                          body: RebuildRequest) -> LaunchedRun:
    actor = body.actor if body.actor is not None else DEFAULT_ACTOR
    note(request, reason=body.reason, dry_run=body.dry_run, actor=actor)
    try:  # the domain's own checks, before anything is launched
        if not selection.all and not selection.ids:  # the API never asks for the default selection
            raise ConfigurationError("ids: no id given; name an entity, or use rebuild-all")
        validate_rebuild_request(entity_type, selection, body.reason, actor)
    except ConfigurationError as exc:
        field = str(exc).split(":", 1)[0]
        raise ApiError(422, "validation_error", str(exc), field=f"body.{field}") from exc
    for entity_id in selection.ids:
        if not await run_in_threadpool(_reads(request).exists, entity_type, entity_id):
            raise ApiError(404, "not_found", f"no {entity_type} {entity_id!r}: no events and no projection row")
    delete_orphans = isinstance(body, RebuildAllRequest) and body.delete_orphans
    config: dict[str, Any] = {"reason": body.reason, "all": selection.all, "dry_run": body.dry_run,
                              "delete_orphans": delete_orphans, "actor": actor}
    if selection.ids:  # the job refuses an empty list (it is not "the default selection")
        config["ids"] = list(selection.ids)
    client: DagsterClient = request.app.state.dagster
    settings: ApiSettings = request.app.state.api_settings
    job = JOBS[entity_type]
    run = await run_in_threadpool(client.launch, job, {"ops": {f"rebuild_{entity_type}_projections": {
        "config": config}}}, {"billing/requested_via": "admin-api", DECLARED_ACTOR_TAG: actor[:200],
                               API_TOKEN_TAG: token_name(request)})  # the run's operator: the token's name
    note(request, dagster_run_id=run.run_id)
    return LaunchedRun(run_id=run.run_id, run_url=settings.run_url(run.run_id),
                       status_url=f"{PREFIX}/runs/{run.run_id}", job=job, status=run.status,
                       entity_type=entity_type, ids=list(selection.ids), all=selection.all, dry_run=body.dry_run,
                       actor=actor)
