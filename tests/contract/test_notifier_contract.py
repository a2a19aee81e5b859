"""The `Notifier` port's contract, on Slack's Web API (its stand-in server, tests/support/slack_standin.py) and
on the fake.

What the alerts rely on: a configured channel gets the text and blocks and says so with the message's id; an
unconfigured one, a channel that refuses and a channel that cannot be reached each give a `Delivery` saying why,
and never fail the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from support.fakes import InMemoryNotifier
from support.slack_standin import SlackStandin

from billing_domain.adapters.slack import SlackNotifier
from billing_domain.ports import Notifier

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*3 critical findings*"}}]


class NotifierHarness(Protocol):
    def working(self) -> Notifier: ...

    def unconfigured(self) -> Notifier: ...

    def refusing(self) -> Notifier:
        """A channel that answers with an error (here: the API refuses the method)."""
        ...

    def unreachable(self) -> Notifier: ...

    def received(self) -> list[tuple[str, Any]]:
        """The (text, blocks) of every message the channel took."""
        ...


class NotifierContract:
    @pytest.fixture
    def harness(self) -> NotifierHarness:
        raise NotImplementedError

    def test_a_message_reaches_the_channel_with_its_blocks(self, harness: NotifierHarness) -> None:
        notifier = harness.working()
        assert notifier.enabled
        delivery = notifier.post("3 critical findings", BLOCKS)
        assert delivery.sent and delivery.ts and delivery.error is None
        assert notifier.post("all clean").sent
        assert harness.received() == [("3 critical findings", BLOCKS), ("all clean", None)]

    def test_an_unconfigured_channel_says_so_and_sends_nothing(self, harness: NotifierHarness) -> None:
        notifier = harness.unconfigured()
        assert not notifier.enabled
        delivery = notifier.post("3 critical findings", BLOCKS)
        assert not delivery.sent and delivery.error and delivery.ts is None
        assert harness.received() == []

    def test_a_refusal_is_a_delivery_saying_why(self, harness: NotifierHarness) -> None:
        notifier = harness.refusing()
        assert notifier.enabled
        delivery = notifier.post("3 critical findings")
        assert (delivery.sent, delivery.error) == (False, "unknown_method")
        assert harness.received() == []

    def test_an_unreachable_channel_never_fails_the_caller(self, harness: NotifierHarness) -> None:
        delivery = harness.unreachable().post("3 critical findings", BLOCKS)
        assert not delivery.sent and delivery.error
        assert harness.received() == []


class SlackHarness:
    def __init__(self, standin: SlackStandin) -> None:
        self.standin = standin

    def _notifier(self, token: str | None, base_url: str) -> Notifier:
        notifier: Notifier = SlackNotifier(token, "#alerts", base_url, connection_retries=0)
        return notifier

    def working(self) -> Notifier:
        return self._notifier("xoxb-test", self.standin.url)

    def unconfigured(self) -> Notifier:
        return self._notifier(None, self.standin.url)

    def refusing(self) -> Notifier:
        return self._notifier("xoxb-test", self.standin.url + "refused/")

    def unreachable(self) -> Notifier:
        down = SlackStandin().start()
        url = down.url
        down.stop()  # its port now refuses connections
        return self._notifier("xoxb-test", url)

    def received(self) -> list[tuple[str, Any]]:
        return [(r.body["text"], r.body.get("blocks")) for r in self.standin.requests
                if r.status == 200 and r.path == "/api/chat.postMessage"]


class TestSlackNotifier(NotifierContract):
    @pytest.fixture
    def harness(self) -> Iterator[NotifierHarness]:
        standin = SlackStandin().start()
        yield SlackHarness(standin)
        standin.stop()


class InMemoryHarness:
    def __init__(self) -> None:
        self.channel = InMemoryNotifier()

    def working(self) -> Notifier:
        notifier: Notifier = self.channel
        return notifier

    def unconfigured(self) -> Notifier:
        return InMemoryNotifier(enabled=False)

    def refusing(self) -> Notifier:
        refusing = InMemoryNotifier()
        refusing.refusing = "unknown_method"
        return refusing

    def unreachable(self) -> Notifier:
        down = InMemoryNotifier()
        down.down = True
        return down

    def received(self) -> list[tuple[str, Any]]:
        return [(p.text, p.blocks) for p in self.channel.posted]


class TestInMemoryNotifier(NotifierContract):
    @pytest.fixture
    def harness(self) -> NotifierHarness:
        return InMemoryHarness()
