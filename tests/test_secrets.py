"""Secrets (issue 15 item 10): another service's credential is not sent as an API key by accident, and no
secret value reaches an error message, a log line, a file or Prefect's records (states, logs, events).

The hostile server is tests/echo_server.py: it answers every request with HTTP 401 and a body that repeats
the request's headers, the Authorization header among them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from distill.config.sampling import OpenAISettings
from distill.core import secrets
from distill.engines.base import EngineError, Request, SamplingParams
from echo_server import EchoServer, distill_run_argv

REPO = Path(__file__).resolve().parents[1]
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
               "GITHUB_TOKEN", "WANDB_API_KEY", "MY_DB_PASSWORD")
KEY_VAR = "R1_TEST_SERVER_KEY"  # a name that does not look secret: the engine must register its value


def _canaries() -> dict[str, str]:
    return {name: f"canary{name.replace('_', '')}{uuid.uuid4().hex}" for name in (*SECRET_VARS, KEY_VAR)}


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                                  "WANDB_API_KEY", "GH_TOKEN", "PREFECT_API_KEY"])
def test_another_services_credential_is_refused_as_api_key(name):
    with pytest.raises(RecipeError, match=rf"sampling\.openai:.*{name} holds another service's credential.*allow_secret_env"):
        recipe_from_dict({"name": "t", "sampling": {"engine": "openai", "openai": {"api_key_env": name}}})


def test_an_allow_listed_credential_and_an_own_key_are_accepted():
    r = recipe_from_dict({"name": "t", "sampling": {"engine": "openai", "openai": {"api_key_env": "HF_TOKEN", "allow_secret_env": ["HF_TOKEN"]}}})
    assert r.sampling.openai.api_key_env == "HF_TOKEN"
    for own in ("OPENAI_API_KEY", "VLLM_API_KEY", "MY_SERVER_KEY"):
        assert OpenAISettings(api_key_env=own).api_key_env == own


def test_secret_names_and_scrub(monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "WANDB_API_KEY", "X_PASSWORD", "PREFECT_API_KEY"):
        assert secrets.is_secret_name(name), name
    for name in ("HF_HOME", "TOKENIZERS_PARALLELISM", "PATH", "SSH_AUTH_SOCK", "OMP_NUM_THREADS", "HF_HUB_OFFLINE", "MY_KEY_FILE"):
        assert not secrets.is_secret_name(name), name
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert secrets.scrub("sent Bearer hf_abcdefghijklmnop, false") == "sent Bearer <secret HF_TOKEN>, false"
    err = RuntimeError("outer hf_abcdefghijklmnop")
    err.__cause__ = ValueError("inner", b"hf_abcdefghijklmnop")
    secrets.scrub_exception(err)
    assert "hf_abcdefghijklmnop" not in repr(err) + repr(err.__cause__)
    missing = FileNotFoundError(2, "No such file", "/tmp/hf_abcdefghijklmnop/x")  # its text comes from filename
    assert str(secrets.scrub_exception(missing)) == "[Errno 2] No such file: '/tmp/<secret HF_TOKEN>/x'"


def test_log_records_are_scrubbed_everywhere(monkeypatch, caplog):
    canary = f"canary{uuid.uuid4().hex}"
    monkeypatch.setenv("WANDB_API_KEY", canary)
    secrets.install()
    logger = logging.getLogger("prefect.task_runs.some.child")  # a child logger: a filter on its parent would miss it
    with caplog.at_level(logging.INFO):
        logger.info("key %s in args", canary)
        try:
            raise RuntimeError(f"failed with {canary}")
        except RuntimeError:
            logger.exception("message")
    text = "\n".join(caplog.text.splitlines()) + "".join(r.getMessage() for r in caplog.records)
    assert canary not in text and "<secret WANDB_API_KEY>" in text


def test_openai_engine_error_does_not_carry_the_key(monkeypatch):
    from distill.engines.openai import OpenAIEngine

    canary = f"canary{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_VAR, canary)
    with EchoServer("echo") as server:
        engine = OpenAIEngine(None, OpenAISettings(base_url=server.base_url, endpoint="chat", api_key_env=KEY_VAR, max_retries=0))
        with pytest.raises(EngineError) as info:
            engine.generate([Request("r0", [{"role": "user", "content": "1+1?"}])], SamplingParams(n=1, max_tokens=4))
    assert server.requests[-1][2]["Authorization"] == f"Bearer {canary}"  # it was sent, and echoed back
    text = str(info.value)
    assert "HTTP 401" in text and f"<secret {KEY_VAR}>" in text and canary not in text


def _tables(db: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [repr(row) for row in con.execute(f'SELECT * FROM "{t}"')] for t in names}
    finally:
        con.close()


@pytest.mark.slow
def test_no_secret_reaches_a_file_a_log_or_prefect_records(tiny_llama, tmp_path):
    """`distill run` against the echoing server: its failure is recorded everywhere, the secrets nowhere."""
    from test_pipeline import tiny_recipe

    canaries = _canaries()
    recipe = tiny_recipe(tiny_llama, tmp_path / "run")
    with EchoServer("echo") as server:
        recipe["teacher"] = {"enabled": False, "model": str(tiny_llama)}
        recipe["sampling"].update(engine="openai", openai={"base_url": server.base_url, "endpoint": "chat", "api_key_env": KEY_VAR, "max_retries": 0})
        config = tmp_path / "echo.yaml"
        config.write_text(yaml.safe_dump(recipe))
        env = {**os.environ, **canaries, "PREFECT_HOME": str(tmp_path / "prefect"), "HF_HOME": str(tmp_path / "hf_home"),
               "OMP_NUM_THREADS": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}
        out = subprocess.run(distill_run_argv(config), env=env,
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    sent = [h.get("Authorization") for m, _, h in server.requests if m == "POST"]
    assert sent and sent[0] == f"Bearer {canaries[KEY_VAR]}", f"the run never reached the server:\n{log[-3000:]}"
    assert "HTTP 401" in log, log[-3000:]  # the failure is reported, without the key

    leaks = [f"{name} in the command's output" for name, value in canaries.items() if value in log]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            leaks += [f"{name} in {f.relative_to(tmp_path)}" for name, value in canaries.items() if value.encode() in data]
    db = tmp_path / "prefect" / "prefect.db"
    assert db.is_file(), sorted(p.name for p in (tmp_path / "prefect").iterdir())
    tables = _tables(db)
    for table, rows in tables.items():
        leaks += [f"{name} in Prefect's {table}" for name, value in canaries.items() if any(value in r for r in rows)]
    assert not leaks, leaks
    # the failure did reach Prefect's records (scrubbed): state messages, logs and events
    for table in ("flow_run_state", "task_run_state", "log", "events"):
        assert any("HTTP 401" in r for r in tables.get(table, [])), f"no record of the failure in {table}"
    assert any(f"<secret {KEY_VAR}>" in r for r in tables["log"])
