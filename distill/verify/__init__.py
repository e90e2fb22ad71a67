"""Answer verification: one verifier registry (distill.verify.registry) shared by RL rewards, rejection
sampling and evaluation, the verifiers that register into it, and table/file verification.

Importing the package imports every verifier module, so the registry is full whichever of its modules a
caller imports (Python runs this file first). Submodules never import this package back.

    registry  Verdict, register, get_verifier, names, verifier_for_task, map_verdicts (a leaf)
    extract   the final answer of a completion          math     the `math` verifier (Math-Verify)
    code      the `code` verifier (sandbox, sandbox_run,  judge    `judge` and `math+judge` (an LLM judge)
              sandbox_guard: seccomp, Landlock, cgroup)
    answers   `multiple_choice` and `json`              table    verify_table / verify_file / verify_with_config
    limits    each row in a worker under a time and     screen   absurd answers refused before parsing
              memory limit (math, multiple_choice, json)
"""

from distill.verify import answers, code, judge, math  # noqa: F401 - each registers its verifiers
