"""Posting a sensor's alert: to Slack through the resource, and to the sensor's own log either way.

The sensor's log (`context.log`, shown with its tick in the Dagster UI) says whether the alert went; when it did
not (no Slack configured, Slack down), it holds the whole alert, its blocks as text, so the content is not lost.
"""

from typing import Any

from billing_domain.adapters.slack import plain_text
from billing_domain.ports import Delivery
from billing_domain.services.alerts import Alert
from billing_pipelines.resources import SlackResource


def post_alert(log: Any, slack: SlackResource, alert: Alert, what: str) -> Delivery:
    """Post `alert` and log `what` became of it (`what`: "run 1234: findings alert")."""
    delivery = slack.notifier().post(alert.text, alert.blocks)
    if delivery.sent:
        log.info(f"{what} sent to Slack")
    else:
        log.warning(f"{what} not sent to Slack ({delivery.error}); the alert in full:\n"
                    f"{plain_text(alert.text, alert.blocks)}")
    return delivery
