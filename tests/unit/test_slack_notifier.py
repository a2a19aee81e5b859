"""Slack delivery against a stand-in of the Web API (an HTTP server in this process, support/slack_standin.py):
content, rate limits, no token, Slack down. The sensors' alerting on the real servers is
tests/integration/test_slack_alerts.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from slack_sdk.http_retry import builtin_handlers
from support.slack_standin import SlackStandin

from billing_domain.adapters.slack import SlackNotifier
from billing_domain.core.findings import Finding, Kind
from billing_domain.services.alerts import findings_alert, run_failure_alert


@pytest.fixture
def standin() -> Iterator[SlackStandin]:
    server = SlackStandin().start()
    yield server
    server.stop()



def test_a_message_is_posted_with_text_and_blocks(standin: SlackStandin) -> None:
    alert = run_failure_alert("daily_reconciliation", "run-1", "boom", "http://ui")
    delivery = SlackNotifier("xoxb-secret", "#alerts", standin.url).post(alert.text, alert.blocks)
    assert delivery.sent and delivery.ts
    [request] = standin.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["Authorization"] == "Bearer xoxb-secret"
    assert request.body["channel"] == "#alerts"
    assert "daily_reconciliation" in request.body["text"] and "http://ui/runs/run-1" in request.body["text"]
    assert request.body["blocks"][0]["type"] == "section"



def test_a_rate_limit_is_retried_after_retry_after(standin: SlackStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wait Slack's client asks for is recorded instead of timed (a timed assertion proves nothing on a busy
    # machine): the retry handler's own `time` is swapped for one whose sleep only notes its argument.
    waits: list[float] = []
    monkeypatch.setattr(builtin_handlers, "time", SimpleNamespace(sleep=waits.append))
    standin.rate_limit_next = 1
    delivery = SlackNotifier("xoxb-secret", "#alerts", standin.url).post("hello")
    assert delivery.sent
    assert [r.status for r in standin.requests] == [429, 200]
    [wait] = waits
    assert 1.0 <= wait < 2.0  # Retry-After: 1, plus the client's jitter of under a second



def test_without_a_token_the_message_is_logged_not_sent(standin: SlackStandin,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="billing_domain.adapters.slack"):
        delivery = SlackNotifier(None, "#alerts", standin.url).post("the alert text")
    assert not delivery.sent
    assert standin.requests == []
    assert "the alert text" in caplog.text



def test_without_a_token_the_whole_alert_is_logged_its_blocks_as_text(caplog: pytest.LogCaptureFixture) -> None:
    """Without Slack the log is the only copy: every block is in it (headers, sections, the link), not just the
    notification line, in one record; no token is there to leak."""
    findings = [Finding.of("account", "acc-a", Kind.BALANCE_MISMATCH, "balance 7507 != 7500 (EUR)"),
                Finding.of("transaction", "tx-2", Kind.STUCK, "pending for 26 min")]
    alert = findings_alert("run-1", findings, [], "http://ui", failed_checks=["no_critical_account_findings"])
    assert alert is not None
    with caplog.at_level(logging.INFO, logger="billing_domain.adapters.slack"):
        delivery = SlackNotifier(None, "#alerts").post(alert.text, alert.blocks)
    assert (delivery.sent, delivery.error) == (False, "not configured")
    [record] = [r for r in caplog.records if r.name == "billing_domain.adapters.slack"]
    logged = record.getMessage()
    assert record.levelno == logging.WARNING  # seen with logging left as it is
    assert alert.text in logged
    for line in ("Billing reconciliation findings", "*Failed checks:* `no_critical_account_findings`",
                 "*Top findings*", "`critical` *balance_mismatch* account `acc-a` (NEW): balance 7507 != 7500 (EUR)",
                 "*stuck* transaction `tx-2`", "Open the run in Dagster: http://ui/runs/run-1"):
        assert line in logged, (line, logged)



def test_slack_down_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    down = SlackStandin().start()
    down.stop()  # the port is closed now: connection refused
    with caplog.at_level(logging.WARNING, logger="billing_domain.adapters.slack"):
        delivery = SlackNotifier("xoxb-secret", "#alerts", down.url).post("hello")
    assert not delivery.sent
    assert "unreachable" in caplog.text and "xoxb-secret" not in caplog.text
