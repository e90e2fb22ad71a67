#!/usr/bin/env bash
# Run a command next to a real Prefect server on 127.0.0.1, then stop the server by its PID.
#   bash scripts/with-prefect-server.sh .venv/bin/python -m pytest -q -m slow
# The command sees R1_DISTILL_TEST_PREFECT_API_URL (tests/test_prefect_server.py deploys and runs the demo
# pipeline through it). The server gets a free port, its own PREFECT_HOME (a fresh SQLite database) and is
# stopped on any exit (success, failure, Ctrl-C): its process group is sent SIGTERM, then SIGKILL.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
PY=${PYTHON_FOR_PORT:-.venv/bin/python}
STARTUP_TIMEOUT=${PREFECT_SERVER_STARTUP_TIMEOUT:-180}
home=$(mktemp -d "${TMPDIR:-/tmp}/r1-distill-prefect.XXXXXX")
pid=

stop_server() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "prefect server (pid $pid) stopped"
  fi
  pid=
}
cleanup() { stop_server; rm -rf "$home"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

url=
for attempt in 1 2 3; do  # a port taken between the probe and the server's bind: try another
  port=$(free_port)
  # setsid: the server and the uvicorn/services it starts form one process group, stopped together
  PREFECT_HOME="$home" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false \
    setsid "$PREFECT" server start --host 127.0.0.1 --port "$port" >"$home/server.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + STARTUP_TIMEOUT))
  while [ $SECONDS -lt $deadline ] && kill -0 "$pid" 2>/dev/null; do
    if "$PY" -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/api/health', timeout=2).status == 200 else 1)" 2>/dev/null; then
      url="http://127.0.0.1:$port/api"
      break
    fi
    sleep 1
  done
  [ -n "$url" ] && break
  echo "prefect server did not become healthy on port $port (attempt $attempt); its log:" >&2
  tail -n 30 "$home/server.log" >&2 || true
  stop_server
done
[ -n "$url" ] || { echo "could not start a Prefect server" >&2; exit 1; }
echo "prefect server (pid $pid) healthy at $url"
export R1_DISTILL_TEST_PREFECT_API_URL="$url"
"$@"
