"""Real servers for the admin API tests: uvicorn in a thread, one dagster-webserver process, HTTP calls.

Everything here talks over real sockets on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_database(server_url: str) -> str:
    """A fresh, empty database on the real server (as conftest's `database_url`, for a whole module)."""
    url = make_url(server_url)
    name = f"test_api_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` with a real uvicorn server on a free port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, name="admin-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the admin API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def dagster_webserver(workdir: Path, env: Mapping[str, str]) -> Iterator[str]:
    """A real dagster-webserver on the project's definitions, runs launched at once (no daemon)."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_coordinator:\n"
                                       "  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n")
    workspace = workdir / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: billing_pipelines.definitions\n"
                         "      location_name: billing\n")
    port = free_port()
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    full_env.pop("BILLING_SLACK_BOT_TOKEN", None)
    log_path = workdir / "webserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                                    str(port), "-w", str(workspace)], env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=workdir)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(log_path.read_text()[-3000:]) from None
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


def call(base_url: str, method: str, path: str, *, token: str | None = None, body: Any = None,
         raw_body: bytes | None = None, timeout: float = 60) -> Answer:
    """One real HTTP request; the answer's JSON (or text) whatever its status."""
    headers = {"Accept": "application/json"}
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base_url}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, answer_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, answer_headers = exc.code, exc.read(), dict(exc.headers)
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Answer(status, parsed, answer_headers)
