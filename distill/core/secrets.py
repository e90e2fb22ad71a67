"""Secrets: which environment variables hold one, and scrubbing their values from text before it is written.

Two questions, two lists:
- `is_foreign_secret(name)`: a credential of another service (the Hugging Face token, cloud keys, CI tokens).
  A recipe may not name one as `sampling.openai.api_key_env` unless it allow-lists it: the engine sends
  its key as a Bearer token to whatever `base_url` the recipe gives.
- `secret_values()`: every value to keep out of exception text, logs and Prefect's records: the values of
  variables whose name says "secret" (TOKEN, KEY, SECRET, PASSWORD parts, and the foreign names above),
  plus what was `register`ed at run time (the API key in use).

`scrub(text)` replaces each value with `<secret NAME>`. `install()` puts the scrub on every log record this
process creates (a record factory, so loggers made later, Prefect's included, are covered too: a filter on
a logger would miss its children's records), and on uncaught exceptions printed by `sys.excepthook` and
`threading.excepthook`. `scrub_exception` rewrites an exception's string arguments (and those of its cause
and context) in place, before Prefect turns it into a state message, a log line and an event.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Mapping

MIN_SECRET_LEN = 8  # shorter values ("1", "true", "false") are settings, and scrubbing them would garble text

# credentials of other services: never sent to an OpenAI-compatible server unless allow-listed
FOREIGN_EXACT = {
    "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN", "CI_JOB_TOKEN", "WANDB_API_KEY", "PREFECT_API_KEY", "NPM_TOKEN",
    "PYPI_TOKEN", "TWINE_PASSWORD", "TWINE_USERNAME", "NGC_API_KEY", "COMET_API_KEY", "NEPTUNE_API_TOKEN",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DOCKER_PASSWORD", "SLACK_TOKEN", "SLACK_BOT_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_API_KEY", "DATABASE_URL", "SSH_AUTH_SOCK",
}
FOREIGN_PREFIXES = ("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "AWS_", "GITHUB_", "WANDB_", "KAGGLE_", "GOOGLE_")
HUB_PREFIXES = ("HF_", "HUGGING_FACE_", "HUGGINGFACE_")  # every Hub variable is scrubbed, whatever its name says
# parts of a variable name (split on "_") that make its value a secret to scrub
SECRET_PARTS = {"TOKEN", "KEY", "APIKEY", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "CREDENTIALS",
                "PAT", "AUTH"}
NOT_SECRET = {"SSH_AUTH_SOCK", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
              "HF_HUB_ENABLE_HF_TRANSFER", "HF_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY", "HF_MODULES_CACHE",
              "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "AWS_REGION",
              "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"}

_registered: dict[str, str] = {}  # value -> label, registered at run time
_lock = threading.Lock()


def is_foreign_secret(name: str) -> bool:
    """True for a known credential of another service (HF_*, AWS_*, GITHUB_TOKEN, WANDB_API_KEY, ...)."""
    n = name.upper()
    return n in FOREIGN_EXACT or n.startswith(FOREIGN_PREFIXES)


def is_secret_name(name: str) -> bool:
    """True when a variable's value must be kept out of logs: a foreign credential or a secret-like name."""
    n = name.upper()
    if n in NOT_SECRET or n.endswith(("_DIR", "_HOME", "_CACHE", "_PATH", "_FILE", "_URL")) and n not in FOREIGN_EXACT:
        return False
    return n in FOREIGN_EXACT or n.startswith(HUB_PREFIXES) or bool(SECRET_PARTS & set(n.split("_")))


def register(value: str | None, label: str = "api key") -> None:
    """Scrub `value` too from now on (a key read from a variable whose name does not look secret)."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _lock:
            _registered[value] = label


def secret_values(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(value, label) for every secret to scrub, longest first (a value containing another goes first)."""
    env = os.environ if env is None else env
    found = {v: k for k, v in env.items() if v and len(v) >= MIN_SECRET_LEN and is_secret_name(k)}
    with _lock:
        found.update({v: label for v, label in _registered.items() if v not in found})
    return sorted(found.items(), key=lambda kv: -len(kv[0]))


def scrub(text: str, secrets: list[tuple[str, str]] | None = None) -> str:
    """`text` with every secret value replaced by `<secret NAME>`."""
    if not isinstance(text, str) or not text:
        return text
    for value, label in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, f"<secret {label}>")
    return text


def _scrub_arg(a, secrets):
    if isinstance(a, str):
        return scrub(a, secrets)
    if isinstance(a, bytes):
        return scrub(a.decode("utf-8", "replace"), secrets).encode()
    return a


def scrub_exception(exc: BaseException | None) -> BaseException | None:
    """Scrub the string arguments of `exc`, its cause and its context, in place (the type is kept)."""
    secrets = secret_values()
    seen: set[int] = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        try:
            e.args = tuple(_scrub_arg(a, secrets) for a in e.args)
            for attr in ("msg", "message", "detail", "text", "strerror", "filename", "filename2"):  # text kept beside args
                if isinstance(getattr(e, attr, None), str):
                    setattr(e, attr, scrub(getattr(e, attr), secrets))
        except Exception:  # noqa: BLE001 - an exception type with read-only attributes keeps them
            pass
        for note_i, note in enumerate(getattr(e, "__notes__", []) or []):
            e.__notes__[note_i] = scrub(note, secrets)
        e = e.__cause__ or e.__context__
    return exc


class ScrubFilter(logging.Filter):
    """Rewrites a record's message, exception and stack text without the secret values (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's error to report, unchanged
            return True
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1])
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True


_FILTER = ScrubFilter()
_installed = False


def install() -> None:
    """Scrub every log record created from now on, and uncaught exceptions before they are printed. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    for name in (None, "distill", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # records made before, queued
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_FILTER)
    hook, thread_hook = sys.excepthook, threading.excepthook

    def excepthook(tp, value, tb):
        hook(tp, scrub_exception(value), tb)

    def thread_excepthook(args):
        scrub_exception(args.exc_value)
        thread_hook(args)

    sys.excepthook, threading.excepthook = excepthook, thread_excepthook
