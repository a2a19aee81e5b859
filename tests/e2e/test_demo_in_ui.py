"""`make demo`, then `make ui`: the UI shows the demo's runs and the reports they materialized.

The demo runs as `make demo` runs it, from a working folder, on this session's servers (a fresh database and
topics); then a dagster-webserver opens that folder's .dagster_home, made as `make ui` makes it (the folder,
the repository's dagster.yaml copied in). No daemon: nothing here launches a run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.admin_api_servers import create_database
from support.dagster_servers import DagsterProcess, free_port, webserver_command, write_workspace
from ui_support import LOCATION, REPO, Page, skip_community_dialog, wait_until_loaded

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DEMO_RUN = re.compile(r"Dagster job (\w+) run ([0-9a-f-]{36})")
DEMO_JOBS = ["daily_reconciliation", "rebuild_accounts", "rebuild_transactions", "daily_reconciliation"]


@dataclass(frozen=True)
class DemoUi:
    url: str
    runs: list[tuple[str, str]]  # (job, run id) in the demo's order


@pytest.fixture(scope="module")
def demo_ui(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUi]:
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
           "BILLING_DATABASE_URL": create_database(servers.database_url),
           "BILLING_TOPIC_PREFIX": f"demo{uuid.uuid4().hex[:8]}.", "BILLING_TOPIC_PARTITIONS": "3",
           "BILLING_DEMO_ON_CONFIGURED_SERVERS": "yes", "COLUMNS": "200"}
    for name in ("DAGSTER_HOME", "BILLING_SLACK_BOT_TOKEN", "BILLING_RECON_DATABASE_URL", "BILLING_ACCOUNT_TOPIC",
                 "BILLING_TRANSACTION_TOPIC"):
        env.pop(name, None)
    demo = subprocess.run([sys.executable, "-m", "billing_pipelines.demo"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    runs = DEMO_RUN.findall(demo.stdout)
    assert [job for job, _ in runs] == DEMO_JOBS, demo.stdout

    home = root / ".dagster_home"  # what `make ui` opens: mkdir -p .dagster_home, cp dagster.yaml into it
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webserver = DagsterProcess(webserver_command(port, write_workspace(root / "workspace.yaml", LOCATION)),
                               env={**env, "DAGSTER_HOME": str(home)}, log=root / "webserver.log", cwd=root,
                               own_session=True)
    try:
        wait_until_loaded(url, [webserver])
        skip_community_dialog(url)
        yield DemoUi(url, runs)
    finally:
        webserver.stop()


def test_the_ui_shows_the_demos_runs_and_the_reports_they_materialized(keep_failure: None, driver: Any,
                                                                      demo_ui: DemoUi, tmp_path: Path) -> None:
    page = Page(driver, demo_ui.url)
    page.open("/runs")
    for job, run_id in demo_ui.runs:
        page.find(f"//a[contains(@href, '/runs/{run_id}')]")
        page.find(f"//a[normalize-space()='{job}']")
    page.screenshot(tmp_path, "demo-runs")

    last_daily = demo_ui.runs[-1][1]
    page.open("/assets/account_reconciliation_report")
    page.text_of("Metadata")
    page.find(f"//a[contains(@href, '/runs/{last_daily}')]")  # the latest materialization is the demo's last run
    assert "Never materialized" not in page.body_text()
    row = page.find("//tr[td[1][normalize-space()='findings']]")
    assert int(row.find_elements("xpath", "./td")[-1].text.strip()) > 0  # orphans and corrupt streams remain
