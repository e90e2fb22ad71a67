"""The console of `distill` and of `make setup`: each warning once, Prefect's run-state lines and pip's
location warnings off the console, --quiet / --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EMIT = """
import logging, sys, warnings
sys.argv = ["distill"]
from distill.core.progress import configure_console, stage_finished
configure_console({level!r})
for line in (10, 20, 30):  # one library warning from three places (TRL's vLLM-version warning came from five)
    warnings.warn_explicit("TRL supports vLLM 0.22 to 0.31", UserWarning, "trl/generation/x.py", line)
for _ in range(3):
    logging.getLogger("some.library").warning("deprecated: do the other thing")
logging.getLogger("prefect.flow_runs").info("Finished in state Completed()")
logging.getLogger("prefect.flow_runs").warning("a flow run warning")
stage_finished("verify", {{"rows_in": 256, "rows_out": 256, "seconds": 0.1}}, "runs/demo/verified")
try:
    raise RuntimeError("verify workers could not start")
except RuntimeError:  # as Prefect logs one failure: the task run, the stage flow, the pipeline flow
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_runs"):
        logging.getLogger(name).error("Encountered exception during execution", exc_info=True)
"""


def console(level: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", EMIT.format(level=level)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_each_warning_once_and_prefect_run_states_off_the_console():
    lines = console("normal")
    assert sum("TRL supports vLLM" in line for line in lines) == 1
    assert sum("deprecated: do the other thing" in line for line in lines) == 1
    assert not any("Finished in state" in line for line in lines)  # in Prefect's UI only (its API handler)
    assert any("a flow run warning" in line for line in lines)
    assert any(line.endswith("stage verify: done in 0.1 s, 256 rows in, 256 out -> runs/demo/verified") for line in lines)
    assert sum(line.startswith("Traceback") for line in lines) == 1  # one traceback, three lines saying it failed
    assert sum("Encountered exception during execution" in line for line in lines) == 3


def test_quiet_and_verbose():
    quiet = console("quiet")
    assert not any("stage verify" in line for line in quiet) and any("a flow run warning" in line for line in quiet)
    verbose = console("verbose")
    assert any("Finished in state Completed()" in line for line in verbose)


def test_setup_pip_lines_a_user_cannot_act_on_are_dropped_errors_kept(tmp_path):
    """scripts/pip-quiet.sh, which scripts/setup.sh runs pip through, on what pip printed in a fresh `make setup`
    (~300 location warnings, setuptools' editable-install block) and a real error; pip's exit status kept."""
    fake = tmp_path / "pip"
    fake.write_text("#!/bin/bash\n"
                    "echo \"WARNING: Location 'file:///opt/x/simple/torch/' is ignored: it is neither a file nor a directory.\" >&2\n"
                    "echo '  /tmp/pip-build-env-1/setuptools/command/editable_wheel.py:354: BuildBackendWarning: Editable installation.' >&2\n"
                    "printf '  !!\\n  \\n          ****\\n          Please be careful with folders\\n  !!\\n    with strategy, WheelFile(p) as w:\\n' >&2\n"
                    "echo 'WARNING: something else' >&2\n"
                    "echo 'ERROR: No matching distribution found for nope' >&2\n"
                    "echo \"args: $*\"\n"
                    "exit 3\n")
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(REPO / "scripts" / "pip-quiet.sh"), str(fake), "install", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert out.stdout == "args: install nope -q\n"
    assert out.stderr.splitlines() == ["WARNING: something else", "ERROR: No matching distribution found for nope"]
    assert "pip-quiet.sh" in (REPO / "scripts" / "setup.sh").read_text()


ENGINE = """
if __name__ == "__main__":
    import sys
    from distill.core.models import resolve_model
    from distill.core.progress import configure_console
    configure_console("normal")
    from distill.config.sampling import VLLMSettings
    from distill.engines.vllm import VLLMEngine
    VLLMEngine(resolve_model("embedded:smollm2-135m-instruct"), VLLMSettings(max_model_len=512, kv_cache_space_gb=1)).close()
    print("ENGINE UP AND DOWN")
"""


@pytest.mark.slow
def test_a_vllm_engine_start_prints_none_of_vllms_environment_warnings(tmp_path):
    """vLLM's own handler printed ~10 WARNING lines per engine start about the machine (no Triton, eager
    mode, no tcmalloc in LD_PRELOAD, OMP threads), six engine starts in the demo; now at the run's verbosity."""
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "R1_DISTILL_CACHE": str(REPO / ".cache"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and "ENGINE UP AND DOWN" in out.stdout, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert not [line for line in text.splitlines() if " WARNING " in line and "pid=" in line], text[-3000:]
    assert "NUMA binding" not in text and "reduce_op" not in text
    # the engine runs in-process on CPU since cdd9067: vLLM's import-time warnings come from this process now
    assert "Triton not available" not in text
