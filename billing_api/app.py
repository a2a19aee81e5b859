"""The FastAPI application: the admin routes, bearer auth, the audit trail, one error shape, Swagger at /api-docs.

Swagger UI's script, stylesheet and favicon come from the pinned `fastapi-offline` wheel and are served under
/api-docs/assets, so the docs page works on a closed network (no CDN, no validator badge, no remote favicon).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from billing_api.audit import ApiAuditStore, install_audit
from billing_api.auth import install_auth_gate
from billing_api.dagster_client import DagsterClient
from billing_api.errors import install_error_handlers
from billing_api.queries import Reads
from billing_api.routes import PREFIX, reads, writes
from billing_api.settings import ApiSettings
from billing_domain.bootstrap import Services, open_services

log = logging.getLogger(__name__)
DOCS_URL = "/api-docs"
DOCS_ASSETS_URL = f"{DOCS_URL}/assets"
SWAGGER_UI_ASSETS = files("fastapi_offline") / "static"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
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
        opened = services or open_services(interactive=True)
        _attach(app, opened)
        try:
            yield
        finally:
            if owned:
                opened.close()

    app = FastAPI(title="Billing reconciliation admin API", version="1.0.0", description=DESCRIPTION,
                  docs_url=None, openapi_url=f"{DOCS_URL}/openapi.json", redoc_url=None, lifespan=lifespan)
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
    _install_docs(app)
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /api-docs from the package's own copy of its assets."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(SWAGGER_UI_ASSETS)), name="api-docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None})  # the default badge asks a remote validator


def _attach(app: FastAPI, services: Services) -> None:
    app.state.settings = services.settings
    app.state.reads = Reads(services)
    app.state.audit = ApiAuditStore(services.recon_store.engine)
