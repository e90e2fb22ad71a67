"""The `code` verifier: the solution's last fenced Python block run against stdin/stdout tests in a sandbox
(distill.verify.sandbox). Its reference (the `answer` column of a code row) is a JSON string:

    [{"input": "1 2\\n", "output": "3\\n"}, ...]          # or {"tests": [...]}
    {"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]}  # the APPS / TACO layout

Outputs match when their lines match after trailing whitespace and leading/trailing blank lines are dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from distill.verify.extract import final_text
from distill.verify.registry import Verdict, map_verdicts, register, register_factory
from distill.verify.sandbox import Limits, Sandbox, SandboxError

# ```python\n...``` (or py / python3 / no language); the language word may be followed by other info.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_FENCES = {"", "python", "py", "python3", "py3"}


def extract_code(completion: str) -> str | None:
    """The last fenced Python code block of the final answer (after `</think>` when the think block is
    closed, else the whole completion); None when there is none."""
    blocks = [m.group(2) for m in _FENCE.finditer(final_text(completion)) if m.group(1).lower() in _PYTHON_FENCES]
    blocks = [b for b in blocks if b.strip()]
    return blocks[-1] if blocks else None


def parse_code_tests(reference: str) -> list[tuple[str, str]] | None:
    """(stdin, expected stdout) pairs from a code reference (formats in the module doc); None when the
    reference is not one of them, has no tests, or uses function-call tests (`fn_name`), not supported."""
    try:
        data = json.loads(reference)
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict) and "fn_name" in data:
        return None
    if isinstance(data, dict) and "tests" in data:
        data = data["tests"]
    if isinstance(data, dict) and "inputs" in data and "outputs" in data:
        if not (isinstance(data["inputs"], list) and isinstance(data["outputs"], list)):
            return None
        if len(data["inputs"]) != len(data["outputs"]):
            return None
        data = [{"input": i, "output": o} for i, o in zip(data["inputs"], data["outputs"])]
    if not isinstance(data, list) or not data:
        return None
    tests = []
    for t in data:
        if not isinstance(t, dict) or "output" not in t:
            return None
        stdin, out = t.get("input", ""), t["output"]
        if not isinstance(stdin, str) or not isinstance(out, str):
            return None
        tests.append((stdin, out))
    return tests


def _output_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def outputs_match(got: str, expected: str) -> bool:
    """Line by line, ignoring trailing whitespace on each line and blank lines at either end."""
    return _output_lines(got) == _output_lines(expected)


@dataclass
class CodeVerifier:
    """Runs the solution against every test in `sandbox`, stopping at the first failure.

    correct / incorrect (wrong output) / timeout / runtime_error / output_limit are judged verdicts (a
    solution that hangs or crashes is wrong); no_code, no_reference, unparseable_reference and
    `error: ...` (the sandbox failed on this row) are unverifiable. When no sandbox of the configured strength
    exists here (bubblewrap missing and no weak mode opted into), SandboxError propagates: nothing is judged.
    """

    sandbox: Sandbox | None = None  # built on first use (its probe runs a process)
    max_tests: int | None = None  # run at most this many tests (the first ones)

    def _box(self):
        if self.sandbox is None:
            self.sandbox = Sandbox()
        return self.sandbox

    def __call__(self, completion: str, reference: str | None) -> Verdict:
        try:
            if reference is None or not str(reference).strip():
                return Verdict(None, "no_reference")
            tests = parse_code_tests(str(reference))
            if tests is None:
                return Verdict(None, "unparseable_reference")
            code = extract_code(completion)
            if code is None:
                return Verdict(None, "no_code")
            for stdin, expected in tests[: self.max_tests]:
                r = self._box().run_python(code, stdin)
                if r.timed_out:
                    return Verdict(False, "timeout")
                if r.output_truncated:
                    return Verdict(False, "output_limit")
                if r.returncode != 0:
                    return Verdict(False, "runtime_error")
                if not outputs_match(r.stdout, expected):
                    return Verdict(False, "incorrect")
            return Verdict(True, "correct")
        except SandboxError:
            raise  # no sandbox of the required strength: refuse to judge code at all (the error names the setting)
        except Exception as e:  # noqa: BLE001 - a verdict per row
            return Verdict(None, f"error: {type(e).__name__}: {e}"[:200])

    def verify_batch(self, completions, references, prompts=None, workers: int = 1) -> tuple[list[Verdict], dict]:
        sandbox = self._box().describe()  # resolves the isolation once (SandboxError: refused), before workers copy it
        return map_verdicts(self, completions, references, workers), {"sandbox": sandbox}


@register_factory("code")
def make_code_verifier(
    limits: Limits | None = None, isolation: str = "auto", python: str | None = None, max_tests: int | None = None
) -> CodeVerifier:
    """A code verifier with its own sandbox settings."""
    return CodeVerifier(Sandbox(limits, isolation=isolation, python=python), max_tests=max_tests)


register("code")(CodeVerifier())  # default limits; a sandbox probe on first use
