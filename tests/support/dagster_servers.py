"""Real dagster processes for the tests: a free port, a temporary DAGSTER_HOME and workspace, start, wait, stop.

`dagster_webserver` is the whole thing for a webserver that launches runs at once (no daemon); the pieces
(`free_port`, `write_workspace`, `DagsterProcess`, `wait_for_webserver`) serve setups that need more, such as
the browser suite's webserver plus daemon on the repository's own dagster.yaml.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

DEFINITIONS_MODULE = "billing_pipelines.definitions"
# Runs launch at once, with no daemon: the default coordinator, not the queued one of the repository's dagster.yaml.
IMMEDIATE_RUNS_DAGSTER_YAML = ("telemetry:\n  enabled: false\nrun_coordinator:\n"
                               "  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n")
LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_workspace(path: Path, location_name: str = "billing") -> Path:
    """A workspace.yaml loading the project's definitions as one code location; returns `path`."""
    path.write_text(f"load_from:\n  - python_module:\n      module_name: {DEFINITIONS_MODULE}\n"
                    f"      location_name: {location_name}\n")
    return path


def dagster_command(name: str, *args: str) -> list[str]:
    """The command line of a dagster CLI (`dagster-webserver`, `dagster-daemon`) of this virtualenv."""
    return [str(Path(sys.executable).parent / name), *args]


def webserver_command(port: int, workspace: Path) -> list[str]:
    return dagster_command("dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace))


class DagsterProcess:
    """One dagster CLI child process, its output going to `log`.

    With `own_session`, the child leads its own process group and `stop` signals the whole group, so the code
    servers and run workers it started end too; without, `stop` signals the child alone.
    """

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path,
                 own_session: bool = False) -> None:
        self.log = log
        self.own_session = own_session
        with open(log, "wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(list(args), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=own_session)

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self) -> str:
        return self.log.read_text()[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.own_session:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(10)
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_for_webserver(url: str, processes: Sequence[DagsterProcess], deadline: float) -> None:
    """Poll the webserver's /server_info until it answers; fail with the logs' tails if any process exits first
    or `deadline` (a `time.monotonic()` value) passes."""
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            if any(p.exited() for p in processes) or time.monotonic() > deadline:
                if len(processes) == 1:
                    raise AssertionError(processes[0].log_tail()) from None
                raise AssertionError("\n".join(f"--- {p.log}\n{p.log_tail()}" for p in processes)) from None
            time.sleep(0.5)


@contextmanager
def dagster_webserver(workdir: Path, env: Mapping[str, str], *, startup_timeout_s: float = 90) -> Iterator[str]:
    """A real dagster-webserver on the project's definitions, runs launched at once (no daemon); yields its URL.

    Its DAGSTER_HOME, workspace.yaml and webserver.log go in `workdir`; `env` is laid over this process's
    environment, without the Slack bot token.
    """
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(IMMEDIATE_RUNS_DAGSTER_YAML)
    workspace = write_workspace(workdir / "workspace.yaml")
    port = free_port()
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    full_env.pop("BILLING_SLACK_BOT_TOKEN", None)
    webserver = DagsterProcess(webserver_command(port, workspace), env=full_env, log=workdir / "webserver.log",
                               cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_webserver(url, [webserver], time.monotonic() + startup_timeout_s)
        yield url
    finally:
        webserver.stop()
