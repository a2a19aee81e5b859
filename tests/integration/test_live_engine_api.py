"""The admin API's reads while the engine runs (issue 13): only `lagging` during traffic, clean after catch-up.

The API (uvicorn on a real socket) answers from the same services as the CLI; the stand-in engine appends
and applies in its own process meanwhile. The reads need no Dagster: the rebuild endpoints are tested in
test_admin_api.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.admin_api_servers import Answer, call, serve_in_thread
from support.live_engine import EngineConfig, running_engine
from test_live_engine import described, live, newest_row

from billing_api.app import create_app
from billing_api.settings import ApiSettings
from billing_domain.adapters.postgres.projection_store import ProjectionStore
from billing_domain.bootstrap import open_services
from billing_domain.config import Settings

__all__ = ["live"]  # the fixture, shared with test_live_engine
TOKEN = f"read-{uuid.uuid4().hex}"
ADMIN = "/api/v1/admin"
READS = ("/accounts/reconcile-all", "/transactions/reconcile-all", "/accounts/accounting-equation",
         "/transactions/stuck?minutes=5")


@pytest.fixture
def api(live: EngineConfig) -> Iterator[str]:
    services = open_services(Settings(kafka_bootstrap_servers=live.bootstrap_servers, database_url=live.database_url,
                                      topics=live.topics, topic_partitions=3))
    try:
        with serve_in_thread(create_app(ApiSettings(read_token=TOKEN), services)) as url:
            yield url
    finally:
        services.close()


def _get(api: str, path: str) -> Answer:
    answer = call(api, "GET", f"{ADMIN}{path}", token=TOKEN, timeout=120)
    assert answer.status == 200, (path, answer.body)
    return answer


def _not_lagging(body: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    listed = body.get("findings", []) + body.get("issues", []) + body.get("transactions", [])
    return [(f["entity_type"], f["entity_id"], f["kind"], f["severity"], f["detail"]) for f in listed
            if (f["kind"], f["severity"]) != ("lagging", "info")]


def test_the_api_reads_only_lagging_while_the_engine_runs_and_nothing_after(
        live: EngineConfig, api: str, projection_store: ProjectionStore) -> None:
    during: dict[str, dict[str, Any]] = {}
    with running_engine(live) as engine:
        for path in READS:
            engine.wait_for_more(30)
            during[path] = _get(api, path).body
        for entity_type in ("account", "transaction"):
            engine.wait_for_more(30)
            path = f"/{entity_type}s/{newest_row(projection_store, entity_type)}/reconcile"
            during[path] = _get(api, path).body
        engine.stop()

    false_alarms = {path: _not_lagging(body) for path, body in during.items() if _not_lagging(body)}
    assert false_alarms == {}, "\n".join(f"{p}: {described(f)}" for p, f in false_alarms.items())
    assert during["/accounts/accounting-equation"]["holds"] is True
    assert all(body["match"] for path, body in during.items() if path.endswith("/reconcile"))
    for path in READS:
        body = _get(api, path).body
        assert _not_lagging(body) == [] and not [f for f in body.get("findings", []) if f["kind"] == "lagging"], path
