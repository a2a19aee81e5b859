"""The browser tests' helpers: the session's servers (`Ui`), GraphQL, and `Page`, the few waits and clicks
they make on the Dagster UI."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.dagster_servers import DagsterProcess, wait_for_webserver

from billing_domain.config import Topics
from billing_sandbox.simulate import Manifest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
LOCATION = "billing"
UI_TIMEOUT = 30.0  # seconds for a page element to appear
RUN_TIMEOUT = 120.0  # seconds for a queued run to finish


@dataclass(frozen=True)
class Ui:
    url: str
    database_url: str
    topics: Topics
    manifest: Manifest
    home: Path


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL {exc.code}: {exc.read().decode()[:2000]}") from exc
    assert "errors" not in body, body
    return body["data"]


LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def wait_until_loaded(url: str, processes: Sequence[DagsterProcess], timeout: float = 120) -> None:
    """Until the webserver answers and has loaded the code location (it answers before it has)."""
    deadline = time.monotonic() + timeout
    wait_for_webserver(url, processes, deadline)
    while time.monotonic() < deadline:
        data = graphql(url, LOCATION_STATUS)
        entry = next((e for e in data["workspaceOrError"].get("locationEntries", []) if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"] or {}
            assert error.get("__typename") != "PythonError", f"{LOCATION} failed to load: {error.get('message')}"
            return
        time.sleep(0.5)
    raise AssertionError(f"code location {LOCATION} did not load: {processes[0].log_tail()}")


def skip_community_dialog(url: str) -> None:
    """Tell the instance the "Join the Dagster community" dialog was seen, so no page opens with it: on a busy
    machine it can appear seconds after a page loads, over the button a test is about to click."""
    graphql(url, "mutation { setNuxSeen }")


class Page:
    """A few waits and clicks on the Dagster UI, by visible text (its markup has few stable ids)."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)
        self._dismiss_community_dialog()

    def _dismiss_community_dialog(self) -> None:
        # The fixtures tell the instance it was seen (`skip_community_dialog`); should it show all the same, skip it.
        skip = self.find_all("//div[@role='dialog']//button[normalize-space()='Skip']")
        if skip:
            skip[0].click()
            self.wait_for(lambda: not self.find_all("//div[@role='dialog']//button[normalize-space()='Skip']"),
                          "the community dialog to close")

    def find_all(self, xpath: str, wait: float = 0.0) -> list[Any]:
        from selenium.webdriver.common.by import By

        deadline = time.monotonic() + wait
        while True:
            found = [e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def find(self, xpath: str, timeout: float = UI_TIMEOUT) -> Any:
        found = self.find_all(xpath, wait=timeout)
        assert found, f"nothing matches {xpath} on {self.driver.current_url}"
        return found[0]

    def button(self, label: str, timeout: float = UI_TIMEOUT) -> Any:
        return self.find(f"//button[normalize-space()='{label}']", timeout)

    def text_of(self, label: str, timeout: float = UI_TIMEOUT) -> Any:
        """The innermost displayed element whose own text is `label`."""
        return self.find(f"//*[normalize-space(text())='{label}']", timeout)

    def body_text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = UI_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # a re-rendered (stale) element: ask again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} on {self.driver.current_url}")
            time.sleep(0.3)

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        """On the run's page, the run's final status as the UI shows it (queued runs wait for the daemon)."""
        self.open(f"/runs/{run_id}")
        final = ("Success", "Failure", "Canceled")

        def status() -> str | None:
            header = self.body_text().split("Run of", 1)[0]  # the status badge sits above "Run of <job>"
            return next((s for s in final if f"\n{s}\n" in f"\n{header}\n"), None)

        return str(self.wait_for(status, f"run {run_id} to finish", timeout))

    def screenshot(self, tmp_dir: Path, name: str) -> Path:
        """Save a screenshot into `tmp_dir` and, with BILLING_UPDATE_SCREENSHOTS=1, into docs/screenshots/."""
        path = tmp_dir / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if os.environ.get("BILLING_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / f"{name}.png")
        return path
