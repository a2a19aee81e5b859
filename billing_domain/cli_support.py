"""What every `billing-recon` command module shares: exit codes, options, services, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from billing_domain.config import Settings
from billing_domain.exceptions import BillingError
from billing_domain.progress import ProgressTracker
from billing_domain.wiring import Services, open_services

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2  # what a script can rely on
err = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (goes to the audit trail).")]
ActorOption = Annotated[str, typer.Option("--actor", envvar="USER", help="Who asks for it.")]


@contextmanager
def cli_services() -> Iterator[Services]:
    """The adapters for a command; a `BillingError` becomes its message on stderr and exit code 2."""
    try:
        services = open_services(Settings.from_env())
    except BillingError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    try:
        yield services
    except BillingError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    finally:
        services.close()


@contextmanager
def progress_bar(label: str, quiet: bool, total: int | None = None,
                 estimate: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr: events read, rate, and with a `total` (an `estimate`: "about") the
    time left; silent for --json or a non-terminal."""
    if quiet or not err.is_terminal:
        yield lambda n: None
        return
    tracker = ProgressTracker(total, estimate=estimate)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(label, total=total, status=tracker.describe())

        def advance(n: int) -> None:
            tracker.advance(n)
            progress.update(task, advance=n, total=tracker.total, status=tracker.describe())

        yield advance
