"""`billing-recon api`: serve the admin API with uvicorn (registered by billing_cli.app)."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("api")
    def serve(host: Annotated[str, typer.Option(help="Address to listen on.", envvar="BILLING_API_HOST")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="Port to listen on.", envvar="BILLING_API_PORT")] = 8080,
              ) -> None:
        """Serve the original engine's admin endpoints (/api/v1/admin/...), Swagger UI at /api-docs.

        Needs BILLING_API_TOKEN (reads) and, for rebuilds, BILLING_API_WRITE_TOKEN; rebuilds launch Dagster
        jobs through BILLING_DAGSTER_GRAPHQL_URL (default: BILLING_DAGSTER_UI_URL + /graphql).
        """
        import uvicorn  # imported here: the other commands do not pay for the web stack

        from billing_api.app import create_app
        from billing_api.settings import ApiSettings
        from billing_domain.core.exceptions import ConfigurationError

        try:
            settings = ApiSettings.from_env(os.environ)
        except ConfigurationError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", proxy_headers=False)
