"""Slack alerts over the Web API (`chat.postMessage`), never failing the caller.

Rate limits are retried as Slack asks (Retry-After) and a dropped connection once more; any
other Slack or network error is logged and swallowed: an alert that cannot be delivered must
never turn a reconciliation into a failure. The token is never logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from billing_domain.ports import Delivery  # the port's value; importable from here too

log = logging.getLogger(__name__)
DEFAULT_API_URL = "https://slack.com/api/"
TIMEOUT_S = 10


class SlackNotifier:
    """Post messages to one channel. Without a token (or channel) messages are only logged."""

    def __init__(self, token: str | None, channel: str | None, base_url: str | None = None, *,
                 rate_limit_retries: int = 2, connection_retries: int = 1) -> None:
        self.channel = channel
        self._client: WebClient | None = None
        if token:
            self._client = WebClient(
                token=token, base_url=base_url or DEFAULT_API_URL, timeout=TIMEOUT_S,
                retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
                                ConnectionErrorRetryHandler(max_retry_count=connection_retries)])

    @property
    def enabled(self) -> bool:
        return self._client is not None and bool(self.channel)

    def post(self, text: str, blocks: Sequence[dict[str, Any]] | None = None) -> Delivery:
        """Send `text` (the fallback and notification line) with optional Block Kit `blocks`."""
        # An alert not sent is logged whole (its blocks as text, one record), so its content is never lost.
        if self._client is None or not self.channel:
            log.warning("Slack not configured (no token or channel); alert not sent:\n%s", plain_text(text, blocks))
            return Delivery(sent=False, error="not configured")
        try:
            response = self._client.chat_postMessage(channel=self.channel, text=text,
                                                     blocks=list(blocks) if blocks else None)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown")) if exc.response is not None else "unknown"
            log.warning("Slack refused the alert (%s); alert not sent:\n%s", error, plain_text(text, blocks))
            return Delivery(sent=False, error=error)
        except (SlackClientError, OSError) as exc:
            log.warning("Slack unreachable (%s); alert not sent:\n%s", type(exc).__name__, plain_text(text, blocks))
            return Delivery(sent=False, error=type(exc).__name__)
        except Exception as exc:  # an alert must never fail the caller
            log.warning("Slack alert failed (%s); alert not sent:\n%s", type(exc).__name__, plain_text(text, blocks))
            return Delivery(sent=False, error=type(exc).__name__)
        return Delivery(sent=True, ts=str(response.get("ts")))


_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")  # Slack's <url|label>


def plain_text(text: str, blocks: Sequence[dict[str, Any]] | None = None) -> str:
    """A message as a log shows it: the notification line, then every block's text (headers, sections and
    their fields, context), links as `label: url`; a block that only repeats the line is left out."""
    lines = [text]
    for block in blocks or ():
        parts = [block.get("text"), *(block.get("fields") or ()), *(block.get("elements") or ())]
        for part in parts:
            content = part.get("text") if isinstance(part, dict) else None
            if isinstance(content, str) and content.strip() and content.strip() != text.strip():
                lines.append(_LINK.sub(lambda m: f"{m.group(2)}: {m.group(1)}", content))
        if block.get("type") == "divider":
            lines.append("---")
    return "\n".join(lines)
