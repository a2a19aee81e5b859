"""The admin API with a server down mid-service: a 503 naming the server (password masked) and what to check,
within seconds, and one log line rather than a driver's traceback per request (issue 18.1).

The app is served by a real uvicorn; the servers that are up are the test session's real ones, the one that is
down is a port nothing listens on. Before, a database that stopped answering was a 500 "unexpected server error".
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from support.admin_api_servers import call, serve_in_thread
from support.tcp_proxy import free_port

from billing_api.app import create_app
from billing_api.settings import ApiSettings
from billing_domain.bootstrap import Services, open_services, wire
from billing_domain.config import Settings, Topics

READ_TOKEN = f"read-{secrets.token_hex(16)}"
PASSWORD = f"pw-{secrets.token_hex(6)}"
CALL_TIMEOUT_S = 30  # an unreachable server must answer long before this
READS = ("/api/v1/admin/accounts/acc-1/reconcile", "/api/v1/admin/transactions/stuck",
         "/api/v1/admin/accounts/accounting-equation")


@pytest.fixture
def settings(servers: Any, topics: Topics, database_url: str) -> Settings:
    return replace(Settings.from_env().with_servers(servers.bootstrap_servers, database_url), topics=topics,
                   topic_partitions=3)


@pytest.fixture
def api_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("billing_api")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def serve(services: Services) -> Any:
    return serve_in_thread(create_app(ApiSettings(read_token=READ_TOKEN), services))


@pytest.mark.parametrize("path", READS)
def test_a_database_that_stopped_answering_is_a_503_naming_it(settings: Settings, path: str,
                                                              api_log: list[logging.LogRecord]) -> None:
    port = free_port()
    down = settings.with_servers(settings.kafka_bootstrap_servers or "",
                                 f"postgresql://billing:{PASSWORD}@127.0.0.1:{port}/billing")
    with serve(wire(down, interactive=True)) as url:
        answer = call(url, "GET", path, token=READ_TOKEN, timeout=CALL_TIMEOUT_S)

    assert answer.status == 503, answer.body
    assert answer.body["error"] == "database_unavailable"
    assert f"PostgreSQL at postgresql://billing:***@127.0.0.1:{port}/billing" in answer.body["message"]
    assert "Connection refused" in answer.body["message"] and PASSWORD not in str(answer.body)
    assert all(r.exc_info is None for r in api_log), "a server that is down is no bug: no traceback in the log"
    assert all(PASSWORD not in r.getMessage() for r in api_log)


def test_a_broker_that_stopped_answering_is_a_503_naming_it(settings: Settings) -> None:
    services = open_services(settings, interactive=True)  # prepared while the broker is up, as the API's are
    port = free_port()
    services.event_store.close()
    services.event_store = wire(settings.with_servers(f"127.0.0.1:{port}", settings.database_url or ""),
                                interactive=True).event_store
    try:
        with serve(services) as url:
            answer = call(url, "GET", READS[0], token=READ_TOKEN, timeout=CALL_TIMEOUT_S)
    finally:
        services.close()

    assert answer.status == 503, answer.body
    assert answer.body["error"] == "event_store_unavailable"
    assert f"127.0.0.1:{port}" in answer.body["message"]
