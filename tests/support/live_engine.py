"""Start, watch and stop the stand-in billing engine (support/standin_engine.py) from a test.

    with running_engine(EngineConfig(bootstrap_servers, database_url, topics)) as engine:
        ...reconcile while it runs...
        summary = engine.stop()  # drains, checks its own rows; raises if they are not exact

The engine runs in its own process; its JSON status lines are read by a thread, so `wait_until` waits on
a condition (with a timeout), never on a fixed sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from billing_domain.config import Topics

ENGINE_SCRIPT = Path(__file__).with_name("standin_engine.py")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class EngineConfig:
    bootstrap_servers: str
    database_url: str
    topics: Topics
    prefix: str = "live-"
    rate: float = 150.0
    delay_s: float = 0.5
    seed: int = 1
    withhold: bool = False  # one account whose only event is never applied

    def argv(self) -> list[str]:
        args = [sys.executable, str(ENGINE_SCRIPT), "--bootstrap-servers", self.bootstrap_servers,
                "--database-url", self.database_url, "--account-topic", self.topics.accounts,
                "--transaction-topic", self.topics.transactions, "--prefix", self.prefix, "--rate", str(self.rate),
                "--delay", str(self.delay_s), "--seed", str(self.seed)]
        return [*args, "--withhold"] if self.withhold else args


@dataclass(frozen=True)
class Withheld:
    entity_type: str
    entity_id: str
    occurred_at: datetime


@dataclass
class EngineStatus:
    appended: int = 0
    applied: int = 0
    withheld: Withheld | None = None
    final: dict[str, Any] | None = None  # the last line, once the engine has stopped
    lines: list[str] = field(default_factory=list)  # anything that was not a status line


class LiveEngine:
    """One stand-in engine process."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.status = EngineStatus()
        self._changed = threading.Condition()
        self._stderr: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> LiveEngine:
        self._process = subprocess.Popen(self.config.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    @property
    def process(self) -> subprocess.Popen[str]:
        assert self._process is not None, "the engine was not started"
        return self._process

    def _read_stdout(self) -> None:
        for line in self.process.stdout or ():
            with self._changed:
                self._take(line)
                self._changed.notify_all()
        with self._changed:  # the process ended: wake waiters so they can say so
            self._changed.notify_all()

    def _take(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self.status.lines.append(line)
            return
        if "withheld" in message:
            held = message["withheld"]
            self.status.withheld = Withheld(held["entity_type"], held["entity_id"],
                                            datetime.fromisoformat(held["occurred_at"]))
            return
        self.status.appended, self.status.applied = message["appended"], message["applied"]
        if message["status"] == "stopped":
            self.status.final = message

    def _read_stderr(self) -> None:
        for line in self.process.stderr or ():
            self._stderr.append(line)

    def wait_until(self, condition: Callable[[EngineStatus], bool], what: str,
                   timeout: float = START_TIMEOUT_S) -> EngineStatus:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.status):
                if self.process.poll() is not None:
                    raise AssertionError(f"the stand-in engine exited while waiting for {what}: {self.output()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} after {timeout} s: {self.output()}")
                self._changed.wait(0.2)
            return self.status

    def wait_for_more(self, events: int, applied: int = 0) -> EngineStatus:
        """Until `events` more are appended (and `applied` more applied) than now."""
        appended_now, applied_now = self.status.appended, self.status.applied
        return self.wait_until(lambda s: s.appended >= appended_now + events and s.applied >= applied_now + applied,
                               f"{events} more events appended and {applied} more applied")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
        """Stop, let it drain and check its rows; its final summary. Raises unless every row is exact."""
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        code = self.process.wait(timeout)
        self.wait_until(lambda s: s.final is not None, "final summary", timeout=5)
        assert self.status.final is not None
        assert code == 0 and self.status.final["exact"], f"the stand-in engine's rows are not exact: {self.output()}"
        return self.status.final

    def close(self) -> None:
        """However the test ended: the process gone (stopped, or killed if it does not stop in time)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def output(self) -> str:
        return f"final={self.status.final} other stdout={self.status.lines[-5:]} stderr={''.join(self._stderr[-20:])}"


@contextmanager
def running_engine(config: EngineConfig, *, appended: int = 100, applied: int = 20) -> Iterator[LiveEngine]:
    """A started engine that has appended `appended` events and applied `applied`; closed on the way out."""
    engine = LiveEngine(config).start()
    try:
        engine.wait_until(lambda s: s.appended >= appended and s.applied >= applied,
                          f"{appended} events appended and {applied} applied")
        yield engine
    finally:
        engine.close()
