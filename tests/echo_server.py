"""A hostile OpenAI-compatible server for tests (stdlib http.server, in a thread of the test process).

`GET /v1/models` answers one model. Every POST is answered by `mode`:
- "echo": HTTP 401 whose body repeats every request header (the Authorization header with it), as a
  careless or malicious server would, so that whatever copies a reply into an error shows the key;
- "hang": no answer until the server is closed (a run is then reliably inside its sample stage).
`requests` records (method, path, headers) of everything received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoServer:
    def __init__(self, mode: str = "echo"):
        self.mode = mode
        self.requests: list[tuple[str, str, dict]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path, dict(self.headers)))
                if self.path.rstrip("/").endswith("/models"):
                    self._reply(200, json.dumps({"object": "list", "data": [{"id": "echo-model", "object": "model"}]}))
                else:
                    self._reply(404, "not found")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
                outer.requests.append(("POST", self.path, dict(self.headers)))
                if outer.mode == "hang":
                    outer.release.wait(600)
                    return
                echoed = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
                self._reply(401, json.dumps({"error": {"message": f"invalid credentials; you sent:\n{echoed}\nbody: {body[:200]}"}}))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "EchoServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def distill_run_argv(config) -> list[str]:
    """`distill run --config CONFIG`, skipping the preflight check where the CLI has one (the check is not
    what these tests are about; 5639c99, which the tests are also run against, had no --no-check)."""
    import importlib.util
    import sys
    from pathlib import Path

    cli = Path(importlib.util.find_spec("distill.cli").origin).read_text()
    return [sys.executable, "-m", "distill.cli", "run", *(["--no-check"] if "--no-check" in cli else []), "--config", str(config)]
