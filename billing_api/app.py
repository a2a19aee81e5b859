"""The FastAPI application: the admin routes, bearer auth, the audit trail, one error shape, Swagger at /api-docs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from billing_api.audit import ApiAuditStore, install_audit
from billing_api.auth import install_auth_gate
from billing_api.dagster_client import DagsterClient
from billing_api.errors import install_error_handlers
from billing_api.queries import Reads
from billing_api.routes import PREFIX, reads, writes
from billing_api.settings import ApiSettings
from billing_domain.bootstrap import Services, open_services

log = logging.getLogger(__name__)
DESCRIPTION = """
The original billing engine's admin endpoints, served by the reconciliation pipeline.

* **Reads** (reconcile one, reconcile all, stuck transfers, the accounting equation) answer from the
  reconciliation services directly and store their report in `billing_recon`.
* **Rebuilds** launch the Dagster jobs `rebuild_accounts` / `rebuild_transactions` and answer `202`
  with the run id and its link in the Dagster UI. They are dry runs unless `"dry_run": false`.
* Every call needs `Authorization: Bearer <token>`: `BILLING_API_TOKEN` reads, `BILLING_API_WRITE_TOKEN`
  reads and writes. Every call is audited in `billing_recon.api_audit`.
"""


def create_app(settings: ApiSettings | None = None, services: Services | None = None) -> FastAPI:
    """The app. Without `services`, they are opened at startup from the environment and closed at shutdown."""
    settings = settings or ApiSettings.from_env()
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        opened = services or open_services()
        _attach(app, opened)
        try:
            yield
        finally:
            if owned:
                opened.close()

    app = FastAPI(title="Billing reconciliation admin API", version="1.0.0", description=DESCRIPTION,
                  docs_url="/api-docs", openapi_url="/api-docs/openapi.json", redoc_url=None, lifespan=lifespan)
    app.state.api_settings = settings
    app.state.dagster = DagsterClient(settings.dagster_graphql_url, location=settings.dagster_location,
                                      timeout_s=settings.dagster_timeout_s)
    app.state.audit = None
    if services is not None:
        _attach(app, services)
    install_error_handlers(app)
    app.state.admin_routes = [*reads.routes, *writes.routes]  # our own APIRoutes, to match before routing
    install_auth_gate(app, PREFIX, app.state.admin_routes)
    install_audit(app, lambda: app.state.audit)  # added last: outermost, so it sees the gate's refusals too
    app.include_router(reads)
    app.include_router(writes)
    return app


def _attach(app: FastAPI, services: Services) -> None:
    app.state.reads = Reads(services)
    app.state.audit = ApiAuditStore(services.recon_store.engine)
