"""Every call to the admin API leaves one row in `billing_recon.api_audit`: role, token name, endpoint, params,
status, time, and the database role that wrote it.

The role is the token's (`read`, `write`) or `anonymous` / `invalid`, the token name the variable that holds it
(`BILLING_API_WRITE_TOKEN`); the token itself is never stored. Rows go in only through the SECURITY DEFINER
function `billing_recon.append_api_audit`, which records `session_user` (migration 0401).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from billing_api.errors import unavailable_database_of

log = logging.getLogger(__name__)
SCHEMA = "billing_recon"
MAX_TEXT = 2_000  # longer strings (fuzzers, mistakes) are cut in the trail


@dataclass(slots=True)
class ApiAuditEntry:
    role: str
    method: str
    endpoint: str
    path: str
    status: int
    duration_ms: float
    params: dict[str, Any] = field(default_factory=dict)
    client: str | None = None
    dagster_run_id: str | None = None
    token_name: str | None = None


class ApiAuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, entry: ApiAuditEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                f"SELECT {SCHEMA}.append_api_audit(:role, :token_name, :method, :endpoint, :path, "
                "CAST(:params AS jsonb), :status, :duration_ms, :client, :run_id)"),
                {"role": entry.role, "token_name": entry.token_name, "method": entry.method,
                 "endpoint": _clean(entry.endpoint),
                 "path": _clean(entry.path), "params": json.dumps(_clean(entry.params), default=str),
                 "status": entry.status, "duration_ms": entry.duration_ms, "client": entry.client,
                 "run_id": entry.dagster_run_id})

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.api_audit ORDER BY audit_id DESC LIMIT :n"),
                                {"n": limit}).mappings().all()
        return [dict(r) for r in rows]


def _clean(value: Any) -> Any:
    """PostgreSQL text and jsonb hold no NUL character; a fuzzer sends them. Keep the rest, cut what is huge."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")[:MAX_TEXT]
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def note(request: Request, **params: Any) -> None:
    """Let an endpoint add what the middleware cannot see (a parsed body, a launched run) to its audit row."""
    request.state.audit_params = {**getattr(request.state, "audit_params", {}), **params}


def install_audit(app: FastAPI, store: Callable[[], ApiAuditStore | None]) -> None:
    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            audit_store = store()
            if audit_store is not None:
                entry = _entry(request, status, (time.perf_counter() - started) * 1000)
                try:
                    await run_in_threadpool(audit_store.write, entry)
                except Exception as exc:  # the answer is already decided; say loudly that its trail is missing
                    _log_missing_trail(request, entry, exc)


def _log_missing_trail(request: Request, entry: ApiAuditEntry, exc: Exception) -> None:
    database_down = unavailable_database_of(request, exc)
    if database_down is not None:  # one line: the answer (a 503) already says which server to fix
        log.error("could not write the API audit row for %s %s (status %s): %s", entry.method, entry.endpoint,
                  entry.status, database_down)
        return
    log.exception("could not write the API audit row for %s %s (status %s)", entry.method, entry.endpoint,
                  entry.status)


def _route_of(request: Request) -> Any:
    """The route a request was meant for, when it was refused before routing (by the token gate)."""
    for route in getattr(request.app.state, "admin_routes", ()):
        if route.matches(request.scope)[0] != Match.NONE:
            return route
    return None


def _entry(request: Request, status: int, duration_ms: float) -> ApiAuditEntry:
    route = request.scope.get("route") or _route_of(request)
    extra = dict(getattr(request.state, "audit_params", {}))
    run_id = extra.pop("dagster_run_id", None)
    params: dict[str, Any] = {"path": dict(request.scope.get("path_params") or {}),
                              "query": dict(request.query_params)}
    if extra:
        params["body"] = extra
    return ApiAuditEntry(role=getattr(request.state, "role", "anonymous"),
                         token_name=getattr(request.state, "token_name", None), method=request.method,
                         endpoint=getattr(route, "path", None) or request.url.path, path=request.url.path,
                         status=status, duration_ms=round(duration_ms, 3), params=params,
                         client=request.client.host if request.client else None, dagster_run_id=run_id)
