"""The benchmark's process timer: a whole command's wall time, exit code and peak RSS as the OS counts them."""

from __future__ import annotations

import sys

import pytest

from billing_sandbox.benchmark.processes import CommandFailed, run_command, summary

MIB = 2**20
ALLOCATE_200_MB = "b = bytearray(210 * 2**20); b[::4096] = b'x' * len(b[::4096])"  # touched, so resident


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_allocating_200_mb_reports_a_peak_of_at_least_200_mb() -> None:
    run = run_command(python(ALLOCATE_200_MB))
    assert run.returncode == 0
    assert run.peak_rss_bytes >= 200 * MIB
    assert run.wall_s > 0


def test_the_peak_is_the_childs_own_not_the_benchmark_runners() -> None:
    # Linux keeps a process's peak RSS across exec: started straight from a big parent, a tiny
    # child would report the parent's peak. The launcher in between keeps it the child's own.
    ballast = bytearray(400 * MIB)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    run = run_command(python("pass"))
    assert run.peak_rss_bytes < 100 * MIB
    del ballast


def test_the_exit_code_is_kept_when_accepted() -> None:
    run = run_command(python("import sys; sys.exit(1)"), accept=(0, 1))
    assert run.returncode == 1


def test_a_failing_command_is_reported_with_its_stderr() -> None:
    with pytest.raises(CommandFailed) as failed:
        run_command(python("import sys; sys.stderr.write('no such account'); sys.exit(2)"))
    assert failed.value.run.returncode == 2
    assert "exited with 2" in str(failed.value) and "no such account" in str(failed.value)


def test_a_command_that_cannot_start_is_reported() -> None:
    with pytest.raises(CommandFailed, match="did not start"):
        run_command(["/nonexistent/billing-recon", "--help"])


def test_a_command_past_its_timeout_is_killed_and_reported() -> None:
    with pytest.raises(CommandFailed, match="did not finish"):
        run_command(python("import time; time.sleep(30)"), timeout_s=1)


def test_stdout_and_the_environment_reach_the_command() -> None:
    run = run_command(python("import json, os; print(json.dumps({'prefix': os.environ['BILLING_TOPIC_PREFIX']}))"),
                      env={"BILLING_TOPIC_PREFIX": "bench1."})
    assert run.json() == {"prefix": "bench1."}


def test_the_summary_is_the_median_and_the_highest_peak() -> None:
    runs = [run_command(python("pass")) for _ in range(3)]
    figures = summary(runs)
    assert figures["wall_s"] == sorted(r.wall_s for r in runs)[1]
    assert figures["peak_rss_bytes"] == max(r.peak_rss_bytes for r in runs) and figures["runs"] == 3
