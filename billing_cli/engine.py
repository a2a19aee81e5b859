"""`billing-recon simulate` and `billing-recon projector`: the engine's side, for demos and tests."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from billing_cli.support import cli_services


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)
    app.command("projector")(projector_command)


def simulate_command(
        seed: Annotated[int, typer.Option(help="Same seed, same events and manifest.")] = 7,
        accounts: Annotated[int, typer.Option(min=1)] = 200,
        days: Annotated[int, typer.Option(min=1)] = 3,
        faults: Annotated[bool, typer.Option("--faults/--no-faults", help="Inject a fault of every kind.")] = True,
        manifest: Annotated[Path, typer.Option(help="Where to write the JSON manifest.")] = Path("manifest.json"),
) -> None:
    """Append a deterministic billing history, fill the projections, inject faults; write the manifest."""
    from billing_sandbox.simulate import SimulationConfig, simulate

    with cli_services() as services:  # its errors: one paragraph, exit 2
        result = simulate(services.event_store, services.projections,
                          SimulationConfig(seed=seed, accounts=accounts, days=days, faults=faults))
    result.write(manifest)
    counts = result.counts
    simulated = ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in counts.items())
    sys.stdout.write(f"simulated {simulated}; projections written by the {result.projections_written}; "
                     f"{len(result.faults)} fault(s) injected; manifest: {manifest}\n")
    for fault in result.faults:
        kinds = ", ".join(sorted({f.kind for f in fault.expected_findings})) or "no finding (redelivery)"
        sys.stdout.write(f"  {fault.fault:20} {fault.entity_type:11} {fault.entity_id:24} -> {kinds}\n")


def projector_command(
        until_caught_up: Annotated[bool, typer.Option(help="Stop once every partition is applied.")] = False,
        group: Annotated[str | None, typer.Option(help="Consumer group (default: per topic set).")] = None,
) -> None:
    """Run the engine's live projector: apply events to the projections in order, idempotently."""
    from billing_sandbox.projector import LiveProjector
    from billing_sandbox.simulate import projector_group

    with cli_services() as services:
        projector = LiveProjector(services.event_store, services.projections.engine,
                                  group_id=group or projector_group(services.event_store.topics))
        try:
            if until_caught_up:
                sys.stdout.write(f"applied {projector.run_until_caught_up()} event(s)\n")
                return
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            projector.run(stop)
        finally:
            projector.close()
