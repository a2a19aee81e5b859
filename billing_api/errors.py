"""One error shape for every 4xx/5xx answer: `{"error", "message", "field"?}`, the field named when known."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_domain.bootstrap import ServerUnavailableError, unavailable_database
from billing_domain.core.exceptions import (
    BillingError,
    ConcurrentOperationError,
    ConfigurationError,
    EventStoreUnavailableError,
)

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str = Field(description="A short machine-readable code: unauthorized, forbidden, not_found, "
                                   "validation_error, conflict, dagster_unavailable, dagster_error, "
                                   "event_store_unavailable, database_unavailable, internal.")
    message: str = Field(description="What went wrong, naming the field to fix where there is one.")
    field: str | None = Field(default=None, description="The request field at fault, e.g. 'body.reason'.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Every validation problem.")


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field
        self.headers = dict(headers or {})


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token, or not a known one."},
    403: {"model": ErrorBody, "description": "A read token on a write endpoint (or writes are disabled)."},
    404: {"model": ErrorBody, "description": "No such entity: no events and no projection row."},
    422: {"model": ErrorBody, "description": "Invalid input; `field` and `message` say which and why."},
    500: {"model": ErrorBody, "description": "An unexpected error (logged on the server)."},
    503: {"model": ErrorBody, "description": "Kafka, PostgreSQL or Dagster cannot be reached; the message "
                                             "names the server (password masked) and what to check."},
}


def _body(error: str, message: str, field: str | None = None, details: list[dict[str, Any]] | None = None
          ) -> dict[str, Any]:
    return ErrorBody(error=error, message=message, field=field, details=details).model_dump(exclude_none=True)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_problem(error: Mapping[str, Any]) -> dict[str, Any]:
    return {"field": _loc(error.get("loc", ())), "message": str(error.get("msg", "invalid")),
            "type": str(error.get("type", ""))}


def unavailable_database_of(request: Request, exc: BaseException) -> ServerUnavailableError | None:
    """The database that stopped answering, named from the app's settings; None for any other error."""
    settings = getattr(request.app.state, "settings", None)
    return unavailable_database(exc, settings) if settings is not None else None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.error, exc.message, exc.field), exc.status, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_validation_problem(e) for e in exc.errors()]
        first = problems[0] if problems else {"field": "request", "message": "invalid request"}
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5]) or "invalid request"
        return JSONResponse(_body("validation_error", message, first["field"], problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (not UTF-8, say): one answer for bad input
            return JSONResponse(_body("validation_error", "body: could not be parsed as UTF-8 JSON", "body"), 422)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return JSONResponse(_body(codes.get(exc.status_code, "http_error"), message), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(BillingError)
    async def domain_error(request: Request, exc: BillingError) -> JSONResponse:
        if isinstance(exc, ConfigurationError):
            field = str(exc).split(":", 1)[0] if ":" in str(exc) else None
            return JSONResponse(_body("validation_error", str(exc), field), 422)
        if isinstance(exc, ConcurrentOperationError):
            return JSONResponse(_body("conflict", str(exc)), 409)
        if isinstance(exc, EventStoreUnavailableError):
            return JSONResponse(_body("event_store_unavailable", str(exc)), 503)
        if isinstance(exc, ServerUnavailableError):
            return JSONResponse(_body("database_unavailable", str(exc)), 503)
        log.exception("domain error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal", f"{type(exc).__name__}: {exc}"), 500)

    # Handled by class (not by the catch-all below, which Starlette runs outside every middleware and then
    # re-raises), so that the audit sees the 503 and the server log gets one line, not a traceback.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        database_down = unavailable_database_of(request, exc)
        if database_down is None:
            log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
            return JSONResponse(_body("internal", "unexpected server error; see the server log"), 500)
        log.error("%s %s: %s", request.method, request.url.path, database_down)
        return JSONResponse(_body("database_unavailable", str(database_down)), 503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(_body("internal", "unexpected server error; see the server log"), 500)
