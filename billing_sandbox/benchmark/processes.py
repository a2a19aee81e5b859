"""Time a command as the user runs it: a whole process, its wall time from outside, its peak RSS from the OS.

Each command is started by `launcher.py` (a small standard-library process), which waits for it with
`os.wait4` and reports the child's `ru_maxrss`: Linux carries a process's peak RSS across exec, so a
command started straight from the benchmark runner would report at least the runner's own peak.
A command that exits with a code it should not is raised as `CommandFailed`, with its stderr.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launcher.py")
STDERR_TAIL = 2_000  # characters of a failed command's stderr kept in the error


@dataclass(frozen=True, slots=True)
class CommandRun:
    """One whole process: what it was, how it ended, how long it took and its peak RSS."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    user_s: float
    system_s: float
    stdout: str
    stderr: str
    error: str | None = None  # why it did not start, if it did not

    def json(self) -> Any:
        """The command's stdout as JSON (the `--json` commands print one document)."""
        return json.loads(self.stdout)

    def figures(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "peak_rss_bytes": self.peak_rss_bytes, "returncode": self.returncode,
                "user_s": self.user_s, "system_s": self.system_s}


class CommandFailed(RuntimeError):
    """A measured command exited with a code it should not have (or did not start, or timed out)."""

    def __init__(self, run: CommandRun, why: str) -> None:
        self.run = run
        tail = run.stderr[-STDERR_TAIL:].strip()
        super().__init__(f"{' '.join(run.argv)}: {why}" + (f"\n{tail}" if tail else ""))


def run_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, accept: Collection[int] = (0,),
                timeout_s: float | None = None, cwd: Path | None = None) -> CommandRun:
    """Run `argv` as a whole process and measure it; raise `CommandFailed` unless it exits with a code in `accept`."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as folder:
        result, out, err = (Path(folder) / name for name in ("result.json", "stdout", "stderr"))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            launcher = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCHER), str(result), "--", *argv],
                                        stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                        env=dict(env) if env is not None else None, cwd=cwd,
                                        start_new_session=True)  # its own group: a timeout ends the command too
            timed_out = not _waited(launcher, timeout_s)
        run = _read_run(tuple(argv), result, out, err)
    if timed_out:
        raise CommandFailed(run, f"did not finish in {timeout_s} s (killed)")
    if run.error is not None:
        raise CommandFailed(run, f"did not start: {run.error}")
    if run.returncode not in accept:
        raise CommandFailed(run, f"exited with {run.returncode} (expected {', '.join(map(str, sorted(accept)))})")
    return run


def _waited(launcher: subprocess.Popen[bytes], timeout_s: float | None) -> bool:
    """True if the launcher ended in time; else its whole process group is killed."""
    try:
        launcher.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        return False


def _read_run(argv: tuple[str, ...], result: Path, out: Path, err: Path) -> CommandRun:
    stdout, stderr = (p.read_text(encoding="utf-8", errors="replace") for p in (out, err))
    if not result.exists():  # the launcher itself failed or was killed
        return CommandRun(argv, -1, 0.0, 0, 0.0, 0.0, stdout, stderr)
    figures = json.loads(result.read_text(encoding="utf-8"))
    return CommandRun(argv, figures["returncode"], figures["wall_s"], figures["peak_rss_bytes"],
                      figures.get("user_s", 0.0), figures.get("system_s", 0.0), stdout, stderr, figures["error"])


def repeated(argv: Sequence[str], times: int, **options: Any) -> list[CommandRun]:
    """`times` runs of the same command, one after the other."""
    return [run_command(argv, **options) for _ in range(times)]


def summary(runs: Sequence[CommandRun]) -> dict[str, Any]:
    """The median wall time of the runs (one run: its own), the highest peak RSS, and every run's time."""
    walls = sorted(run.wall_s for run in runs)
    return {"wall_s": statistics.median(walls), "runs_s": [run.wall_s for run in runs],
            "p95_s": walls[max(0, round(0.95 * len(walls)) - 1)], "runs": len(runs),
            "peak_rss_bytes": max(run.peak_rss_bytes for run in runs),
            "returncodes": sorted({run.returncode for run in runs})}
