"""What the embedded stack's servers share: the error they raise and the loopback ports and processes they use.

A leaf module (nothing of the stack's imports it back), so the broker modules and the stack itself can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from billing_domain.core.exceptions import BillingError

LOOPBACK = "127.0.0.1"


class StackError(BillingError):
    """The embedded stack could not be started or reached."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: every socket stays bound until all are chosen, so none repeats."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_is_free(port: int) -> bool:
    """Could a server listen on this loopback port now? SO_REUSEADDR as the JVM and Tansu set it, so a port whose
    last connections linger in TIME_WAIT after a `down` counts as free (it is, for them)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def choose_ports(previous: Sequence[int] | None, count: int, is_free: Callable[[int], bool] = port_is_free,
                 fresh: Callable[[int], list[int]] = free_ports) -> list[int]:
    """The ports used last time when all of them are still free (clients' exported addresses stay valid across
    `down`/`up`), else `count` new ones."""
    if previous and len(previous) == count and len(set(previous)) == count and all(map(is_free, previous)):
        return list(previous)
    return fresh(count)


def read_ports(path: Path, key: str) -> list[int] | None:
    """The ports recorded under `key` in a small JSON file, or None (no file, no key, or a damaged file)."""
    try:
        ports = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(ports, list) and all(isinstance(p, int) and 0 < p < 65_536 for p in ports):
        return ports
    return None


def record_ports(path: Path, key: str, ports: Sequence[int]) -> None:
    try:
        recorded = json.loads(path.read_text())
        recorded = recorded if isinstance(recorded, dict) else {}
    except (OSError, ValueError):
        recorded = {}
    recorded[key] = list(ports)
    path.write_text(json.dumps(recorded))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_dead(pid: int, timeout: float = 15.0) -> bool:
    """Wait for the process to end; True if it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def stop_process(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended after `grace` seconds (a server that hangs in its shutdown must
    not hang `down`)."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_dead(pid, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)


def kill_process(pid: int) -> None:
    """SIGKILL at once, as a crash would, and wait for it to be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)


def log_tail(path: Path, chars: int = 2000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(max(0, path.stat().st_size - chars))
        return log.read().decode("utf-8", "replace")
