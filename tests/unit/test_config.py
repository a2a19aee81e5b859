"""Every setting is checked when read (issue 14.5): finite, in range, whole where it must be, a PostgreSQL URL;
the error names the variable and never echoes a password."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billing_domain.config import DEFAULT_STUCK_AFTER, DEFAULT_STUCK_AFTER_MINUTES, Settings, redact_url
from billing_domain.core.exceptions import ConfigurationError
from billing_domain.core.lag import DEFAULT_LAG_WINDOW, LagJudge

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BILLING_STUCK_AFTER_MINUTES", "nan", "finite"),
    ("BILLING_STUCK_AFTER_MINUTES", "-5", "above zero"),
    ("BILLING_STUCK_AFTER_MINUTES", "0", "above zero"),
    ("BILLING_STUCK_AFTER_MINUTES", "1e9", "maximum"),
    ("BILLING_STUCK_AFTER_MINUTES", "five", "not a number"),
    ("BILLING_LAG_WINDOW_SECONDS", "-1", "zero or more"),
    ("BILLING_LAG_WINDOW_SECONDS", "inf", "finite"),
    ("BILLING_LAG_WINDOW_SECONDS", "864000", "maximum"),
    ("BILLING_TOPIC_PARTITIONS", "2.5", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "4.0", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "inf", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "nan", "whole number"),
    ("BILLING_TOPIC_PARTITIONS", "0", "between 1 and"),
    ("BILLING_TOPIC_PARTITIONS", "-3", "between 1 and"),
    ("BILLING_TOPIC_PARTITIONS", "1000000", "between 1 and"),
    ("BILLING_DATABASE_URL", "not a url", "not a database URL"),
    ("BILLING_DATABASE_URL", f"postgresql://u:{SECRET}@host:port/db", "not a database URL"),
    ("BILLING_DATABASE_URL", f"mysql://u:{SECRET}@host/db", "not PostgreSQL"),
    ("BILLING_DATABASE_URL", f"postgresql://u:{SECRET}@host:70000/db", "port 70000"),
    ("BILLING_RECON_DATABASE_URL", f"sqlite:///{SECRET}.db", "not PostgreSQL"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "host:notaport", "HOST:PORT"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "a:9092,,b:9092", "HOST:PORT"),
    ("BILLING_KAFKA_BOOTSTRAP_SERVERS", "host:0", "HOST:PORT"),
    ("BILLING_TOPIC_PREFIX", "bad prefix ", "not a Kafka topic name"),
    ("BILLING_ACCOUNT_TOPIC", "billing.transaction-events", "both are"),
    ("BILLING_DAGSTER_UI_URL", "localhost:3000", "http"),
    ("BILLING_SLACK_API_URL", "ftp://slack", "http"),
    ("BILLING_AUTO_REPAIR_MAX", "2.5", "whole number"),
    ("BILLING_AUTO_REPAIR_MAX", "-1", "between 0 and"),
    ("BILLING_MAX_LAGGING", "lots", "whole number"),
    ("BILLING_MAX_LAGGING", "1e12", "whole number"),
])
def test_a_bad_setting_is_refused_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert message.startswith(name) and says in message, message
    assert SECRET not in message


def test_good_settings_are_read_as_given() -> None:
    settings = Settings.from_env({
        "BILLING_KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092, kafka-2:9092,[::1]:9093",
        "BILLING_DATABASE_URL": f"postgresql+psycopg://billing:{SECRET}@db:5432/billing",
        "BILLING_TOPIC_PARTITIONS": " 12 ", "BILLING_STUCK_AFTER_MINUTES": "2.5",
        "BILLING_LAG_WINDOW_SECONDS": "0", "BILLING_DAGSTER_UI_URL": "https://dagster.example/ui",
        "BILLING_AUTO_REPAIR_MAX": "0", "BILLING_MAX_LAGGING": "250",
    })
    assert (settings.auto_repair_max, settings.max_lagging) == (0, 250)
    assert settings.topic_partitions == 12 and settings.stuck_after_minutes == 2.5
    assert settings.lag_window_seconds == 0 and settings.ui_base_url == "https://dagster.example/ui"
    assert redact_url(settings.database_url) == "postgresql+psycopg://billing:***@db:5432/billing"


def test_blank_servers_are_unset_so_neither_means_the_embedded_stack() -> None:
    assert Settings.from_env({"BILLING_KAFKA_BOOTSTRAP_SERVERS": " ", "BILLING_DATABASE_URL": ""}).uses_embedded_stack


def test_a_malformed_url_is_never_shown_even_redacted() -> None:
    assert SECRET not in redact_url(f"postgresql://u:{SECRET}@host:port/db")


# --- one default per setting: config.py's, wherever it is needed (issue 15) -----------------------------
def test_from_env_of_nothing_is_the_dataclass_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().stuck_after_minutes == DEFAULT_STUCK_AFTER_MINUTES == DEFAULT_STUCK_AFTER.total_seconds() / 60
    assert Settings().lag_window_seconds == DEFAULT_LAG_WINDOW.total_seconds()


def test_every_entry_point_and_service_takes_its_defaults_from_the_settings() -> None:
    from billing_api.routes import stuck_transactions
    from billing_api.settings import DEFAULT_UI_URL
    from billing_domain.adapters.kafka.event_store import KafkaEventStore
    from billing_domain.services import point_in_time, saga_recovery
    from billing_domain.services.reconcile import ReconcileOptions
    from billing_sandbox.benchmark.environment import PARTITIONS, BenchTarget

    settings = Settings()
    stuck_after = timedelta(minutes=settings.stuck_after_minutes)
    lag_window = timedelta(seconds=settings.lag_window_seconds)
    assert ReconcileOptions() == ReconcileOptions.from_settings(settings)
    assert (ReconcileOptions().stuck_after, ReconcileOptions().lag_window) == (stuck_after, lag_window)
    assert LagJudge(datetime.now(UTC)).window == lag_window
    for function in (saga_recovery.plan_recovery, point_in_time.report_from, point_in_time.reconcile_as_of):
        assert _default(function, "stuck_after") == stuck_after, function.__name__
    assert _default(stuck_transactions, "minutes") is None  # the server's setting decides: see test_admin_api
    assert _default(KafkaEventStore, "partitions") == PARTITIONS == BenchTarget("", "", "").partitions
    assert settings.topic_partitions == PARTITIONS
    assert settings.ui_base_url == DEFAULT_UI_URL


SETTING_NAMES = {"stuck_after", "stuck_after_minutes", "stuck_minutes", "lag_window", "lag_window_seconds",
                 "partitions", "topic_partitions", "auto_repair_max", "max_lagging", "ui_base_url", "dagster_ui_url"}
PACKAGES = ("billing_domain", "billing_cli", "billing_pipelines", "billing_api", "billing_sandbox")


def test_no_setting_has_a_literal_default_outside_config_py() -> None:
    """A parameter, field or option named like a setting takes its default from config.py's constant, never a
    literal (`5.0`, `timedelta(minutes=5)`, `4`): a second literal is a second default that drifts apart."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path == root / "billing_domain" / "config.py":
                continue
            for name, default, line in _named_defaults(ast.parse(path.read_text())):
                if name in SETTING_NAMES and _is_literal(default):
                    found.append(f"{path.relative_to(root)}:{line} {name} = {ast.unparse(default)}")
    assert found == []


@pytest.mark.parametrize("source", [
    "def f(*, stuck_after: timedelta = timedelta(minutes=5)) -> None: ...",
    "def f(partitions: int = 4) -> None: ...",
    "class Options:\n    lag_window_seconds: float = 60.0",
    "class Config:\n    stuck_minutes: float = -1",
])
def test_the_scan_sees_a_literal_default(source: str) -> None:
    assert [name for name, default, _ in _named_defaults(ast.parse(source)) if _is_literal(default)]


def test_the_scan_lets_a_named_default_or_none_pass() -> None:
    source = "def f(stuck_after=DEFAULT_STUCK_AFTER, partitions=None, lag_window=timedelta(seconds=WINDOW)): ..."
    assert not [name for name, default, _ in _named_defaults(ast.parse(source)) if _is_literal(default)]


def _default(function: Any, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


def _named_defaults(tree: ast.AST) -> Iterator[tuple[str, ast.expr, int]]:
    """(name, default, line) of every defaulted parameter and class-level annotated field (dataclass, Config)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True):
                yield arg.arg, default, default.lineno
            for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                if kw_default is not None:
                    yield arg.arg, kw_default, kw_default.lineno
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
                    yield statement.target.id, statement.value, statement.lineno


def _is_literal(node: ast.expr) -> bool:
    """A number or string written out, or timedelta(...) of them; None (no default: the settings decide) is not."""
    if isinstance(node, ast.Constant):
        return node.value is not None and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
        called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        return called == "timedelta" and all(_is_literal(k.value) for k in node.keywords) and all(
            _is_literal(a) for a in node.args)
    return False


def test_the_projector_lag_thresholds_are_settings_validated_like_the_others() -> None:
    from billing_domain.services.projector_lag import LagThresholds

    env = {"BILLING_MAX_PROJECTOR_LAG": "7", "BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES": "2"}
    thresholds = LagThresholds.from_env(env)
    assert (thresholds.max_events, thresholds.max_age) == (7, timedelta(minutes=2))
    assert LagThresholds.from_env({}) == LagThresholds()
    with pytest.raises(ConfigurationError, match="BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES"):
        Settings.from_env({"BILLING_MAX_PROJECTOR_LAG_AGE_MINUTES": "soon"})
    with pytest.raises(ConfigurationError, match="BILLING_MAX_PROJECTOR_LAG"):
        Settings.from_env({"BILLING_MAX_PROJECTOR_LAG": "-1"})
