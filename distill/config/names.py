"""Names that become paths or Hub repo ids: the recipe `name` (runs/<name>, the default repo names) and
the publish section's repo ids. A name that passes here cannot leave the directory it is joined to.

    safe_name(value, field)       one path component: letters, digits, `.`, `_`, `-`; starts with a
                                  letter or digit; not `.`/`..`; at most 96 characters
    hub_repo_id(value, field)     `name` or `org/name`, each part by the Hub's rules (letters, digits,
                                  `.`, `_`, `-`; no `..` or `--`; not starting or ending with `.` or `-`)
    SafeName                      a pydantic `str` type validated by `safe_name` (the recipe's `name`)
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_NAME = 96  # the Hub's limit for a repo name
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HUB_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")


def safe_name(value: str, field: str = "name") -> str:
    """`value` if it is one safe path component, else ValueError naming `field`."""
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value) or len(value) > MAX_NAME or ".." in value:
        raise ValueError(
            f"{field} {value!r} must be one plain directory name: letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, no '..', at most {MAX_NAME} characters"
        )
    return value


def hub_repo_id(value: str, field: str) -> str:
    """`value` if it is a Hub repo id (`name` or `org/name`), else ValueError naming `field`."""
    parts = value.split("/") if isinstance(value, str) else []
    ok = 1 <= len(parts) <= 2 and all(
        _HUB_PART.fullmatch(p) and ".." not in p and "--" not in p and len(p) <= MAX_NAME for p in parts
    )
    if not ok:
        raise ValueError(
            f"{field} {value!r} is not a Hub repo id: 'name' or 'org/name', each of letters, digits, '.', '_' or '-' "
            f"(no '..' or '--', not starting or ending with '.' or '-', at most {MAX_NAME} characters)"
        )
    return value


def _recipe_name(value: str) -> str:
    return safe_name(value, "recipe name")


SafeName = Annotated[str, AfterValidator(_recipe_name)]
