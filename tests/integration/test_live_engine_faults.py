"""The simulator's faults beside a running engine (issue 13): every fault found, nothing else but `lagging`;
a rebuild of what the report flagged, run during traffic, leaves after catch-up exactly what a rebuild may
not fix.

The simulator writes a faulted history (its manifest names every finding it must produce); the stand-in
engine (support/standin_engine.py) then appends and applies live traffic on other accounts, in its own
process, while the pipeline reconciles and rebuilds through the command line.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.live_engine import EngineConfig, running_engine
from test_cli import REBUILD_MAY_NOT_FIX
from test_live_engine import BILLING_RECON, PREFIX, FindingRow, cli_env, described, keys, live, reconcile

from billing_sandbox.simulate import Manifest

__all__ = ["cli_env", "live"]  # the fixtures, shared with test_live_engine


def _billing_recon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([BILLING_RECON, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _simulate(env: dict[str, str], tmp_path: Path) -> Manifest:
    manifest = tmp_path / "manifest.json"
    done = _billing_recon(env, "simulate", "--accounts", "60", "--days", "1", "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr[-3000:]
    return Manifest.read(manifest)


def _outside_the_manifest(found: list[FindingRow], manifest: Manifest) -> list[FindingRow]:
    expected = manifest.expected_findings()
    return [f for f in found if (f[0], f[1], f[2]) not in expected]


def test_every_fault_is_found_beside_live_traffic_and_a_rebuild_during_it_leaves_only_the_unfixable(
        live: EngineConfig, cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest = _simulate(cli_env, tmp_path)
    expected = manifest.expected_findings()
    with running_engine(live) as engine:
        engine.wait_for_more(50)
        reconciled = _billing_recon(cli_env, "reconcile", "all", "--json")
        report = json.loads(reconciled.stdout)
        code, run_id = reconciled.returncode, report["run_id"]
        during = [(f["entity_type"], f["entity_id"], f["kind"], f["severity"], f["detail"])
                  for f in report["findings"]]
        engine.wait_for_more(50)
        rebuilt = {entity_type: _billing_recon(cli_env, "rebuild", f"{entity_type}s", "--from-report", run_id,
                                               "--reason", "repair during traffic", "--actor", "ci", "--json")
                   for entity_type in ("account", "transaction")}
        summary = engine.stop()  # drained, and its own rows exact: the rebuild raced it and lost nothing

    assert code == 1 and expected <= keys(during), f"missing: {expected - keys(during)}"
    extra = _outside_the_manifest(during, manifest)
    assert [f for f in extra if (f[2], f[3]) != ("lagging", "info")] == [], described(extra)
    assert all(f[1].startswith(PREFIX) for f in extra), "only the live engine's entities are merely lagging"
    for entity_type, done in rebuilt.items():
        assert done.returncode in (0, 1), f"rebuild {entity_type}s: {done.stderr[-2000:]}"
        assert json.loads(done.stdout)["audit_id"], "every rebuild is audited"
    assert summary["applied"] == summary["appended"]

    _, after = reconcile(cli_env, "all", "--full")
    remaining = keys(after)
    assert {k for k in remaining if k[0] != "ledger"} == {
        k for k in expected if k[2] in REBUILD_MAY_NOT_FIX and k[0] != "ledger"}, described(after)
    assert {k for k in remaining if k[0] == "ledger"} <= {k for k in expected if k[0] == "ledger"}
