"""Findings of `distill check`: one line each, `ERROR|WARN field: message`, the field as the recipe spells it
(`students[0].training_args.max_length`), and the models each finding was read from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.check.models import ModelInfo, ModelLoadError, load_model_info

MISSING = object()  # a setting this version of the recipe schema does not have


@dataclass(frozen=True)
class Finding:
    level: str  # ERROR | WARN
    field: str
    message: str

    def line(self) -> str:
        return f"{self.level} {self.field}: {self.message}"


@dataclass
class Checker:
    """Collects findings over one recipe; loads each model's tokenizer and config once."""

    recipe: Any
    models_dir: str | Path | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was assumed or substituted
    checked: list[str] = field(default_factory=list)  # what was checked and passed, for the OK summary
    seconds: float = 0.0  # how long the checks took
    _models: dict[str, ModelInfo | None] = field(default_factory=dict)

    def error(self, where: str, message: str) -> None:
        self.findings.append(Finding("ERROR", where, message))

    def warn(self, where: str, message: str) -> None:
        self.findings.append(Finding("WARN", where, message))

    def ok(self, what: str) -> None:
        self.checked.append(what)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def model(self, ref: str, where: str) -> ModelInfo | None:
        """The model's tokenizer and config, or None after an ERROR naming `where` (the recipe field)."""
        if ref not in self._models:
            try:
                info = load_model_info(ref, self.models_dir)
            except ModelLoadError as e:
                hint = "" if self.models_dir else " (offline? pass --models DIR with <org>--<name> folders)"
                self.error(where, f"{e}{hint}")
                info = None
            if info is not None:
                for n in info.notes:
                    self.note(n)
            self._models[ref] = info
        return self._models[ref]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "ERROR"]


def setting(section: Any, name: str) -> Any:
    """A field the recipe schema may not have yet (MISSING where it does not)."""
    return getattr(section, name, MISSING)


def as_dict(value: Any) -> dict:
    """A dict from a settings value: a dict, a pydantic model, or nothing."""
    if value is None or value is MISSING:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return dict(value) if isinstance(value, dict) else {}
