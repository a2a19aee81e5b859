"""`billing-recon` in a real subprocess, stopped at a named step (billing_domain.services.crashpoints) to be SIGKILLed
there or let go on: the process writes the step's name to a marker file when it arrives and then waits for a
line on its stdin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from reliability_helpers import wait_for

from billing_domain.services.crashpoints import PAUSE_AT, PAUSE_MARKER

ROOT = Path(__file__).resolve().parents[2]
# `billing-recon` itself, with smaller rebuild batches so a few dozen rows make several transactions.
CLI = ("import os, billing_domain.services.rebuild as r; "
       "r.BATCH_SIZE = int(os.environ.get('REL_BATCH', r.BATCH_SIZE)); "
       "from billing_cli.app import app; app(prog_name='billing-recon')")


@dataclass
class CliProcess:
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        assert self.process.returncode == -signal.SIGKILL

    def go_on(self) -> int:
        """Let the paused process finish; its exit code."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"\n")
        self.process.stdin.close()
        return self.process.wait(300)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_cli(args: list[str], env: dict[str, str], tmp_path: Path, name: str, pause_at: str | None = None
              ) -> CliProcess:
    """Start `billing-recon ARGS`; with `pause_at`, return once the process waits at that step."""
    marker = tmp_path / f"{name}.reached"
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    full_env = {**os.environ, **env, PAUSE_MARKER: str(marker)}
    full_env.pop(PAUSE_AT, None)
    if pause_at:
        full_env[PAUSE_AT] = pause_at
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", CLI, *args], env=full_env, cwd=ROOT, stdin=subprocess.PIPE,
                                   stdout=stdout, stderr=stderr, start_new_session=True)
    running = CliProcess(process, out, err)
    if pause_at:
        try:
            wait_for(lambda: marker.exists() or process.poll() is not None, 180, f"the process to reach {pause_at}")
            assert marker.exists(), f"exited {process.returncode} before {pause_at}: {running.stderr()[-3000:]}"
            assert marker.read_text() == pause_at
        except BaseException:
            running.close()
            raise
    return running


def finish(args: list[str], env: dict[str, str], tmp_path: Path, name: str) -> tuple[int, str, str]:
    """Run `billing-recon ARGS` to its end: exit code, stdout, stderr."""
    running = start_cli(args, env, tmp_path, name)
    assert running.process.stdin is not None
    running.process.stdin.close()
    code = running.process.wait(300)
    return code, running.stdout(), running.stderr()
