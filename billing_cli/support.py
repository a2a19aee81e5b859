"""What every `billing-recon` command module shares: exit codes, options, services, progress bars, and the one
error path (`ErrorPathGroup`, `failure_message`): an error is a short paragraph on stderr and exit 2, never a
traceback (a traceback is left only for a bug: an exception nobody expected).

Start-up: `billing-recon --help` imports the command modules and this one, so none of them imports the
adapters, the services or their drivers (SQLAlchemy, confluent-kafka, Dagster) at module level: each command
imports what it runs inside its body (tests/unit/test_cli_startup.py holds it)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from billing_domain.config import DEFAULT_STUCK_AFTER_MINUTES, MAX_STUCK_MINUTES, Settings
from billing_domain.core.exceptions import BillingError, ConfigurationError

if TYPE_CHECKING:
    from typer._click.core import Context  # typer 0.29 vendors click: its Context is what TyperGroup takes

    from billing_domain.bootstrap import Services

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2  # what a script can rely on
err = Console(stderr=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (goes to the audit trail).")]
ActorOption = Annotated[str, typer.Option("--operator", "--actor", help="Who asks for it (self-declared in the "
                                                                       "audit; default: $USER).")]
# The servers of the command that runs, once resolved: the error path names them (the embedded stack's too).
_opened: list[Settings] = []


@contextmanager
def cli_services() -> Iterator[Services]:
    """The adapters for a command; an error they raise becomes one paragraph on stderr and exit code 2."""
    from billing_domain.bootstrap import open_services  # the adapters and their drivers: only when a command runs

    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        services = open_services(settings)
    except Exception as exc:
        fail(exc, settings)
    _opened.append(services.settings)
    try:
        yield services
    except (typer.Exit, typer.Abort):
        raise  # the command's own exit code (0 clean, 1 findings)
    except Exception as exc:
        fail(exc, services.settings)
    finally:
        services.close()


def fail(exc: Exception, settings: Settings | None) -> NoReturn:
    """Exit 2 with the error's message; re-raise what has none (a bug keeps its traceback)."""
    message = failure_message(exc, settings)
    if message is None:
        raise exc
    say_error(message)
    raise typer.Exit(EXIT_ERROR) from None


def say_error(message: str) -> None:
    # No markup (a topic[partition] would vanish as a tag) and no hard wrapping (a URL stays one word).
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


class ErrorPathGroup(TyperGroup):
    """The top-level command group: whatever a command raises goes through `failure_message`."""

    def invoke(self, ctx: Context) -> Any:
        _opened.clear()  # a test runs many commands in one process
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors (already exit 2 with the option named)
        except Exception as exc:
            fail(exc, _opened[-1] if _opened else _settings_or_none())


def _settings_or_none() -> Settings | None:
    try:
        return Settings.from_env()
    except BillingError:
        return None


def failure_message(exc: BaseException, settings: Settings | None) -> str | None:
    """One paragraph for an error the operator can fix: which server or setting, what failed, what to check."""
    import sqlalchemy.exc  # deferred like every heavy import here: `--help` must stay fast

    from billing_domain.bootstrap import first_line

    if isinstance(exc, BillingError):
        return _scrub(str(exc), settings)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return _scrub(_database_failure(exc.orig or exc, settings), settings)
    if isinstance(exc, sqlalchemy.exc.ArgumentError | sqlalchemy.exc.NoSuchModuleError):
        return "BILLING_DATABASE_URL: not a usable PostgreSQL URL; expected postgresql://USER:PASSWORD@HOST:PORT/DB"
    import psycopg

    if isinstance(exc, psycopg.Error):
        return _scrub(_database_failure(exc, settings), settings)
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaException):
        servers = settings.kafka_bootstrap_servers if settings else None
        return (f"Kafka at {servers or 'BILLING_KAFKA_BOOTSTRAP_SERVERS'} failed: {first_line(exc)}. Check that "
                "the broker runs and that the topics exist (BILLING_TOPIC_PREFIX, BILLING_ACCOUNT_TOPIC, "
                "BILLING_TRANSACTION_TOPIC).")
    if isinstance(exc, OSError) and exc.filename is not None:  # --out, --csv, --manifest: a path to fix
        return f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions"
    return None


def _database_failure(orig: BaseException, settings: Settings | None) -> str:
    import psycopg.errors

    from billing_domain.bootstrap import database_names, first_line, lost_database_connection

    where = f"PostgreSQL at {database_names(settings)}"
    reason = first_line(orig)
    if isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return (f"{where} refused: {reason}. The role {_database_user(settings)} lacks that privilege: a rebuild, "
                "saga recovery or shadow swap needs the rebuild role (see `billing-recon roles create`); point "
                "BILLING_DATABASE_URL at it, or use this role for the read commands only.")
    if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        return lost_database_connection(reason, settings)
    return f"{where} refused a statement: {reason}. Check the database's schema and the role's grants."


def _database_user(settings: Settings | None) -> str:
    from sqlalchemy.engine import make_url

    user = make_url(settings.database_url).username if settings and settings.database_url else None
    return repr(user) if user else "of BILLING_DATABASE_URL"


def _scrub(message: str, settings: Settings | None) -> str:
    """Never a password in a message, even if a driver echoed its connection string."""
    from sqlalchemy.engine import make_url

    for url in (settings.database_url, settings.recon_database_url) if settings else ():
        password = make_url(url).password if url else None
        if password:
            message = message.replace(str(password), "***")
    return message


# --- options ----------------------------------------------------------------------------------------
def check_minutes(value: float | None) -> float | None:
    """A threshold in minutes: finite, above zero, at most a year (the settings' bound)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_STUCK_MINUTES):
        raise typer.BadParameter(f"{value:g} is not a number of minutes above 0 and at most {MAX_STUCK_MINUTES:g}")
    return value


def minutes_option(name: str, help_text: str) -> Any:
    """A minutes option (default: the settings' BILLING_STUCK_AFTER_MINUTES), checked before anything runs."""
    default = f"Default: BILLING_STUCK_AFTER_MINUTES ({DEFAULT_STUCK_AFTER_MINUTES:g})."
    return typer.Option(name, help=f"{help_text} {default}", callback=check_minutes)


def id_list(values: Sequence[str] | None, flag: str = "--ids") -> tuple[str, ...] | None:
    """The ids of a repeatable, comma-separated option; None when the flag is absent (the default selection).

    Given but empty after trimming (`--ids ""`, `--ids ","`, `--ids "$UNSET"`) is an error, never "everything"."""
    if values is None:
        return None
    ids = tuple(dict.fromkeys(i.strip() for value in values for i in value.split(",") if i.strip()))
    if not ids:
        raise ConfigurationError(f"{flag}: no id given (empty after trimming); name at least one id, or leave "
                                 f"{flag} out for the default selection")
    return ids


@contextmanager
def progress_bar(label: str, quiet: bool, total: int | None = None,
                 estimate: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr: events read, rate, and with a `total` (an `estimate`: "about") the
    time left; silent for --json or a non-terminal."""
    if quiet or not err.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from billing_domain.services.progress import ProgressTracker

    tracker = ProgressTracker(total, estimate=estimate)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(label, total=total, status=tracker.describe())

        def advance(n: int) -> None:
            tracker.advance(n)
            progress.update(task, advance=n, total=tracker.total, status=tracker.describe())

        yield advance


# --- words, not reprs -------------------------------------------------------------------------------
def counts_text(counts: Mapping[str, int], *, empty: str = "nothing") -> str:
    """`2 insert, 1 refused`: the non-zero counts in their order, for a person (never a dict's repr)."""
    return ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in counts.items() if n) or empty
