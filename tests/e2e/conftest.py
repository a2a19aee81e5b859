"""The UI in a real browser: headless Chromium, driven by Selenium, against a real dagster-webserver.

One session: the embedded stack (or the configured servers), a fresh database and topic prefix
seeded with a small faulted history, `dagster-webserver` and `dagster-daemon` on a temporary
DAGSTER_HOME holding the repository's own dagster.yaml (so runs go through the QueuedRunCoordinator
and its rebuild limit, as in production), and one browser shared by the tests.

Chromium and chromedriver are the Debian packages. When they are missing and we are root, the
session installs them with apt-get; it skips only where they cannot be installed (and fails in CI,
where a skipped browser suite would hide a broken install).

`BILLING_UPDATE_SCREENSHOTS=1` also writes the good-path screenshots used by docs/runbook.md into
docs/screenshots/.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from sqlalchemy.engine import make_url
from support.dagster_servers import DagsterProcess, dagster_command, free_port, webserver_command, write_workspace
from ui_support import LOCATION, REPO, Page, Ui, skip_community_dialog, wait_until_loaded

from billing_domain.adapters.kafka.event_store import KafkaEventStore
from billing_domain.adapters.postgres.projection_store import ProjectionStore, make_engine
from billing_domain.config import Topics
from billing_sandbox.simulate import Manifest, SimulationConfig, simulate

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The network is closed, as on an operator's: no first-run, sync, component or QUIC traffic that would stall the
# browser, and every request but loopback's goes to a proxy nothing listens on (port 9, discard), so it fails at
# once. Loopback bypasses the proxy: the pages under test are served on 127.0.0.1.
CLOSED_NETWORK_PROXY = "http://127.0.0.1:9"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--proxy-server={CLOSED_NETWORK_PROXY}", "--proxy-bypass-list=127.0.0.1;localhost",
                "--window-size=1600,1000")


# --- the browser binaries --------------------------------------------------------------------------
def _install_chromium() -> str | None:
    """apt-get install the Debian chromium and chromium-driver; returns why it could not, or None."""
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install chromium and chromium-driver"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine to install chromium and chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium",
                                            "chromium-driver"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} timed out"
        if done.returncode != 0:
            return f"{' '.join(command)} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}"
    return None


@pytest.fixture(scope="session")
def chromedriver_path() -> str:
    # One install at a time on this machine: under pytest-xdist two workers may each run browser tests, and a
    # second apt-get would fail on dpkg's lock while the first installs.
    with open(Path(tempfile.gettempdir()) / "billing-e2e-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        why = None if CHROMIUM.exists() and CHROMEDRIVER.exists() else _install_chromium()
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        why = why or f"apt-get ran but {CHROMIUM} or {CHROMEDRIVER} is still missing"
        if os.environ.get("CI"):
            pytest.fail(f"cannot run the browser tests: {why}")
        pytest.skip(f"cannot run the browser tests: {why}")
    return str(CHROMEDRIVER)


# --- the servers -----------------------------------------------------------------------------------
def _fresh_database(server_url: str) -> str:
    url = make_url(server_url)
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _seed(bootstrap_servers: str, database_url: str, topics: Topics) -> Manifest:
    """A small faulted history: every finding kind but the ledger's on 50 accounts, in a few seconds."""
    event_store = KafkaEventStore(bootstrap_servers, topics, partitions=3)
    engine = make_engine(database_url)
    try:
        return simulate(event_store, ProjectionStore(engine), SimulationConfig(accounts=50, days=1))
    finally:
        event_store.close()
        engine.dispose()


@pytest.fixture(scope="session")
def ui(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    root = tmp_path_factory.mktemp("e2e")
    database_url = _fresh_database(servers.database_url)
    prefix = f"e2e{uuid.uuid4().hex[:10]}."
    topics = Topics.with_prefix(prefix)
    manifest = _seed(servers.bootstrap_servers, database_url, topics)

    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the queued coordinator: the daemon launches runs
    # Create the SQLite storage once, here: the webserver, the daemon and their code servers creating it
    # at the same moment can leave two alembic heads behind and the code location fails to load.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    workspace = write_workspace(root / "workspace.yaml", LOCATION)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "BILLING_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap_servers,
           "BILLING_DATABASE_URL": database_url, "BILLING_TOPIC_PREFIX": prefix, "BILLING_TOPIC_PARTITIONS": "3",
           "BILLING_DAGSTER_UI_URL": url}
    for name in ("BILLING_SLACK_BOT_TOKEN", "BILLING_RECON_DATABASE_URL", "BILLING_ACCOUNT_TOPIC",
                 "BILLING_TRANSACTION_TOPIC"):
        env.pop(name, None)
    # Each in its own process group, so teardown ends the code servers and run workers it started too.
    processes = [
        DagsterProcess(webserver_command(port, workspace), env=env, log=root / "webserver.log", cwd=root,
                       own_session=True),
        DagsterProcess(dagster_command("dagster-daemon", "run", "-w", str(workspace)), env=env,
                       log=root / "daemon.log", cwd=root, own_session=True),
    ]
    try:
        wait_until_loaded(url, processes)
        skip_community_dialog(url)
        yield Ui(url, database_url, topics, manifest, home)
    finally:
        for process in processes:
            process.stop()


# --- the browser -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def driver(chromedriver_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path_factory.mktemp('chromium'))}")
    browser = webdriver.Chrome(service=Service(chromedriver_path), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(keep_failure: None, driver: Any, ui: Ui) -> Page:
    """The shared browser for one test, on the session's webserver."""
    return Page(driver, ui.url)


@pytest.fixture
def keep_failure(request: pytest.FixtureRequest, driver: Any, tmp_path: Path) -> Iterator[None]:
    """On a test's failure, the shared browser's screenshot and HTML go to the test's tmp dir."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        driver.save_screenshot(str(shot))
        (tmp_path / "failure.html").write_text(driver.page_source)
        sys.stderr.write(f"\nscreenshot of the failure: {shot} (page at {driver.current_url})\n")
