"""Run one command as a child and report its wall time, exit code and peak RSS, as the OS counts them.

Run by path with the standard library only (`python -I -S launcher.py RESULT -- ARGV...`), so this
process stays small: Linux keeps a process's peak RSS across exec, so a child of the big benchmark
runner would report at least the runner's own peak. The command is a child of this small launcher
instead, and `os.wait4` gives its `ru_maxrss`. The command inherits stdin, stdout, stderr and the
environment; the figures go to RESULT as one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import time

EXIT_NOT_STARTED = 127  # as a shell says "command not found"


def main(argv: list[str]) -> int:
    result_path, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: launcher.py RESULT -- COMMAND [ARG...]")
    began = time.perf_counter()
    try:
        pid = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:  # not found, not executable: a failed command, said as such
        _write(result_path, {"returncode": EXIT_NOT_STARTED, "wall_s": time.perf_counter() - began,
                             "peak_rss_bytes": 0, "error": f"{command[0]}: {exc.strerror}"})
        return 0
    _, status, usage = os.wait4(pid, 0)
    wall_s = time.perf_counter() - began
    _write(result_path, {"returncode": os.waitstatus_to_exitcode(status), "wall_s": wall_s,
                         "peak_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
                         "user_s": usage.ru_utime, "system_s": usage.ru_stime, "error": None})
    return 0


def _write(path: str, figures: dict[str, object]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(figures, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
