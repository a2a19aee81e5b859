"""The deployment files are valid: compose structure, Dagster instance and workspace configs, .env.example.

No Docker engine is needed: the compose file is checked structurally (and against the Compose
specification's JSON schema when `check-jsonschema` is installed, which vendors it), and the Dagster
files through Dagster's own config schemas, without connecting to PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG_PY = ROOT / "billing_domain" / "config.py"
ROLES_SQL = ROOT / "deploy" / "postgres-init" / "01-roles.sql"

DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")
MUST_HAVE_HEALTHCHECK = ("kafka", "postgres", *DAGSTER_SERVICES)
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "DAGSTER_PG_PASSWORD", "BILLING_RECON_DB_PASSWORD")
PG_ENV = {"DAGSTER_PG_HOST": "postgres", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "s3cret",
          "DAGSTER_PG_DB": "dagster"}


# --- a small implementation of Compose interpolation (${VAR}, :-, -, :?, ?, nesting) ------------------
class MissingVariable(Exception):
    pass


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end, depth = i + 2, 1
            while depth:
                if end >= len(text):
                    raise ValueError(f"unclosed ${{ in {text!r}")
                if text.startswith("${", end):
                    depth, end = depth + 1, end + 2
                    continue
                depth -= text[end] == "}"
                end += 1
            out.append(_expand(text[i + 2:end - 1], env))
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _expand(expr: str, env: Mapping[str, str]) -> str:
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.DOTALL)
    if not match:
        raise ValueError(f"bad interpolation ${{{expr}}}")
    name, op, rest = match.groups()
    value = env.get(name)
    unset = value is None or (op is not None and op.startswith(":") and value == "")
    if op in ("-", ":-"):
        return _interpolate(rest, env) if unset else str(value)
    if op in ("?", ":?"):
        if unset:
            raise MissingVariable(f"{name}: {_interpolate(rest, env)}")
        return str(value)
    if op in ("+", ":+"):
        return "" if unset else _interpolate(rest, env)
    return value or ""


def _resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, list):
        return [_resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    return node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)


# --- fixtures ---------------------------------------------------------------------------------------
def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def _env_example_names() -> set[str]:
    """Every name .env.example documents, set or commented out (`# NAME=...`)."""
    return set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with .env.example and the secrets filled in."""
    env = _env_example() | {name: "pw" for name in REQUIRED_SECRETS}
    return _resolve(raw, env)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


# --- docker-compose.yml -----------------------------------------------------------------------------
def test_interpolation_helper_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert _interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-${SET}}|$${SET}", env) == "x|d||x|${SET}"
    with pytest.raises(MissingVariable):
        _interpolate("${EMPTY:?needed}", env)


def test_compose_has_no_version_key_and_the_expected_services(raw: dict[str, Any]) -> None:
    assert "version" not in raw, "the Compose specification dropped `version:`"
    assert {"kafka", "postgres", *DAGSTER_SERVICES} <= set(raw["services"])


def test_required_secrets_make_compose_fail_when_missing(raw: dict[str, Any]) -> None:
    for secret in REQUIRED_SECRETS:
        env = _env_example() | {name: "pw" for name in REQUIRED_SECRETS if name != secret}
        with pytest.raises(MissingVariable, match=secret):
            _resolve(raw, env)


def test_every_service_has_a_pinned_image_or_a_build(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "image" not in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no explicit tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" not in service:
            assert re.search(r"\d", tag), f"{name}: image {image!r} should pin a version"


def test_services_have_healthchecks_and_restart_policies(services: dict[str, Any]) -> None:
    for name in MUST_HAVE_HEALTHCHECK:
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart policy"


def test_depends_on_waits_for_healthy_existing_services(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition["condition"] == "service_healthy", f"{name} -> {target}"
            assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no healthcheck"
    for name in DAGSTER_SERVICES:
        assert "postgres" in services[name]["depends_on"], name


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, "declared volumes no service uses"
    assert {"kafka-data", "postgres-data"} <= used


def test_every_variable_compose_reads_is_documented_in_env_example(raw: dict[str, Any]) -> None:
    documented = _env_example_names()
    referenced = {m for text in _strings(raw) for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)}
    # `NAME:` with no value passes NAME through from the shell or .env.
    passed_through = {key for service in raw["services"].values()
                      for key, value in _environment(service).items() if value is None}
    missing = (referenced | passed_through) - documented
    assert not missing, f"not in .env.example: {sorted(missing)}"


def test_env_example_ships_no_secret_values() -> None:
    values = _env_example()
    for name in (*REQUIRED_SECRETS, "BILLING_SLACK_BOT_TOKEN"):
        assert values.get(name) == "", f"{name} must be left empty in .env.example"


def test_kafka_is_a_single_kraft_broker_without_topic_auto_creation(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = _environment(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/kafka/data") for v in kafka["volumes"])


def test_postgres_runs_the_init_scripts_with_the_variables_they_read(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    read_by_sql = set(re.findall(r"^\\getenv \w+ (\w+)", ROLES_SQL.read_text(), re.MULTILINE))
    assert read_by_sql and read_by_sql <= set(_environment(postgres)), "01-roles.sql reads unset variables"


def test_code_server_gets_every_setting_config_py_reads(services: dict[str, Any]) -> None:
    env = _environment(services["dagster-code"])
    assert set(_config_names()) <= set(env), "dagster-code runs the pipeline: it needs every BILLING_* setting"
    assert env["BILLING_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["BILLING_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["BILLING_DATABASE_URL"].endswith("@postgres:5432/billing")
    # config.py parses these as numbers: an empty value would crash at import.
    float(env["BILLING_TOPIC_PARTITIONS"]), float(env["BILLING_STUCK_AFTER_MINUTES"])
    # config.py uses an empty topic name as is, so these are passed only when set.
    assert env["BILLING_ACCOUNT_TOPIC"] is None and env["BILLING_TRANSACTION_TOPIC"] is None


def test_dagster_services_share_instance_settings_and_storage(services: dict[str, Any]) -> None:
    for name in DAGSTER_SERVICES:
        env = _environment(services[name])
        assert set(PG_ENV) <= set(env), name
        assert "dagster-storage:/opt/dagster/home/storage" in services[name]["volumes"], name
    code = services["dagster-code"]["command"]
    assert code[:3] == ["dagster", "code-server", "start"] and "billing_pipelines.definitions" in code
    assert services["dagster-webserver"]["command"][0] == "dagster-webserver"
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]


def test_compose_file_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    import json

    import jsonschema
    from check_jsonschema.builtin_schemas import vendor

    schema_path = Path(vendor.__file__).parent / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


# --- Dockerfile and .dockerignore ----------------------------------------------------------------------
def test_dockerfile_builds_a_pinned_non_root_image_with_the_deploy_instance() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1)), "pin the python base image"
    assert re.search(r"^RUN .*pip install \.", text, re.MULTILINE)
    assert re.search(r"DAGSTER_HOME=/opt/dagster/home", text)
    assert re.search(r"^COPY deploy/dagster.yaml \$\{DAGSTER_HOME\}/dagster.yaml", text, re.MULTILINE)
    assert re.search(r"^COPY deploy/workspace.yaml \./workspace.yaml", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0")), "the image must run as a non-root user"
    for source in re.findall(r"^COPY\s+(?!--)(.+)\s+\S+$", text, re.MULTILINE):
        for path in source.split():
            if path != "README.md":  # written with the README; `pip install .` needs it
                assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".dagster_home", ".billing-stack", ".venv"} <= ignored


# --- workspace files ----------------------------------------------------------------------------------
def _workspace(path: Path) -> Mapping[str, Any]:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    return ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))


def test_workspace_yaml_loads_billing_pipelines_definitions() -> None:
    config = _workspace(ROOT / "workspace.yaml")
    [target] = config["load_from"]
    module = target["python_module"]
    name = module if isinstance(module, str) else module["module_name"]
    assert name == "billing_pipelines.definitions"


def test_deploy_workspace_points_at_the_code_server(services: dict[str, Any]) -> None:
    [target] = _workspace(ROOT / "deploy" / "workspace.yaml")["load_from"]
    grpc = target["grpc_server"]
    assert grpc["host"] == "dagster-code"
    command = services["dagster-code"]["command"]
    assert str(grpc["port"]) == command[command.index("-p") + 1]
    assert grpc["location_name"] == command[command.index("--location-name") + 1]


# --- Dagster instance configs -------------------------------------------------------------------------
def _validate_instance(path: Path, tmp_path: Path) -> Mapping[str, Any]:
    """Dagster's own validation of an instance file, plus each configurable class's own config schema."""
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    shutil.copy(path, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    for key, value in config.items():
        if isinstance(value, Mapping) and {"module", "class"} <= set(value):
            cls = class_from_code_pointer(value["module"], value["class"])
            result = process_config(cls.config_type(), value.get("config") or {})  # type: ignore[attr-defined]
            assert result.success, f"{path.name} {key}: {result.errors}"
    return config


def _queue_settings(config: Mapping[str, Any]) -> None:
    assert config["telemetry"] == {"enabled": False}
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] == 2
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert coordinator["config"]["max_concurrent_runs"] >= 1
    assert {"key": "billing/operation", "value": "rebuild", "limit": 1} in coordinator["config"][
        "tag_concurrency_limits"]


def test_local_dagster_yaml_is_a_valid_sqlite_instance(tmp_path: Path) -> None:
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    config = _validate_instance(ROOT / "dagster.yaml", tmp_path)
    assert "storage" not in config or "sqlite" in config["storage"]
    _queue_settings(config)
    instance = DagsterInstance.from_config(str(tmp_path))  # SQLite files under tmp_path
    try:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "billing/operation", "value": "rebuild", "limit": 1} in limits
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    finally:
        instance.dispose()


def test_deploy_dagster_yaml_is_a_valid_postgres_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._config import process_config
    from dagster._core.storage.config import pg_config

    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    config = _validate_instance(ROOT / "deploy" / "dagster.yaml", tmp_path)
    _queue_settings(config)
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    postgres = config["storage"]["postgres"]
    assert {field: postgres["postgres_db"][field]["env"] for field in ("hostname", "username", "password",
                                                                       "db_name")} == {
        "hostname": "DAGSTER_PG_HOST", "username": "DAGSTER_PG_USER", "password": "DAGSTER_PG_PASSWORD",
        "db_name": "DAGSTER_PG_DB"}
    resolved = process_config(pg_config(), postgres)  # resolves the env vars, connects to nothing
    assert resolved.success, resolved.errors
    assert resolved.value["postgres_db"]["password"] == "s3cret"


# --- .env.example against the code -------------------------------------------------------------------
def _config_names() -> list[str]:
    return sorted(set(re.findall(r"""["'](BILLING_[A-Z0-9_]+)["']""", CONFIG_PY.read_text())))


def test_env_example_documents_every_setting_config_py_reads() -> None:
    names = _config_names()
    assert "BILLING_DATABASE_URL" in names and len(names) >= 10
    missing = set(names) - _env_example_names()
    assert not missing, f"not in .env.example: {sorted(missing)}"
