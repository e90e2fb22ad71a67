"""Terminal progress bars with ETA for the long stages (sampling, eval generation, curation, SFT, GRPO), and
the stage lines: one when a stage starts, one when it ends (rows in and out, seconds, where its output went).

One switch for all of them: `R1_DISTILL_PROGRESS=1` forces bars on, `=0` off; unset, they show when
stderr is a terminal, so CI logs, Prefect workers and pipes get no carriage-return noise. Training bars are
the trainers' own (transformers' tqdm callback, which shows the ETA); `training.base_args` reads the same
switch.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

# elapsed<remaining is the ETA; rate in the bar's unit
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"


def progress_enabled() -> bool:
    flag = os.environ.get("R1_DISTILL_PROGRESS", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (a no-op object when progress is off); use as a context manager."""
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not progress_enabled(), file=sys.stderr,
        bar_format=BAR_FORMAT, mininterval=0.5, dynamic_ncols=True, leave=True, **kwargs,
    )


# --- the stage story: one line when a stage starts and one when it ends -------------------------------------------

stage_log = logging.getLogger("distill.stage")  # flows/ sends the `distill` loggers to Prefect's UI as well


def shown_path(path: str | Path) -> str:
    """A path as the user typed it: relative to the working directory when it lies under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def stage_started(label: str, out_dir: str | Path) -> None:
    stage_log.info("stage %s: started -> %s", label, shown_path(out_dir))


def stage_finished(label: str, manifest: dict, out_dir: str | Path | None) -> None:
    """`done in 12.3 s: 64 rows in, 256 out -> traces` or `reused: ... (runs/demo/traces)`."""
    rows = f"{manifest.get('rows_in') or 0:,} rows in, {manifest.get('rows_out') or 0:,} out"
    where = manifest.get("out") or manifest.get("path") or out_dir
    where_text = f" -> {shown_path(where)}" if where else ""
    if manifest.get("cached"):
        stage_log.info("stage %s: reused, %s%s", label, rows, where_text)
    else:
        stage_log.info("stage %s: done in %.1f s, %s%s", label, float(manifest.get("seconds") or 0.0), rows, where_text)


# --- the console: how much a run prints (distill --quiet / --verbose) -------------------------------------------

VERBOSITY_ENV = "R1_DISTILL_VERBOSITY"  # quiet | normal | verbose; read by child processes too
# INFO lines a person cannot act on: Prefect's per-run state lines (they stay in Prefect's UI), HTTP calls
RUN_STATE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "vllm", "datasets", "filelock")
# warnings about the environment, not the run, that no recipe setting changes: off unless --verbose.
# math_verify: its own signal-based timeouts are off on purpose (verification is bounded by our worker pool).
# torch._library.triton: "Triton not available" (no CPU backend), once per process that starts a vLLM engine.
UNACTIONABLE_LOGGERS = ("math_verify.parser", "math_verify.grader", "vllm.triton_utils.importing", "torch._library.triton")
# Python warnings from vLLM's import that no setting of ours changes, as PYTHONWARNINGS entries: set for child
# processes (spawned: a filter set here does not reach them) and, since the CPU engine runs in-process, here too
SUBPROCESS_WARNING_FILTERS = ("ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning",)


def verbosity() -> str:
    v = os.environ.get(VERBOSITY_ENV, "normal").strip().lower()
    return v if v in ("quiet", "normal", "verbose") else "normal"


def library_log_level() -> str:
    """The level a library that configures its own logging (vLLM's engine processes) runs at: its warnings are
    about the environment (no Triton on CPU, no tcmalloc preloaded, eager mode), not the run, unless --verbose."""
    return "INFO" if verbosity() == "verbose" else "ERROR"


class _Once(logging.Filter):
    """Each warning text once per process (a library that warns per step or per engine start says it once),
    each exception's traceback once (Prefect logs a failure at every flow level it passes); the run-state INFO
    lines of Prefect off the console unless verbose (Prefect's UI keeps them: its API handler sits on those
    loggers, not on this console handler)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose
        self.seen: set[str] = set()
        self.raised: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.verbose and record.levelno < logging.WARNING and record.name in RUN_STATE_LOGGERS:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:  # one failure logged by its task, its stage flow and the pipeline flow: one traceback
            if any(exc is e for e in self.raised):
                record.exc_info = record.exc_text = None  # this handler is the root's, the last one to see the record
            else:
                self.raised.append(exc)
        if record.levelno == logging.WARNING:
            key = f"{record.name}:{record.getMessage()}"
            if key in self.seen:
                return False
            self.seen.add(key)
        return True


def _warn_once(message, category, filename, lineno, file=None, line=None, _seen: set = set()) -> None:  # noqa: B006
    """warnings.showwarning: each text once, on one line, through logging (no source line under it)."""
    text = f"{category.__name__}: {message}"
    if text not in _seen:
        _seen.add(text)
        logging.getLogger("py.warnings").warning("%s (%s:%d)", text, Path(filename).name, lineno)


def configure_console(level: str = "normal") -> None:
    """The console of a `distill` command: stage lines, progress bars with ETA, each warning once.

    quiet: warnings, errors and the result only (no stage lines, no bars unless R1_DISTILL_PROGRESS=1);
    verbose: every library's INFO lines, the trainers' per-step metrics and Prefect's run-state lines."""
    os.environ[VERBOSITY_ENV] = level
    if level == "quiet":
        os.environ.setdefault("R1_DISTILL_PROGRESS", "0")
    if level != "verbose":
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # c10's NUMA-binding note in every engine process
        have = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
        os.environ["PYTHONWARNINGS"] = ",".join(have + [w for w in SUBPROCESS_WARNING_FILTERS if w not in have])
        for entry in SUBPROCESS_WARNING_FILTERS:  # PYTHONWARNINGS' message is a literal prefix; filterwarnings' a regex
            action, message, category = entry.split(":", 2)
            warnings.filterwarnings(action, message=re.escape(message), category=getattr(builtins, category))
    if not progress_enabled():  # no terminal: the libraries' own bars would only be carriage-return noise
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "distill_console", False)]:  # a second call replaces the first
        root.removeHandler(old)
    if not root.handlers:  # as logging.basicConfig: a host that set up logging (pytest, an app) keeps its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(_Once(level == "verbose"))
        handler.distill_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING if level == "quiet" else logging.INFO)
    if level != "verbose":
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        quiet_unactionable_loggers()
        warnings.showwarning = _warn_once


def quiet_unactionable_loggers() -> None:
    """UNACTIONABLE_LOGGERS at ERROR unless --verbose; child interpreters (verify workers) call it too."""
    if verbosity() != "verbose":
        for name in UNACTIONABLE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def trainer_console(trainer) -> None:
    """A TRL/transformers trainer's console: its progress bar with ETA, the loss (or reward) shown in the bar,
    instead of one metrics dict per step (the metrics stay in the trainer's log history and the report).
    --verbose keeps transformers' own printing."""
    if verbosity() == "verbose":
        return
    from transformers.trainer_callback import PrinterCallback, ProgressCallback  # heavy: only where a trainer runs

    class MetricsInBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {k: logs[k] for k in ("loss", "reward") if isinstance(logs.get(k), (int, float))}
                self.training_bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

    trainer.remove_callback(PrinterCallback)
    if any(type(cb) is ProgressCallback for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(MetricsInBar())
