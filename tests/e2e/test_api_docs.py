"""The admin API's Swagger UI in a real browser on a closed network: /api-docs renders its operations from
the package's own copy of Swagger UI, and nothing the page loads comes from anywhere but the API itself.

The session's Chromium sends everything but loopback to a proxy that does not exist (tests/e2e/conftest.py),
as on an operator's closed network: a page that needs a CDN stays blank there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.admin_api_servers import create_database, serve_in_thread
from ui_support import Page

from billing_api.app import create_app
from billing_api.settings import ApiSettings
from billing_domain.bootstrap import open_services
from billing_domain.config import Settings, Topics

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ADMIN = "/api/v1/admin"
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"  # FastAPI's default
OPERATIONS = ("/accounts/{account_id}/reconcile", "/accounts/reconcile-all", "/accounts/accounting-equation",
              "/transactions/stuck", "/accounts/{account_id}/rebuild", "/transactions/rebuild-all")


@pytest.fixture(scope="module")
def api(servers: Any) -> Iterator[str]:
    services = open_services(Settings(kafka_bootstrap_servers=servers.bootstrap_servers,
                                      database_url=create_database(servers.database_url),
                                      topics=Topics.with_prefix(f"docs{uuid.uuid4().hex[:8]}."), topic_partitions=1))
    try:
        with serve_in_thread(create_app(ApiSettings(read_token=f"read-{uuid.uuid4().hex}"), services)) as url:
            yield url
    finally:
        services.close()


def test_api_docs_render_every_operation_with_the_network_closed(keep_failure: None, driver: Any, api: str,
                                                                 tmp_path: Path) -> None:
    page = Page(driver, api)
    # The browser really is offline: the CDN's copy of Swagger UI cannot be fetched.
    reached = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {mode: 'no-cors'}).then(() => done('reached'), e => done('refused: ' + e));",
        CDN_SCRIPT)
    assert reached.startswith("refused"), reached

    driver.get(f"{api}/api-docs")
    page.find("//*[contains(@class, 'title')][contains(normalize-space(), 'Billing reconciliation admin API')]")
    shown = page.wait_for(lambda: {e.text.replace("\u200b", "") for e in
                                   page.find_all("//*[contains(@class, 'opblock-summary-path')]")} or None,
                          "the operations")
    assert {f"{ADMIN}{path}" for path in OPERATIONS} <= shown, shown
    assert len(shown) >= 10

    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(f"{api}/") for url in loaded), loaded
    assert f"{api}/api-docs/assets/swagger-ui-bundle.js" in loaded
    page.screenshot(tmp_path, "api-docs")
