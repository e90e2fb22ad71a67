"""Terminal progress bars with ETA for the long stages (sampling, eval generation, curation, SFT, GRPO).

One switch for all of them: `R1_DISTILL_PROGRESS=1` forces bars on, `=0` off; unset, they show when
stderr is a terminal, so CI logs, Prefect workers and pipes get no carriage-return noise. Training bars are
the trainers' own (transformers' tqdm callback, which shows the ETA); `training.base_args` reads the same
switch.
"""

from __future__ import annotations

import os
import sys
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
