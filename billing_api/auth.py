"""Bearer tokens: one for reads, another for writes, compared in constant time.

A request's role (`read`, `write`, `anonymous`, `invalid`) and the token's name (the variable that holds it)
go to the audit, and a launched run carries the name as the operator who asked (tag `billing/api_token`);
the token itself never leaves this module.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match

from billing_api.errors import ApiError
from billing_api.settings import ApiSettings

Role = Literal["read", "write"]
bearer = HTTPBearer(auto_error=False, description="BILLING_API_TOKEN for reads; BILLING_API_WRITE_TOKEN for "
                                                  "writes (it also reads).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
CHALLENGE = {"WWW-Authenticate": "Bearer"}
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_NAMES: dict[str, str] = {"read": "BILLING_API_TOKEN", "write": "BILLING_API_WRITE_TOKEN"}


def _same(given: str, expected: str | None) -> bool:
    # compare_digest on bytes: its time does not depend on where the strings differ.
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def role_of(settings: ApiSettings, token: str) -> Role | None:
    is_write = _same(token, settings.write_token)
    is_read = _same(token, settings.read_token)
    return "write" if is_write else "read" if is_read else None


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _is_write(routes: Sequence[BaseRoute], request: Request) -> bool:
    """Does the request hit a write route? (A known path with another method is answered 405 later.)"""
    for route in routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return bool(set(getattr(route, "methods", None) or ()) & WRITE_METHODS)
    return False


def install_auth_gate(app: FastAPI, prefix: str, routes: Sequence[BaseRoute]) -> None:
    """Check the token before anything else reads the request (FastAPI parses a body before dependencies run),
    so a caller without the right token learns nothing but 401/403. The route dependencies below check again
    and declare the scheme in the OpenAPI schema."""

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith(prefix):
            return await call_next(request)
        try:
            role = _check(request, _bearer_token(request))
            if _is_write(routes, request):
                _need_write(request, role)
        except ApiError as exc:
            return JSONResponse({"error": exc.error, "message": exc.message}, exc.status, headers=exc.headers or None)
        return await call_next(request)


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Role:
    return _check(request, credentials.credentials if credentials is not None else None)


def _check(request: Request, token: str | None) -> Role:
    settings: ApiSettings = request.app.state.api_settings
    if not token:
        request.state.role = "anonymous"
        raise ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>'",
                       headers=CHALLENGE)
    role = role_of(settings, token)
    if role is None:
        request.state.role = "invalid"
        raise ApiError(401, "unauthorized", "invalid bearer token", headers=CHALLENGE)
    request.state.role = role
    request.state.token_name = TOKEN_NAMES[role]
    return role


def token_name(request: Request) -> str:
    """The name of the token this request authenticated with: the operator of what it launches."""
    name: str = request.state.token_name
    return name


def require_read(request: Request, credentials: Credentials) -> Role:
    """Any valid token reads."""
    return _authenticate(request, credentials)


def require_write(request: Request, credentials: Credentials) -> Role:
    """Only the write token writes; the read token is known but not allowed (403)."""
    return _need_write(request, _authenticate(request, credentials))


def _need_write(request: Request, role: Role) -> Role:
    if role != "write":
        settings: ApiSettings = request.app.state.api_settings
        why = ("writes are disabled: BILLING_API_WRITE_TOKEN is not set on the server"
               if settings.write_token is None else "this token may only read; writes need the write token")
        raise ApiError(403, "forbidden", why)
    return role


def reject_unknown_query(request: Request) -> None:
    """An admin call with a misspelt parameter (`?minute=10`) is refused, not silently run with the default."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    known = _query_names(dependant) if dependant is not None else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ApiError(422, "validation_error", f"query.{unknown[0]}: unknown query parameter (allowed: {allowed})",
                       field=f"query.{unknown[0]}")


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
