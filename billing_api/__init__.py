"""The original engine's admin endpoints (`/api/v1/admin/...`) served over HTTP with FastAPI.

Reads answer from the domain services; rebuilds launch the Dagster rebuild jobs through the
webserver's GraphQL API. No Dagster import here: the API talks to Dagster over HTTP only.
"""

from billing_api.app import create_app

__all__ = ["create_app"]
