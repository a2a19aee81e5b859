"""What an operator does in the Dagster UI, in a real browser: the asset graph, a daily run launched
from the job page and its report on the asset page, the counts plotted across runs, a rebuild launched
from the launchpad, and the schedule and sensors on the Automation page.

The tests share one webserver and one browser (tests/e2e/conftest.py) and run in file order: the
plots need two materializations, the rebuild a stored report. Each test still makes sure of what it
needs, so it also passes alone.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ui_support import RUN_TIMEOUT, Page, Ui, graphql

from billing_domain.adapters.postgres.projection_store import make_engine
from billing_domain.adapters.postgres.recon_store import ReconStore
from billing_domain.core.lifecycle import STATUSES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RECONCILIATION_ASSETS = ("replayed_state", "account_reconciliation_report", "transaction_reconciliation_report",
                         "accounting_equation_report")
AUTOMATIONS = ("daily_reconciliation_schedule", "reconciliation_findings_sensor", "run_failure_slack_sensor",
               "auto_repair_sensor")
RUN_LINK = re.compile(r"/runs/([0-9a-f-]{36})")
MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 10) { runId } } }
}"""


def recon_store(ui: Ui) -> ReconStore:
    return ReconStore(make_engine(ui.database_url))


def launch_daily_from_ui(page: Page) -> str:
    """Click "Materialize all" on the daily_reconciliation job page; the run id from the toast's link."""
    page.open("/locations/billing/jobs/daily_reconciliation")
    button = page.button("Materialize all")
    page.wait_for(button.is_enabled, "Materialize all to be enabled")
    button.click()
    link = page.find("//a[normalize-space()='View'][contains(@href, '/runs/')]")
    match = RUN_LINK.search(link.get_attribute("href") or "")
    assert match, f"no run link in the launch toast: {link.get_attribute('href')}"
    return match.group(1)


def materializations(ui: Ui, asset: str) -> list[str]:
    data = graphql(ui.url, MATERIALIZATIONS, {"key": {"path": [asset]}})
    return [m["runId"] for m in data["assetOrError"].get("assetMaterializations", [])]


def metadata_value(page: Page, key: str) -> str:
    """The value cell of `key` in the asset page's metadata table (the latest materialization's)."""
    row = page.find(f"//tr[td[1][normalize-space()='{key}']]")
    return str(row.find_elements("xpath", "./td")[-1].text.strip())


def test_asset_graph_lists_the_reconciliation_assets(page: Page, tmp_path: Path) -> None:
    page.open("/asset-groups/reconciliation")
    # With more than one group, the lineage page starts with the groups folded: unfold ours in the sidebar,
    # which lists its assets (long names shortened in the middle, whole in the title) and opens it in the graph.
    caret = "//span[normalize-space(text())='reconciliation']/ancestor::div[.//*[@aria-label='arrow_drop_down']][1]" \
            "//*[@aria-label='arrow_drop_down']/ancestor::button[1]"
    if not page.find_all("//*[@title='replayed_state']", wait=3.0):
        page.find(caret).click()
    page.wait_for(lambda: set(RECONCILIATION_ASSETS) <= _graph_nodes(page), "the four reconciliation assets")
    page.find_all("//*[@data-tooltip='replayed_state']", wait=5.0)  # the graph unfolds a moment later
    page.screenshot(tmp_path, "asset-graph")


def _graph_nodes(page: Page) -> set[str]:
    found = set()
    for name in RECONCILIATION_ASSETS:
        named = f"//*[@title='{name}' or @data-tooltip='{name}' or normalize-space(text())='{name}']"
        if page.driver.find_elements("xpath", named):
            found.add(name)
    return found


def test_daily_reconciliation_launched_from_the_ui_stores_its_report(page: Page, ui: Ui, tmp_path: Path) -> None:
    run_id = launch_daily_from_ui(page)
    assert page.wait_for_run(run_id) == "Success"
    page.screenshot(tmp_path, "daily-run-success")

    stored = Counter(f.kind.value for f in recon_store(ui).findings(run_id, "account"))
    injected = Counter(kind for entity, _, kind in ui.manifest.expected_findings() if entity == "account")
    assert stored["balance_mismatch"] >= injected["balance_mismatch"] > 0

    page.open("/assets/account_reconciliation_report")
    page.text_of("Metadata")
    for kind in ("balance_mismatch", "missing_projection", "version_ahead", "stream_corrupt"):
        assert metadata_value(page, f"kind/{kind}") == str(stored[kind]), kind
    assert metadata_value(page, "findings") == str(sum(stored.values()))
    assert int(metadata_value(page, "severity/critical")) > 0
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", page.text_of("Metadata"))
    page.screenshot(tmp_path, "report-metadata")

    worst = page.find("//tr[td[1][normalize-space()='worst_findings']]//a[contains(., 'Show Markdown')]")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", worst)
    worst.click()
    dialog = page.find("//div[@role='dialog'][.//*[normalize-space(text())='worst_findings']]")
    page.wait_for(lambda: "balance_mismatch" in dialog.text and "critical" in dialog.text,
                  "the worst findings table")
    # Since when: each finding's status in the lifecycle, when it was first seen and for how many days.
    header = [th.text.strip() for th in dialog.find_elements("xpath", ".//table//th")]
    assert header[:5] == ["severity", "kind", "status", "first seen (UTC)", "days open"], header
    first_row = [td.text.strip() for td in dialog.find_elements("xpath", ".//table//tbody/tr[1]/td")]
    assert first_row[2] in STATUSES and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", first_row[3]), first_row
    assert float(first_row[4]) >= 0, first_row
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                               dialog.find_element("xpath", ".//table//th"))  # the header, the worst rows
    page.screenshot(tmp_path, "worst-findings")
    page.button("Close").click()


def test_report_counts_plot_across_runs(page: Page, ui: Ui, tmp_path: Path) -> None:
    while len(materializations(ui, "account_reconciliation_report")) < 2:
        run_id = launch_daily_from_ui(page)
        assert page.wait_for_run(run_id) == "Success"

    page.open("/assets/account_reconciliation_report")
    page.button("Plots").click()
    for key in ("kind/balance_mismatch", "kind/stream_corrupt", "severity/critical", "findings"):
        title = page.find(f"//span[normalize-space(text())='{key}']")
        assert title.find_elements("xpath", "./ancestor::div[.//canvas][1]//canvas"), f"no chart for {key}"
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                               page.find("//span[normalize-space(text())='kind/balance_mismatch']"))
    page.screenshot(tmp_path, "report-plots")


def test_rebuild_accounts_launched_from_the_launchpad_succeeds(page: Page, ui: Ui, tmp_path: Path) -> None:
    if recon_store(ui).latest_run_id("all") is None:  # run alone: the default selection needs a report
        assert page.wait_for_run(launch_daily_from_ui(page)) == "Success"

    page.open("/locations/billing/jobs/rebuild_accounts/playground")
    page.find("//*[contains(text(), 'Missing required config entry \"reason\"')]")
    page.screenshot(tmp_path, "rebuild-launchpad-missing-reason")

    reason = "e2e dry run of what the latest report flagged"  # plain YAML: no ": " inside
    # The scaffold has the defaults (ids left out: the default selection; an empty list would be refused).
    dry_run_line = page.find("//pre[contains(@class, 'CodeMirror-line')][normalize-space()='dry_run: true']")
    dry_run_line.click()
    _type(page.driver, ["END", "ENTER"], f"reason: {reason}")
    page.wait_for(lambda: not page.find_all("//*[contains(text(), 'Missing required config entry')]"),
                  "the launchpad to accept the config")
    page.screenshot(tmp_path, "rebuild-launchpad")

    page.button("Launch Run").click()
    match = page.wait_for(lambda: RUN_LINK.search(page.driver.current_url), "the run page")
    run_id = match.group(1)
    assert page.wait_for_run(run_id, RUN_TIMEOUT) == "Success"
    page.find("//*[contains(text(), 'dry run of accounts')]")
    page.screenshot(tmp_path, "rebuild-run-success")

    audit = [r for r in recon_store(ui).audit_records() if r["run_id"] == run_id]
    assert len(audit) == 1, audit
    assert audit[0]["reason"] == reason and audit[0]["dry_run"] is True


def test_automation_lists_the_schedule_and_sensors(page: Page, tmp_path: Path) -> None:
    page.open("/automation")

    def switches() -> dict[str, bool] | None:  # once every row has its switch (each loads on its own)
        found = {}
        for name in AUTOMATIONS:
            row = page.find(f"//*[normalize-space(text())='{name}']"
                            "/ancestor::*[count(.//input[@type='checkbox']) = 2][1]")
            boxes = row.find_elements("xpath", ".//input[@type='checkbox']")
            if not row.text.startswith(name) or len(boxes) != 2:  # another row's box: this one's is loading
                return None
            found[name] = boxes[1].is_selected()
        return found

    # A switch can show unchecked for a moment while its own state query loads: wait for the expected states,
    # and if they never come, fail on the last states seen (so a schedule really off still fails here).
    expected = {"daily_reconciliation_schedule": True, "reconciliation_findings_sensor": True,
                "run_failure_slack_sensor": True, "auto_repair_sensor": False}
    seen: list[dict[str, bool] | None] = [None]

    def as_expected() -> bool:
        seen.append(switches())
        return seen[-1] == expected

    try:
        page.wait_for(as_expected, "the automations' switches")
    except AssertionError:
        assert seen[-1] == expected
    page.screenshot(tmp_path, "automation")

    page.text_of("daily_reconciliation_schedule").click()
    page.text_of("Running")
    page.text_of("Next tick")
    assert "(0 6 * * *)" in page.body_text()


def _type(driver: Any, keys: list[str], text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    actions = ActionChains(driver)
    for key in keys:
        actions.send_keys(getattr(Keys, key))
    actions.send_keys(text).perform()
