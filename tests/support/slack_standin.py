"""A small threaded HTTP server that answers like the Slack Web API's `chat.postMessage`.

It records every request (JSON body and headers); it can be told to answer the next request
with 429 and `Retry-After: 1` (once), or to be down (the socket is closed: connection refused).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int


@dataclass
class SlackStandin:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    rate_limit_next: int = 0  # answer this many requests with 429 first
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The API base URL to hand to the Slack client (BILLING_SLACK_API_URL)."""
        return f"http://{self.host}:{self.port}/api/"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.status == 200]

    def start(self) -> SlackStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                status = 200
                if standin.rate_limit_next > 0:
                    standin.rate_limit_next -= 1
                    status = 429
                standin.requests.append(Received(self.path, body, dict(self.headers), status))
                if status == 429:
                    self._answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
                elif self.path != "/api/chat.postMessage":
                    self._answer(200, {"ok": False, "error": "unknown_method"})
                elif not self.headers.get("Authorization", "").startswith("Bearer "):
                    self._answer(200, {"ok": False, "error": "not_authed"})
                else:
                    self._answer(200, {"ok": True, "channel": body.get("channel"), "ts": f"{time.time():.6f}"})

            def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down and close its socket: later requests get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
